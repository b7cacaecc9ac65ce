"""Filters the templates use: times, durations, status colours."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from datamill.api.wire import Clock
from datamill.domain.estimate import format_duration
from datamill.domain.records import Execution
from datamill.domain.status import JobStatus
from datamill.store.db import utcnow

_CLASSES = {
    JobStatus.QUEUED: "queued",
    JobStatus.WAITING_FOR_OTHER_JOB: "waiting",
    JobStatus.RUNNING: "running",
    JobStatus.COMPLETED: "ok",
    JobStatus.COMPLETED_WITH_WARNINGS: "warn",
    JobStatus.ERROR: "error",
    JobStatus.CANCELED: "canceled",
}


def status_class(status: JobStatus) -> str:
    """The CSS class that colours a status."""
    return _CLASSES[status]


def duration_of(execution: Execution) -> float | None:
    """Seconds a run ran (so far, while it runs); None before it started."""
    if execution.started_at is None:
        return None
    end = execution.finished_at or utcnow()
    return max(0.0, (end - execution.started_at).total_seconds())


def duration_text(seconds: float | None) -> str:
    """'0.4s', '3m 20s', or a dash when unknown (short runs get a tenth: most demo runs are)."""
    if seconds is None:
        return "\u2013"
    return f"{seconds:.1f}s" if seconds < 10 else format_duration(seconds)


def time_text(clock: Clock, value: dt.datetime | None) -> str:
    """A stored UTC time in the server's zone, 'YYYY-MM-DD HH:MM:SS'; a dash when unset."""
    if value is None:
        return "\u2013"
    return clock.local(value).strftime("%Y-%m-%d %H:%M:%S")


def iso_text(clock: Clock, value: dt.datetime | None) -> str:
    """The same time as ISO 8601 with its offset, for <time datetime=...>."""
    return "" if value is None else clock.local(value).isoformat(timespec="seconds")


def pretty_json(value: Any) -> str:
    """A definition or log detail as indented JSON."""
    return json.dumps(value, indent=2, sort_keys=False, ensure_ascii=False, default=str)


def percent(progress: float | None) -> int:
    """Progress (0..1) as a whole percentage."""
    return int((progress or 0.0) * 100)
