"""Data results: the stored output of successful runs."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from datamill.domain.records import DataResult
from datamill.store import tables as t

D = t.data


def data_from_row(row: Any) -> DataResult:
    """Build a DataResult from a data row."""
    return DataResult(
        id=row.id,
        job_configuration_id=row.job_configuration_id,
        execution_id=row.execution_id,
        created_at=row.created_at,
        record_count=row.record_count,
        sheets=dict(row.sheets or {}),
        location=row.location,
        deleted=bool(row.deleted),
    )


def newest_data(conn: Connection, config_id: int) -> DataResult | None:
    """The newest visible data of a configuration."""
    row = conn.execute(
        sa.select(D)
        .where(D.c.job_configuration_id == config_id, D.c.deleted.is_(False))
        .order_by(D.c.id.desc())
        .limit(1)
    ).first()
    return data_from_row(row) if row is not None else None


def data_for_configuration(conn: Connection, config_id: int) -> list[DataResult]:
    """Every visible data result of a configuration, newest first."""
    rows = conn.execute(
        sa.select(D)
        .where(D.c.job_configuration_id == config_id, D.c.deleted.is_(False))
        .order_by(D.c.id.desc())
    ).all()
    return [data_from_row(r) for r in rows]


def record_inputs(conn: Connection, execution_id: int, data_ids: list[int]) -> None:
    """Remember which data an execution reads, so housekeeping leaves it alone."""
    if data_ids:
        conn.execute(
            sa.insert(t.execution_inputs),
            [{"execution_id": execution_id, "data_id": d} for d in sorted(set(data_ids))],
        )
