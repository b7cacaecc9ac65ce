"""What the queue holds now, for telling a queued run where it stands."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from datamill.store import tables as t

D = t.execution_dependencies


def upstreams_of(conn: Connection, execution_ids: list[int]) -> dict[int, tuple[int, ...]]:
    """The runs each of `execution_ids` waits on (a plan's or a data-driven run's upstreams)."""
    if not execution_ids:
        return {}
    rows = conn.execute(
        sa.select(D.c.execution_id, D.c.upstream_execution_id).where(
            D.c.execution_id.in_(execution_ids)
        )
    ).all()
    found: dict[int, list[int]] = {}
    for row in rows:
        found.setdefault(row.execution_id, []).append(row.upstream_execution_id)
    return {run: tuple(sorted(ups)) for run, ups in found.items()}


def live_workers(conn: Connection) -> int:
    """Workers registered now (reconciliation removes the lost ones)."""
    return int(conn.execute(sa.select(sa.func.count()).select_from(t.workers)).scalar_one())
