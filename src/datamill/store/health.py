"""What readiness probes and metrics read from the metadata database."""

from __future__ import annotations

import urllib.parse

import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from datamill.domain.status import ACTIVE_STATUSES
from datamill.store import tables as t
from datamill.store.db import Database
from datamill.store.migrate import head_revision as head_revision

_ACTIVE = sorted(s.value for s in ACTIVE_STATUSES)


def schema_revision(db: Database) -> str | None:
    """The database's migration revision, read on a fresh connection; raises if unreachable.

    SQLite: a new connection that may not create the file, because pooled
    connections keep reading a database file that was moved or deleted.
    """
    path = db.engine.url.database or ""
    if db.is_sqlite and path and path != ":memory:":
        uri = f"sqlite:///file:{urllib.parse.quote(path)}?mode=rw&uri=true"
        probe = sa.create_engine(uri, poolclass=NullPool, connect_args={"timeout": 5})
        try:
            with probe.connect() as conn:
                return _revision(conn)
        finally:
            probe.dispose()
    with db.read() as conn:
        return _revision(conn)


def _revision(conn: sa.Connection) -> str | None:
    return conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()


def queue_depth(db: Database) -> dict[str, int]:
    """How many executions are queued, waiting or running, across all workers."""
    e = t.executions
    query = (
        sa.select(e.c.status, sa.func.count()).where(e.c.status.in_(_ACTIVE)).group_by(e.c.status)
    )
    with db.read() as conn:
        counts = {status: 0 for status in _ACTIVE}
        counts.update({str(row[0]): int(row[1]) for row in conn.execute(query)})
    return counts
