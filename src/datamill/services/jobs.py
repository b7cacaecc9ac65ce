"""Defining, triggering, inspecting and stopping jobs."""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from collections.abc import Callable
from typing import Any, TypeVar

import pydantic
from sqlalchemy.engine import Connection

from datamill.domain.definitions import (
    JobDefinition,
    RunLimits,
    WorkbookDefinition,
    definition_model,
)
from datamill.domain.estimate import Busy, Pending, QueueShape, expected_starts, remaining_seconds
from datamill.domain.records import Execution, FileEntry, JobConfiguration, User
from datamill.domain.schedule import next_fire_time
from datamill.domain.status import JobKind, JobStatus, TriggerType
from datamill.engine.registry import not_enabled
from datamill.engine.sql import check_workbook
from datamill.errors import Conflict, InvalidDefinition, InvalidInput, NotFound, StopTimeout
from datamill.services.graph import rebuild_dependencies
from datamill.services.idempotency import Once
from datamill.services.permissions import Access, Capability, require_access, require_capability
from datamill.services.wakeup import Wakeup
from datamill.store import executions as ex
from datamill.store.backlog import live_workers, upstreams_of
from datamill.store.db import utcnow
from datamill.store.executions import ConfigurationKey
from datamill.store.jobs import Check
from datamill.store.store import Store
from datamill.store.triggers import set_next_fire

PENDING_STATUSES = frozenset({JobStatus.QUEUED, JobStatus.WAITING_FOR_OTHER_JOB})

T = TypeVar("T")


def _found(reference: str, find: Callable[[str], T | None]) -> T:
    """What `find` finds for a file reference, else NotFound."""
    found = find(reference)
    if found is None and "+" in reference:
        # Datameer tells users to write spaces as '+'; a real '+' in a name wins.
        found = find(reference.replace("+", " "))
    if found is None:
        raise NotFound()
    return found


def parse_definition(kind: JobKind, raw: dict[str, Any]) -> JobDefinition:
    """Validate a JSON definition; errors name the member and the problem."""
    try:
        definition = definition_model(kind).model_validate(raw)
    except pydantic.ValidationError as error:
        problems = []
        for item in error.errors():
            where = "".join(
                f"[{part}]" if isinstance(part, int) else f".{part}" for part in item["loc"]
            ).lstrip(".")
            message = item["msg"].removeprefix("Value error, ")
            problems.append(f"{where}: {message}" if where else message)
        raise InvalidDefinition("; ".join(problems)) from None
    if isinstance(definition, WorkbookDefinition):
        # Refuse SQL that could never run now, not at its first run.
        check_workbook(definition)
    return definition


@dataclasses.dataclass(frozen=True, slots=True)
class ByConfiguration:
    """Names a job by its configuration id (the older /rest routes do)."""

    id: int


JobReference = str | ByConfiguration
"""A file id, uuid or path as text, or a configuration id."""


@dataclasses.dataclass(frozen=True, slots=True)
class QueueSpot:
    """Where a QUEUED or WAITING run stands: 1 = next to start; when it probably starts."""

    position: int
    expected_start: dt.datetime | None  # None: no worker is alive to start it


@dataclasses.dataclass(frozen=True, slots=True)
class StatusView:
    """What the status endpoint shows about a job file."""

    file: FileEntry
    execution: Execution | None
    remaining_seconds: float | None
    queue: QueueSpot | None = None


