"""Idempotency keys: claiming a key for a trigger, its stored answer, expiry."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from datamill.errors import Conflict
from datamill.store import tables as t

K = t.idempotency_keys


@dataclasses.dataclass(frozen=True, slots=True)
class StoredAnswer:
    """What a key was first used for, and the answer that request got."""

    fingerprint: str
    status_code: int
    body: str


def claim_key(
    conn: Connection,
    user: str,
    key: str,
    fingerprint: str,
    now: dt.datetime,
    expired_before: dt.datetime,
) -> StoredAnswer | None:
    """Take a key for a new request (None), or return the answer of the request that holds it.

    The insert comes first in the trigger's transaction: on PostgreSQL a second
    transaction inserting the same key waits on the unique key until the first
    ends, then finds its answer (or, if it rolled back, takes the key itself);
    SQLite's writers take turns anyway. A key older than `expired_before`
    counts as free (housekeeping may not have deleted it yet).
    """
    insert = postgresql.insert(K) if conn.dialect.name == "postgresql" else sqlite.insert(K)
    fresh = {"fingerprint": fingerprint, "created_at": now, "status_code": 0, "body": ""}
    # Twice at most: housekeeping may delete an expired key between the two reads.
    for _ in range(2):
        # status_code and body are filled in by record_answer before the commit.
        # RETURNING, not rowcount: psycopg reports -1 for this insert.
        claimed = conn.execute(
            insert.values(user_name=user, key=key, **fresh)
            .on_conflict_do_nothing()
            .returning(K.c.key)
        ).first()
        if claimed is not None:
            return None
        row = _held(conn, user, key)
        if row is None:
            continue
        if row.created_at >= expired_before:
            return StoredAnswer(row.fingerprint, row.status_code, row.body)
        # Only the row as read: of two requests renewing one expired key, the
        # second (waiting on the first's row lock) changes nothing and replays.
        renewed = conn.execute(
            sa.update(K)
            .where(K.c.user_name == user, K.c.key == key, K.c.created_at == row.created_at)
            .values(**fresh)
        ).rowcount
        if renewed:
            return None
    row = _held(conn, user, key)
    if row is None:
        raise Conflict("the Idempotency-Key changed hands meanwhile; send the request again")
    return StoredAnswer(row.fingerprint, row.status_code, row.body)


def _held(conn: Connection, user: str, key: str) -> sa.Row[Any] | None:
    held: sa.Row[Any] | None = conn.execute(
        sa.select(K).where(K.c.user_name == user, K.c.key == key)
    ).first()
    return held


def record_answer(conn: Connection, user: str, key: str, status_code: int, body: str) -> None:
    """Store the answer of the request that claimed the key (same transaction)."""
    conn.execute(
        sa.update(K)
        .where(K.c.user_name == user, K.c.key == key)
        .values(status_code=status_code, body=body)
    )


def forget_keys_before(conn: Connection, before: dt.datetime) -> int:
    """Delete keys created before `before`; returns how many."""
    return int(conn.execute(sa.delete(K).where(K.c.created_at < before)).rowcount)
