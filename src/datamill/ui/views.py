"""What the pages show, read through the services with the signed-in user.

Every function starts with the service check the API route for the same
thing uses (capability, then the file's flags, unreadable = missing); the
store reads that follow only fetch more about what that check let through.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from sqlalchemy.engine import Connection

from datamill.domain.records import Execution, FileEntry, JobConfiguration, User
from datamill.domain.status import JobStatus
from datamill.errors import NotFound
from datamill.services.artifacts import ArtifactService
from datamill.services.filesystem import FileSystemService
from datamill.services.jobs import JobService
from datamill.services.permissions import (
    Access,
    Capability,
    has_access,
    has_capability,
    require_capability,
)
from datamill.store import executions as ex

HISTORY_PAGE = 20
CHART_RUNS = 20
GRAPH_LEVELS = 3


@dataclasses.dataclass(frozen=True, slots=True)
class FolderRow:
    """One entry of a folder listing, with its job's newest run if it is a job."""

    entry: FileEntry
    newest: Execution | None


@dataclasses.dataclass(frozen=True, slots=True)
class FolderPage:
    """A readable folder and its readable entries."""

    folder: FileEntry
    rows: list[FolderRow]
    crumbs: list[tuple[str, str]]


def folder_page(jobs: JobService, reference: str, user: User) -> FolderPage:
    """The folder listing: the same check and filter as GET /api/filesystem/folders."""
    view = FileSystemService(jobs).folder(reference, user)
    rows = []
    with jobs.store.db.read() as conn:
        for child in sorted(view.children, key=lambda c: (not c.is_folder, c.name.lower())):
            newest = None
            if child.kind is not None:
                config = jobs.store.jobs.for_file(conn, child.id)
                newest = ex.newest_execution(conn, config.id) if config is not None else None
            rows.append(FolderRow(child, newest))
    return FolderPage(view.folder, rows, crumbs(view.folder.path))


def crumbs(path: str) -> list[tuple[str, str]]:
    """(name, folder path) of each folder from the root down to `path`."""
    found = [("/", "/")]
    parts = [p for p in path.split("/") if p]
    for index, part in enumerate(parts):
        found.append((part, "/" + "/".join(parts[: index + 1])))
    return found


@dataclasses.dataclass(frozen=True, slots=True)
class Live:
    """A job's newest run with what the status route says about it."""

    execution: Execution | None
    remaining_seconds: float | None

    @property
    def active(self) -> bool:
        """Whether the run is queued, waiting or running (the page keeps polling)."""
        return self.execution is not None and not self.execution.status.is_terminal


@dataclasses.dataclass(frozen=True, slots=True)
class JobPage:
    """Everything the job page shows."""

    entry: FileEntry
    config: JobConfiguration
    may_run: bool
    live: Live
    history: list[Execution]
    start: int
    more: bool
    chart: list[Execution]
    graph: dict[str, Any]


def may_run(conn: Connection, user: User, entry: FileEntry) -> bool:
    """Whether the user may trigger and stop this job (what the trigger route checks)."""
    return has_capability(conn, user, Capability.JOB_RUN) and has_access(
        conn, user, entry, Access.EXECUTE
    )


def _live(jobs: JobService, conn: Connection, config_id: int) -> Live:
    newest = ex.newest_execution(conn, config_id)
    remaining = None
    if newest is not None and newest.status is JobStatus.RUNNING:
        remaining = jobs.remaining(conn, newest)
    return Live(newest, remaining)


def job_status(
    jobs: JobService, reference: str, user: User
) -> tuple[FileEntry, JobConfiguration, Live, bool]:
    """The job's newest run and whether the user may run it: JobService.status's check."""
    with jobs.store.db.read() as conn:
        require_capability(conn, user, Capability.JOB_READ)
        entry, config = jobs.resolve_job(conn, reference, user, Access.READ)
        return entry, config, _live(jobs, conn, config.id), may_run(conn, user, entry)


