"""Dropping old execution history."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from datamill.domain.status import TERMINAL_STATUSES
from datamill.store import tables as t

E, D = t.executions, t.data


def drop_history_before(conn: Connection, cutoff: dt.datetime) -> int:
    """Delete ended executions that finished before `cutoff`; returns how many.

    The newest execution of each job stays, so its status never falls back to
    "never ran", and so does every execution whose data is still stored.
    Removed data rows whose files are gone go with them.
    """
    gone_data = sa.select(D.c.id).where(
        D.c.deleted.is_(True), D.c.location == "", D.c.created_at < cutoff
    )
    conn.execute(sa.delete(t.execution_inputs).where(t.execution_inputs.c.data_id.in_(gone_data)))
    conn.execute(sa.delete(D).where(D.c.id.in_(gone_data)))
    newest = sa.select(sa.func.max(E.c.id)).group_by(E.c.job_configuration_id)
    doomed = [
        row.id
        for row in conn.execute(
            sa.select(E.c.id).where(
                E.c.status.in_([s.value for s in TERMINAL_STATUSES]),
                E.c.finished_at < cutoff,
                E.c.id.not_in(newest),
                E.c.id.not_in(sa.select(D.c.execution_id)),
            )
        )
    ]
    for start in range(0, len(doomed), 500):
        chunk = doomed[start : start + 500]
        dep = t.execution_dependencies
        conn.execute(
            sa.delete(dep).where(
                sa.or_(dep.c.execution_id.in_(chunk), dep.c.upstream_execution_id.in_(chunk))
            )
        )
        conn.execute(
            sa.delete(t.execution_inputs).where(t.execution_inputs.c.execution_id.in_(chunk))
        )
        conn.execute(sa.delete(E).where(E.c.id.in_(chunk)))
    return len(doomed)
