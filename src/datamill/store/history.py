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
    "never ran", and so does every execution whose data files still exist.
    """
    newest = sa.select(sa.func.max(E.c.id)).group_by(E.c.job_configuration_id)
    # Data whose files are still there (visible, or marked but not yet removed)
    # keeps its execution; rows of data already removed go with it.
    stored = sa.select(D.c.execution_id).where(D.c.location != "")
    doomed = [
        row.id
        for row in conn.execute(
            sa.select(E.c.id).where(
                E.c.status.in_([s.value for s in TERMINAL_STATUSES]),
                E.c.finished_at < cutoff,
                E.c.id.not_in(newest),
                E.c.id.not_in(stored),
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
        removed = sa.select(D.c.id).where(D.c.execution_id.in_(chunk))
        inputs = t.execution_inputs
        conn.execute(
            sa.delete(inputs).where(
                sa.or_(inputs.c.execution_id.in_(chunk), inputs.c.data_id.in_(removed))
            )
        )
        conn.execute(sa.delete(D).where(D.c.execution_id.in_(chunk)))
        conn.execute(sa.delete(E).where(E.c.id.in_(chunk)))
    return len(doomed)