def job_page(
    jobs: JobService, artifacts: ArtifactService, reference: str, user: User, start: int
) -> JobPage:
    """The job page: status, one page of history (the paged query), chart and graph."""
    with jobs.store.db.read() as conn:
        require_capability(conn, user, Capability.JOB_READ)
        entry, config = jobs.resolve_job(conn, reference, user, Access.READ)
        page = _runs(conn, config.id, start, HISTORY_PAGE + 1)
        chart = page if start == 0 else _runs(conn, config.id, 0, CHART_RUNS)
        live = _live(jobs, conn, config.id)
        runnable = may_run(conn, user, entry)
    graph = artifacts.dependencies(config.kind, config.id, user, "both", GRAPH_LEVELS)
    return JobPage(
        entry=entry,
        config=config,
        may_run=runnable,
        live=live,
        history=page[:HISTORY_PAGE],
        start=start,
        more=len(page) > HISTORY_PAGE,
        chart=list(reversed(chart[:CHART_RUNS])),
        graph=graph,
    )


def _runs(conn: Connection, config_id: int, start: int, length: int) -> list[Execution]:
    """One page of runs, newest first: the history route's query, then each run by id."""
    return [
        ex.get_execution(conn, i) for i, _ in ex.execution_history(conn, config_id, start, length)
    ]


@dataclasses.dataclass(frozen=True, slots=True)
class ActiveRun:
    """A queued, waiting or running execution the user may read."""

    execution: Execution
    entry: FileEntry
    position: int | None
    remaining_seconds: float | None


def running_now(jobs: JobService, user: User) -> list[ActiveRun]:
    """The active executions the user may read, oldest first, as list-running shows them.

    A queued run's position counts the queued runs before it (all of them,
    readable or not: it is where it stands in the queue).
    """
    with jobs.store.db.read() as conn:
        require_capability(conn, user, Capability.JOB_READ)
        active = ex.active_executions(conn)
        entries = jobs.store.files.get_many(conn, (e.file_id for e in active))
        positions: dict[int, int] = {}
        for execution in active:
            if execution.status is JobStatus.QUEUED:
                positions[execution.id] = len(positions) + 1
        visible = [
            (execution, entry)
            for execution in active
            if (entry := entries.get(execution.file_id)) is not None
            and has_access(conn, user, entry, Access.READ)
        ]
        remaining = jobs.remaining_many(
            conn, [e for e, _ in visible if e.status is JobStatus.RUNNING]
        )
    return [ActiveRun(e, entry, positions.get(e.id), remaining.get(e.id)) for e, entry in visible]


@dataclasses.dataclass(frozen=True, slots=True)
class PlanChoice:
    """A job the user may put in a plan."""

    entry: FileEntry
    config: JobConfiguration


def plan_choices(jobs: JobService, user: User) -> list[PlanChoice]:
    """The jobs the user may read and run, by path: what a sequential trigger accepts."""
    with jobs.store.db.read() as conn:
        if not has_capability(conn, user, Capability.JOB_RUN):
            return []
        configs = jobs.store.jobs.list_all(conn)
        entries = jobs.store.files.get_many(conn, (c.file_id for c in configs))
        choices = [
            PlanChoice(entry, config)
            for config in configs
            if (entry := entries.get(config.file_id)) is not None
            and has_access(conn, user, entry, Access.READ)
            and has_access(conn, user, entry, Access.EXECUTE)
        ]
    return sorted(choices, key=lambda c: c.entry.path)


def plan_runs(
    jobs: JobService, execution_ids: list[int], user: User
) -> list[tuple[Execution, FileEntry]]:
    """The runs of a plan the user may read (job details' check), in plan order."""
    shown = []
    with jobs.store.db.read() as conn:
        for execution_id in execution_ids:
            try:
                shown.append(jobs.readable_execution(conn, execution_id, user))
            except NotFound:
                continue
    return shown
