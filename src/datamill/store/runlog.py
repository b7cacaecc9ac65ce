"""The run log: writing a run's events (bounded), reading them, deleting them with the run."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from datamill.domain import runlog as rl
from datamill.store import precompiled
from datamill.store import tables as t

L = t.run_log


@dataclasses.dataclass(frozen=True, slots=True)
class LogEvent:
    """One stored event of a run; `seq` orders a run's events and serves `since`."""

    seq: int
    at: dt.datetime
    event: str
    detail: dict[str, Any]


# Built once, like the check below: every finish and progress write inserts.
_INSERT = sa.insert(L).values(
    {
        name: sa.bindparam(name, type_=L.c[name].type)
        for name in ("execution_id", "at", "event", "detail")
    }
)
# Built once: whether a run's log has grown past its bound (one index seek).
_BEYOND_BOUND = (
    sa.select(L.c.id)
    .where(L.c.execution_id == sa.bindparam("run"))
    .order_by(L.c.id)
    .offset(rl.MAX_EVENTS)
    .limit(1)
)


def append(conn: Connection, execution_id: int, events: Sequence[rl.PendingEvent]) -> None:
    """Write events of a run in the caller's transaction, keeping its log within bounds."""
    if not events:
        return
    precompiled.run_many(
        conn,
        _INSERT,
        [
            {"execution_id": execution_id, "at": e.at, "event": e.event, "detail": e.detail}
            for e in rl.squeeze(list(events))
        ],
    )
    if precompiled.run(conn, _BEYOND_BOUND, {"run": execution_id}).first() is not None:
        _truncate(conn, execution_id)


def append_many(conn: Connection, events: Iterable[tuple[int, rl.PendingEvent]]) -> None:
    """Write one event each for several runs (reconciliation): (execution id, event)."""
    rows = [
        {"execution_id": i, "at": e.at, "event": e.event, "detail": e.detail} for i, e in events
    ]
    if rows:
        conn.execute(_INSERT, rows)


def _truncate(conn: Connection, execution_id: int) -> None:
    """Replace the middle of a run's log by one TRUNCATED event counting what went."""
    rows = conn.execute(
        sa.select(L.c.id, L.c.event, L.c.detail)
        .where(L.c.execution_id == execution_id)
        .order_by(L.c.id)
    ).all()
    if len(rows) <= rl.MAX_EVENTS:
        return
    marker, doomed = rows[rl.HEAD], rows[rl.HEAD + 1 : len(rows) - rl.TAIL]
    omitted = sum(_weight(r.event, r.detail) for r in (marker, *doomed))
    conn.execute(sa.delete(L).where(L.c.id.in_([r.id for r in doomed])))
    conn.execute(
        sa.update(L)
        .where(L.c.id == marker.id)
        .values(event=rl.TRUNCATED, detail=rl.truncation_note(omitted))
    )


def _weight(event: str, detail: Any) -> int:
    """How many events a row stands for: a TRUNCATED one for those it replaced."""
    if event == rl.TRUNCATED and isinstance(detail, dict):
        return int(detail.get("omitted", 0))
    return 1


def read_log(
    conn: Connection,
    execution_id: int,
    *,
    after_seq: int | None = None,
    after_time: dt.datetime | None = None,
) -> list[LogEvent]:
    """A run's stored events in order, those after `after_seq` / `after_time` only if given."""
    query = sa.select(L).where(L.c.execution_id == execution_id)
    if after_seq is not None:
        query = query.where(L.c.id > after_seq)
    if after_time is not None:
        query = query.where(L.c.at > after_time)
    rows = conn.execute(query.order_by(L.c.id)).all()
    return [LogEvent(r.id, r.at, r.event, dict(r.detail or {})) for r in rows]


def delete_logs(conn: Connection, execution_ids: sa.Select[Any] | Sequence[int]) -> None:
    """Delete the logs of runs about to be deleted (history, a job's deletion)."""
    conn.execute(sa.delete(L).where(L.c.execution_id.in_(execution_ids)))
