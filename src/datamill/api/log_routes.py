"""A run's log, trace and lineage: Datamill's routes and Datameer's file-job and download-trace.

All of them answer exactly what job details answers for the same run and
caller: an unreadable run is a missing one (services/runs.py).
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from datamill.api.types import MAX_ID, CurrentUser, EntityId
from datamill.api.wire import PrettyJSONResponse
from datamill.errors import InvalidInput
from datamill.services import runs
from datamill.services.jobs import JobService
from datamill.store.runlog import LogEvent

router = APIRouter()

JSON_LINES = "application/x-ndjson"
_RESERVED = ("seq", "time", "event")
ExecutionQuery = Annotated[int, Query(ge=0, le=MAX_ID)]


def _service(request: Request) -> JobService:
    service: JobService = request.app.state.jobs
    return service


def iso_time(value: dt.datetime) -> str:
    """A stored naive-UTC time as ISO 8601 with milliseconds and Z."""
    return value.isoformat(timespec="milliseconds") + "Z"


def event_item(event: LogEvent) -> dict[str, Any]:
    """One event as the log routes show it: seq, time, event, then its details."""
    detail = {k: v for k, v in event.detail.items() if k not in _RESERVED}
    return {"seq": event.seq, "time": iso_time(event.at), "event": event.event, **detail}


def event_line(event: LogEvent) -> str:
    """One event as one line of text: time, event, then key=value (values as JSON)."""
    detail = " ".join(
        f"{k}={json.dumps(v, ensure_ascii=False)}"
        for k, v in event.detail.items()
        if k not in _RESERVED
    )
    return f"{iso_time(event.at)} #{event.seq} {event.event}" + (f" {detail}" if detail else "")


def _since(value: str | None) -> tuple[int | None, dt.datetime | None]:
    """`since` as a sequence number (digits) or a time (ISO 8601; UTC unless it says)."""
    if value is None or value == "":
        return None, None
    if value.isascii() and value.isdigit():
        if len(value) > 12:
            raise InvalidInput("since: a sequence number has at most 12 digits")
        return int(value), None
    try:
        moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00").replace(" ", "+"))
        if moment.tzinfo is not None:
            moment = moment.astimezone(dt.UTC).replace(tzinfo=None)
    except (ValueError, OverflowError):
        raise InvalidInput(
            "since must be a sequence number (seq of the last event seen) "
            "or an ISO 8601 time such as 2026-12-01T13:55:57Z"
        ) from None
    # Times are shown to the millisecond: "after" the time of an event shown
    # means after that millisecond, so tailing by time never repeats it.
    return None, moment.replace(microsecond=moment.microsecond // 1000 * 1000 + 999)


@router.get("/api/job-execution/{execution_id}/log")
def run_log(
    execution_id: EntityId,
    request: Request,
    user: CurrentUser,
    since: str | None = None,
    format: str | None = None,
) -> Response:
    """The run's events in order: a JSON array, or JSON lines when asked for."""
    if format not in (None, "", "json", "jsonl"):
        raise InvalidInput("format must be json or jsonl")
    after_seq, after_time = _since(since)
    report = runs.run_report(
        _service(request), execution_id, user, after_seq=after_seq, after_time=after_time
    )
    items = [event_item(e) for e in report.events]
    wants_lines = format == "jsonl" or (
        format in (None, "") and JSON_LINES in request.headers.get("accept", "")
    )
    if wants_lines:
        body = "".join(json.dumps(item, ensure_ascii=False) + "\n" for item in items)
        return Response(body, media_type=JSON_LINES)
    return PrettyJSONResponse(items)


@router.get("/api/job-execution/{execution_id}/lineage")
def run_lineage(execution_id: EntityId, request: Request, user: CurrentUser) -> Response:
    """What the run read, what it wrote, and the configuration version it ran."""
    return PrettyJSONResponse(runs.lineage(_service(request), execution_id, user))


@router.get("/file-job")
def file_job(jobExecutionId: ExecutionQuery, request: Request, user: CurrentUser) -> Response:
    """Datameer's job log: the run's events as text, one line each."""
    report = runs.run_report(_service(request), jobExecutionId, user)
    text = "".join(event_line(e) + "\n" for e in report.events)
    return Response(text, media_type="text/plain; charset=utf-8")


@router.get("/job/download-trace/{execution_id}")
def download_trace(execution_id: EntityId, request: Request, user: CurrentUser) -> Response:
    """Datameer's trace download: the run, its log, its warnings and its failure in full."""
    report = runs.run_report(_service(request), execution_id, user)
    execution = report.execution
    lines = [
        f"Job execution {execution.id} of {report.entry.path}",
        f"Status: {execution.status.value}",
        f"Queued: {iso_time(execution.created_at)}",
        f"Started: {iso_time(execution.started_at) if execution.started_at else '-'}",
        f"Finished: {iso_time(execution.finished_at) if execution.finished_at else '-'}",
        f"Records written: {execution.success_count}, dropped: {execution.failure_count}",
        "",
        "== Log ==",
        *(event_line(e) for e in report.events),
    ]
    for warning in runs.warnings(report):
        lines += ["", f"== Warning: {_indented(warning['message'])} =="]
        lines += [json.dumps(s, ensure_ascii=False) for s in warning.get("sample", [])]
    failure = runs.failure(report)
    if failure is not None:
        lines += ["", "== Failure ==", _indented(str(failure.get("message", "")))]
        lines += [f"{k}: {_indented(str(v))}" for k, v in failure.items() if k != "message"]
    name = f"job-execution-{execution.id}-trace.txt"
    return Response(
        "\n".join(lines) + "\n",
        media_type="text/plain; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


def _indented(text: str) -> str:
    # Engine messages span lines, and may quote what a hostile input holds:
    # every further line is indented, so none can start a fake "== ... ==" section.
    # splitlines: every line break a viewer honours (\r, \v, \f, U+2028, ...).
    return "\n  ".join(text.splitlines())
