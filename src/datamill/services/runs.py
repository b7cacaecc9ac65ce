"""What a run did and why it ended: its log, failure, warnings and lineage, as readers see them.

Every function here reads the run through JobService.readable_execution:
the same check (and the same 404) as job details.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from sqlalchemy.engine import Connection

from datamill.domain import runlog as rl
from datamill.domain.records import Execution, FileEntry, User
from datamill.domain.status import JobStatus
from datamill.errors import NotFound
from datamill.services.jobs import JobService
from datamill.services.permissions import Access, Capability, has_access, has_capability
from datamill.store import data as data_store
from datamill.store.runlog import LogEvent, read_log


@dataclasses.dataclass(frozen=True, slots=True)
class RunReport:
    """A run, its job file and its log (the queued event first)."""

    execution: Execution
    entry: FileEntry
    events: list[LogEvent]


def queued_event(execution: Execution) -> LogEvent:
    """The first event of every run, read from the run itself: triggering writes no log row."""
    detail = {"by": execution.triggered_by, "trigger": execution.trigger_type.value}
    return LogEvent(0, execution.created_at, rl.QUEUED, detail)


def run_report(
    jobs: JobService,
    execution_id: int,
    user: User,
    *,
    after_seq: int | None = None,
    after_time: dt.datetime | None = None,
) -> RunReport:
    """A run with its log (from `after_seq` / `after_time` on), if the user may read job details."""
    with jobs.store.db.read() as conn:
        execution, entry = jobs.readable_execution(conn, execution_id, user)
        stored = read_log(conn, execution_id, after_seq=after_seq, after_time=after_time)
        if not has_capability(conn, user, Capability.DATA_READ):
            stored = [_without_samples(event) for event in stored]
    first = queued_event(execution)
    shows_queued = after_seq is None and (after_time is None or first.at > after_time)
    return RunReport(execution, entry, [first, *stored] if shows_queued else stored)


def _without_samples(event: LogEvent) -> LogEvent:
    # Dropped records' samples are data: a reader whose roles do not allow
    # reading data sees how many were dropped and why, never the values.
    if event.event != rl.DROPPED or "sample" not in event.detail:
        return event
    detail = {k: v for k, v in event.detail.items() if k != "sample"}
    return dataclasses.replace(event, detail={**detail, "sample-withheld": True})


def failure(report: RunReport) -> dict[str, Any] | None:
    """Why a run ended in ERROR or CANCELED: the message and where, None for other runs."""
    execution = report.execution
    if execution.status not in (JobStatus.ERROR, JobStatus.CANCELED):
        return None
    ended = [e for e in report.events if e.event in (rl.FAILED, rl.STOPPED)]
    body: dict[str, Any] = dict(ended[-1].detail) if ended else {}
    if not body.get("message"):
        # Runs ended before the log existed, or by a path that writes none.
        body["message"] = execution.error_message or ""
    if execution.status is JobStatus.CANCELED and not body.get("by"):
        asked = [e for e in report.events if e.event == rl.STOP_REQUESTED]
        if asked and asked[-1].detail.get("by"):
            body["by"] = asked[-1].detail["by"]
    return body


def warnings(report: RunReport) -> list[dict[str, Any]]:
    """The records a run dropped, with why and a sample: one item per reason."""
    found = []
    for event in report.events:
        if event.event == rl.DROPPED:
            detail = event.detail
            message = f"dropped {detail.get('count', 0)} record(s): {detail.get('reason', '')}"
            found.append({"message": message, **detail})
    return found


def lineage(jobs: JobService, execution_id: int, user: User) -> dict[str, Any]:
    """Which data a run read, what it wrote, and the configuration version it ran.

    An input's job is named only to a reader who may read that job; others
    see its data id (as job details would).
    """
    with jobs.store.db.read() as conn:
        execution, _entry = jobs.readable_execution(conn, execution_id, user)
        events = read_log(conn, execution_id)
        inputs = data_store.inputs_of(conn, execution_id)
        outputs = data_store.outputs_of(conn, execution_id)
        sheets_read = {
            int(e.detail["data-id"]): e.detail.get("sheet")
            for e in events
            if e.event == rl.READ and isinstance(e.detail.get("data-id"), int)
        }
        read = [
            {
                "data-id": result.id,
                "sheet": sheets_read.get(result.id),
                "job": _job_shown(conn, jobs, result.job_configuration_id, user),
                "job-execution-id": result.execution_id,
            }
            for result in inputs
        ]
    claims = [e for e in events if e.event == rl.CLAIMED and "configuration" in e.detail]
    configuration = (
        claims[-1].detail["configuration"] if claims else {"id": execution.job_configuration_id}
    )
    return {
        "job-execution-id": execution.id,
        "job-configuration": configuration,
        "read": read,
        "sources": [e.detail for e in events if e.event == rl.READ and "data-id" not in e.detail],
        "wrote": {
            "data": [
                {
                    "data-id": result.id,
                    "sheets": result.sheets,
                    "records": result.record_count,
                    "deleted": result.deleted,
                }
                for result in outputs
            ],
            "exports": [e.detail for e in events if e.event == rl.EXPORTED],
        },
    }


def _job_shown(
    conn: Connection, jobs: JobService, config_id: int, user: User
) -> dict[str, Any] | None:
    """The job of an input as {file-id, path, job-configuration-id}, if the user may read it."""
    try:
        config = jobs.store.jobs.get(conn, config_id)
        entry = jobs.store.files.get(conn, config.file_id)
    except NotFound:
        return None
    if not has_access(conn, user, entry, Access.READ):
        return None
    return {"file-id": entry.id, "path": entry.path, "job-configuration-id": config.id}
