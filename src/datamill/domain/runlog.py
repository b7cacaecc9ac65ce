"""The run log's vocabulary and bounds: what a run's events are called and how big they may get.

Pure: the engine (in a child process), the worker and the store all build
events with these helpers, so a log is bounded the same way wherever an
event comes from.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

# Event names, as the log shows them (docs/observability.md lists them).
QUEUED = "queued"
CLAIMED = "claimed"
RETRIED = "retried"
STARTED = "started"
READ = "read"
SHEET = "sheet"
DROPPED = "dropped"
SPILLED = "spilled"
PUBLISHED = "published"
EXPORTED = "exported"
STOP_REQUESTED = "stop-requested"
STOPPED = "stopped"
FAILED = "failed"
HANDED_BACK = "handed-back"
# An attempt ended (worker lost, passing failure) and the run waits, QUEUED, for the next.
RETRY_SCHEDULED = "retry-scheduled"
FINISHED = "finished"
TRUNCATED = "truncated"
# Sent by the engine with the place a run failed (sheet, source, record);
# the worker folds it into the FAILED event instead of logging it apart.
FAILED_AT = "failed-at"

# A run keeps at most MAX_EVENTS events: the first HEAD, one TRUNCATED event
# saying how many were left out, and the newest MAX_EVENTS - HEAD - 1.
MAX_EVENTS = 400
HEAD = 150
TAIL = MAX_EVENTS - HEAD - 1
# Bounds on one event: text is cut in the middle, lists after MAX_ITEMS.
MAX_TEXT = 2000
# A FAILED event's message is kept longer: it is the reason shown in job details.
MAX_FAILURE_TEXT = 20_000
MAX_ITEMS = 20
# How many offending lines a DROPPED event quotes.
MAX_SAMPLE_LINES = 10


@dataclasses.dataclass(frozen=True, slots=True)
class PendingEvent:
    """An event not yet written: when, what, and its details (JSON values)."""

    at: dt.datetime
    event: str
    detail: dict[str, Any]


def now() -> dt.datetime:
    """The current time as naive UTC, the way the store keeps times."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def pending(event: str, **detail: Any) -> PendingEvent:
    """An event happening now, with its details bounded."""
    return PendingEvent(now(), event, bounded(detail))


def cut_text(text: str, limit: int = MAX_TEXT) -> str:
    """`text` cut in the middle to about `limit` characters, saying so."""
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]} …[{len(text) - 2 * half} characters left out]… {text[-half:]}"


def bounded(value: Any, depth: int = 0) -> Any:
    """`value` with long text cut, long lists shortened and deep nesting flattened to text."""
    if isinstance(value, str):
        return cut_text(value)
    if isinstance(value, dict):
        if depth >= 4:
            return cut_text(str(value))
        items = list(value.items())[:MAX_ITEMS]
        return {str(k)[:128]: bounded(v, depth + 1) for k, v in items}
    if isinstance(value, (list, tuple)):
        if depth >= 4:
            return cut_text(str(value))
        return [bounded(v, depth + 1) for v in list(value)[:MAX_ITEMS]]
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return cut_text(str(value))


def truncation_note(omitted: int) -> dict[str, Any]:
    """The details of the TRUNCATED event standing for `omitted` left-out events."""
    return {
        "omitted": omitted,
        "message": (
            f"{omitted} event(s) left out here: a run's log keeps its first {HEAD} "
            f"and its last {TAIL} events"
        ),
    }


def squeeze(events: list[PendingEvent]) -> list[PendingEvent]:
    """At most MAX_EVENTS events, the middle ones replaced by one TRUNCATED event."""
    if len(events) <= MAX_EVENTS:
        return events
    middle = events[HEAD : len(events) - TAIL]
    omitted = sum(int(e.detail.get("omitted", 0)) if e.event == TRUNCATED else 1 for e in middle)
    note = PendingEvent(middle[0].at, TRUNCATED, truncation_note(omitted))
    return [*events[:HEAD], note, *events[len(events) - TAIL :]]