class JobService:
    """The job use cases, shared by the API, the CLI and the demo set-up."""

    def __init__(
        self,
        store: Store,
        wakeup: Wakeup,
        *,
        stop_wait_seconds: float = 30.0,
        timezone: str | None = None,
        limit_maxima: RunLimits | None = None,
        queue_shape: QueueShape | None = None,
        enabled_engines: frozenset[str] = frozenset({"duckdb"}),
    ) -> None:
        self.store = store
        self.wakeup = wakeup
        self.stop_wait_seconds = stop_wait_seconds
        self.timezone = timezone
        # The most a job may set as its own run limits (the operator's settings).
        self.limit_maxima = limit_maxima
        # The worker slots, for telling queued runs when they probably start.
        self.queue_shape = queue_shape or QueueShape()
        # The engines a job may name (DATAMILL_ENGINES).
        self.enabled_engines = enabled_engines

    # ------------------------------------------------------------ defining

    def define_job(
        self,
        path: str,
        kind: JobKind,
        raw: dict[str, Any],
        owner: str,
        *,
        check: Check | None = None,
        before: Callable[[Connection], None] | None = None,
    ) -> tuple[FileEntry, JobConfiguration]:
        """Create a job file with a validated definition; `before` runs before the insert."""
        definition = parse_definition(kind, raw)

        def after_insert(conn: Connection, config: JobConfiguration) -> None:
            self.refresh_job(conn, config)
            if check is not None:
                check(conn, config)

        return self.store.jobs.create(
            path, kind, definition, owner, check=after_insert, before=before
        )

    def refresh_job(self, conn: Connection, config: JobConfiguration) -> None:
        """Refuse limits above the operator's maxima and engines not enabled; bring graph
        and schedule up to date.

        Every create and update passes here inside its transaction, so a refusal
        undoes the save.
        """
        self._check_limits(config)
        named = config.definition.get("engine")
        refusal = not_enabled(named, self.enabled_engines) if isinstance(named, str) else None
        if refusal is not None:
            raise InvalidDefinition(f"engine: {refusal}")
        rebuild_dependencies(conn, self.store)
        cron = config.definition.get("triggering", {}).get("cron")
        when = next_fire_time(cron, utcnow(), self.timezone) if cron else None
        set_next_fire(conn, config.id, when)

    def _check_limits(self, config: JobConfiguration) -> None:
        raw = config.definition.get("limits")
        if self.limit_maxima is None or not isinstance(raw, dict):
            return
        problems = RunLimits.model_validate(raw).exceeding(self.limit_maxima)
        if problems:
            raise InvalidDefinition("; ".join(problems))

    # ------------------------------------------------------------ resolving

    def resolve_file(
        self, conn: Connection, reference: str, user: User, access: Access
    ) -> FileEntry:
        """The file a reference names, if the user may see it and holds `access`."""
        entry = _found(reference, lambda ref: self.store.files.find(conn, ref))
        require_access(conn, user, entry, access)
        return entry

    def resolve_job(
        self, conn: Connection, reference: JobReference, user: User, access: Access
    ) -> tuple[FileEntry, JobConfiguration]:
        """The job file and configuration a file reference or configuration id names."""
        if isinstance(reference, ByConfiguration):
            return self._resolve_configuration(conn, reference.id, user, access)
        # The checks live in resolve_job_key; this adds the definition's read.
        entry, key = self.resolve_job_key(conn, reference, user, access)
        return entry, self.store.jobs.get(conn, key.id)

    def resolve_job_key(
        self, conn: Connection, reference: JobReference, user: User, access: Access
    ) -> tuple[FileEntry, ConfigurationKey]:
        """As resolve_job, but only the configuration's ids: what the trigger needs.

        For a file reference, one read and no definition parsed.
        """
        if isinstance(reference, ByConfiguration):
            return self._resolve_configuration(conn, reference.id, user, access)
        entry, key = _found(reference, lambda ref: self.store.jobs.find_with_key(conn, ref))
        # Whether it is a job first, then the access: every job route answers a
        # readable location or connection alike ("is not a job"), N7.
        require_access(conn, user, entry, Access.READ)
        if key is None:
            raise InvalidInput(f"{entry.path} is not a job (import job, workbook or export job)")
        require_access(conn, user, entry, access)
        return entry, key

    def _resolve_configuration(
        self, conn: Connection, config_id: int, user: User, access: Access
    ) -> tuple[FileEntry, JobConfiguration]:
        missing = NotFound(f"Entity of type 'JobConfiguration' with id '{config_id}' not found.")
        try:
            config = self.store.jobs.get(conn, config_id)
            entry = self.store.files.get(conn, config.file_id)
            require_access(conn, user, entry, Access.READ)
        except NotFound:
            # Unknown and unreadable configurations answer alike.
            raise missing from None
        require_access(conn, user, entry, access)
        return entry, config

    # ------------------------------------------------------------ triggering

    def trigger(
        self,
        reference: JobReference,
        user: User,
        *,
        trigger_type: TriggerType = TriggerType.RESTAPI,
        variables: dict[str, Any] | None = None,
        once: Once[Execution] | None = None,
    ) -> Execution:
        """Queue a new execution; it is visible as QUEUED when this returns.

        With `once` (an Idempotency-Key), a key used before raises its first
        answer (Replayed) or KeyReused, and queues nothing.
        """
        with self.store.db.write() as conn:
            # The role before the key: a replay too needs job.run (docs/decisions.md).
            require_capability(conn, user, Capability.JOB_RUN)
            if once is not None:
                once.begin(conn)
            _entry, config = self.resolve_job_key(conn, reference, user, Access.EXECUTE)
            execution = ex.queue_execution(
                conn, config, trigger_type, user.name, variables=variables
            )
            if once is not None:
                once.end(conn, execution)
            ex.notify_other_nodes(conn, "work")
        self.wakeup.notify_work()
        return execution

    # ------------------------------------------------------------ inspecting

    def status(self, reference: JobReference, user: User) -> StatusView:
        """The newest execution of a job file, with an estimate if it runs."""
        with self.store.db.read() as conn:
            require_capability(conn, user, Capability.JOB_READ)
            entry, config = self.resolve_job(conn, reference, user, Access.READ)
            execution = ex.newest_execution(conn, config.id)
            remaining = None
            spot = None
            if execution is not None and execution.status is JobStatus.RUNNING:
                remaining = self.remaining(conn, execution)
            elif execution is not None and execution.status in PENDING_STATUSES:
                spot = self.queue_spots(conn, ex.active_executions(conn)).get(execution.id)
        return StatusView(entry, execution, remaining, spot)

    def queue_spots(self, conn: Connection, active: list[Execution]) -> dict[int, QueueSpot]:
        """Position and expected start of each QUEUED or WAITING run among `active` (all of them).

        The position counts every run ahead, readable by the caller or not: it
        is a number, and names none of them (docs/decisions.md).
        """
        pending = [e for e in active if e.status in PENDING_STATUSES]
        if not pending:
            return {}
        running = [e for e in active if e.status is JobStatus.RUNNING]
        remaining = self.remaining_many(conn, running)
        means = ex.mean_run_seconds_many(conn, [e.job_configuration_id for e in pending])
        waits = upstreams_of(
            conn, [e.id for e in pending if e.status is JobStatus.WAITING_FOR_OTHER_JOB]
        )
        shape = self.queue_shape
        busy = [
            Busy(e.id, e.job_configuration_id, e.triggered_by, remaining.get(e.id)) for e in running
        ]
        spots = expected_starts(
            busy,
            [
                Pending(
                    e.id,
                    e.job_configuration_id,
                    e.triggered_by,
                    means.get(e.job_configuration_id),
                    waits.get(e.id, ()),
                )
                for e in pending
            ],
            shape.slots(live_workers(conn)),
            shape.fair_shares,
        )
        now = utcnow()
        return {
            run_id: QueueSpot(
                spot.position,
                None if spot.starts_in is None else now + dt.timedelta(seconds=spot.starts_in),
            )
            for run_id, spot in spots.items()
        }

    def remaining(self, conn: Connection, execution: Execution) -> float | None:
        """Seconds a running execution probably still needs, None if unknown."""
        return self.remaining_many(conn, [execution]).get(execution.id)

    def remaining_many(
        self, conn: Connection, executions: list[Execution]
    ) -> dict[int, float | None]:
        """`remaining` of several running executions (by id), reading the store once."""
        started = [e for e in executions if e.started_at is not None]
        means = ex.mean_run_seconds_many(conn, [e.job_configuration_id for e in started])
        now = utcnow()
        return {
            e.id: remaining_seconds(
                (now - e.started_at).total_seconds(),
                e.progress,
                means.get(e.job_configuration_id),
            )
            for e in started
            if e.started_at is not None
        }

    def history(
        self, config_id: int, user: User, start: int, length: int
    ) -> list[tuple[int, JobStatus]]:
        """A page of a configuration's executions, newest first."""
        with self.store.db.read() as conn:
            require_capability(conn, user, Capability.JOB_READ)
            self.resolve_job(conn, ByConfiguration(config_id), user, Access.READ)
            return ex.execution_history(conn, config_id, start, length)

    def volume_report(self, config_id: int, user: User) -> list[tuple[int, JobStatus, int]]:
        """(execution id, status, bytes read) of a configuration's ended runs, newest first."""
        with self.store.db.read() as conn:
            require_capability(conn, user, Capability.JOB_READ)
            self.resolve_job(conn, ByConfiguration(config_id), user, Access.READ)
            return ex.volume_report(conn, config_id)

    def readable_execution(
        self, conn: Connection, execution_id: int, user: User
    ) -> tuple[Execution, FileEntry]:
        """One execution in the caller's transaction, if the user may read its job details.

        The one check behind job details, the run log, the trace and lineage.
        """
        require_capability(conn, user, Capability.JOB_READ)
        return self._visible_execution(conn, execution_id, user)

    def _visible_execution(
        self, conn: Connection, execution_id: int, user: User
    ) -> tuple[Execution, FileEntry]:
        try:
            execution = ex.get_execution(conn, execution_id)
            entry = self.store.files.get(conn, execution.file_id)
            require_access(conn, user, entry, Access.READ)
        except NotFound:
            # Unknown and unreadable executions answer alike.
            raise NotFound(
                f"Entity of type 'JobExecution' with id '{execution_id}' not found."
            ) from None
        return execution, entry

    # ------------------------------------------------------------ stopping

    def stop(self, reference: JobReference, user: User) -> Execution:
        """Stop the job's active execution; return once it is no longer running."""
        with self.store.db.write() as conn:
            require_capability(conn, user, Capability.JOB_RUN)
            _entry, config = self.resolve_job(conn, reference, user, Access.EXECUTE)
            active = ex.active_execution_for_config(conn, config.id)
            if active is None:
                raise Conflict("There is no queued or running execution of this job to stop.")
            status = ex.request_stop(conn, active.id, by=user.name)
            if status is JobStatus.RUNNING:
                ex.notify_other_nodes(conn, "stop")
        if status is JobStatus.RUNNING:
            self.wakeup.notify_stop()
        return self.wait_until_not_running(active.id)

    def stop_execution(self, execution_id: int, user: User) -> Execution:
        """Stop one execution by id (the older job-kill route)."""
        with self.store.db.write() as conn:
            require_capability(conn, user, Capability.JOB_RUN)
            execution, entry = self._visible_execution(conn, execution_id, user)
            require_access(conn, user, entry, Access.EXECUTE)
            if execution.status.is_terminal:
                raise Conflict(f"Execution {execution_id} has already ended ({execution.status}).")
            status = ex.request_stop(conn, execution_id, by=user.name)
            if status is JobStatus.RUNNING:
                ex.notify_other_nodes(conn, "stop")
        if status is JobStatus.RUNNING:
            self.wakeup.notify_stop()
        return self.wait_until_not_running(execution_id)

    def wait_until_not_running(self, execution_id: int) -> Execution:
        """Poll until the execution has left RUNNING, within the configured bound."""
        deadline = time.monotonic() + self.stop_wait_seconds
        delay = 0.005
        while True:
            with self.store.db.read() as conn:
                execution = ex.get_execution(conn, execution_id)
            if execution.status is not JobStatus.RUNNING:
                return execution
            if time.monotonic() >= deadline:
                raise StopTimeout(
                    f"Execution {execution_id} was asked to stop but is still running after "
                    f"{self.stop_wait_seconds:g}s; it will end CANCELED when its worker stops it."
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.1)
