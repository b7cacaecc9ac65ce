"""Data results: the stored output of successful runs."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from datamill.domain.definitions import MAX_KEEP_COUNT
from datamill.domain.records import DataResult
from datamill.domain.status import ACTIVE_STATUSES
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


def newest_data(conn: Connection, config_id: int, *, lock: bool = False) -> DataResult | None:
    """The newest visible data of a configuration.

    With `lock`, the row is share-locked until the transaction ends, so a
    concurrent deletion waits until the reader has recorded that it reads it.
    """
    query = (
        sa.select(D)
        .where(D.c.job_configuration_id == config_id, D.c.deleted.is_(False))
        .order_by(D.c.id.desc())
        .limit(1)
    )
    if lock and conn.dialect.name == "postgresql":
        query = query.with_for_update(read=True)
    row = conn.execute(query).first()
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


def get_data(conn: Connection, data_id: int) -> DataResult | None:
    """One data result, deleted or not."""
    row = conn.execute(sa.select(D).where(D.c.id == data_id)).first()
    return data_from_row(row) if row is not None else None


def mark_deleted(conn: Connection, data_id: int, now: dt.datetime) -> bool:
    """Hide a data result at once; False if it was already marked."""
    return bool(
        conn.execute(
            sa.update(D)
            .where(D.c.id == data_id, D.c.deleted.is_(False))
            .values(deleted=True, deleted_at=now)
        ).rowcount
    )


def removable_data(conn: Connection) -> list[DataResult]:
    """Marked data whose files may go: no active execution reads them."""
    active = [s.value for s in ACTIVE_STATUSES]
    in_use = (
        sa.select(t.execution_inputs.c.data_id)
        .join(t.executions, t.executions.c.id == t.execution_inputs.c.execution_id)
        .where(t.executions.c.status.in_(active))
    )
    rows = conn.execute(
        sa.select(D).where(D.c.deleted.is_(True), D.c.location != "", D.c.id.not_in(in_use))
    ).all()
    return [data_from_row(r) for r in rows]


def forget_location(conn: Connection, data_id: int) -> None:
    """Record that a marked result's files are gone."""
    conn.execute(sa.update(D).where(D.c.id == data_id).values(location=""))


def expire_beyond_keep_count(conn: Connection, config_id: int, keep: int, now: dt.datetime) -> int:
    """Mark all but the newest `keep` visible results of a configuration; returns how many.

    `keep` is clamped to 1..MAX_KEEP_COUNT, so no stored value can break the query.
    """
    # A LIMIT beyond a signed 64-bit integer overflows the database driver;
    # a definition stored before the bound existed may still hold one.
    keep = min(max(keep, 1), MAX_KEEP_COUNT)
    keep_ids = (
        sa.select(D.c.id)
        .where(D.c.job_configuration_id == config_id, D.c.deleted.is_(False))
        .order_by(D.c.id.desc())
        .limit(keep)
    )
    result = conn.execute(
        sa.update(D)
        .where(
            D.c.job_configuration_id == config_id,
            D.c.deleted.is_(False),
            D.c.id.not_in(keep_ids),
        )
        .values(deleted=True, deleted_at=now)
    )
    return int(result.rowcount)


def stored_locations(conn: Connection) -> set[str]:
    """Every folder a data row names."""
    return {row.location for row in conn.execute(sa.select(D.c.location)) if row.location}


def inputs_of(conn: Connection, execution_id: int) -> list[DataResult]:
    """The data an execution read (recorded when it was claimed), by data id."""
    rows = conn.execute(
        sa.select(D)
        .join(t.execution_inputs, t.execution_inputs.c.data_id == D.c.id)
        .where(t.execution_inputs.c.execution_id == execution_id)
        .order_by(D.c.id)
    ).all()
    return [data_from_row(r) for r in rows]


def outputs_of(conn: Connection, execution_id: int) -> list[DataResult]:
    """The data an execution published, deleted or not."""
    rows = conn.execute(sa.select(D).where(D.c.execution_id == execution_id).order_by(D.c.id)).all()
    return [data_from_row(r) for r in rows]
