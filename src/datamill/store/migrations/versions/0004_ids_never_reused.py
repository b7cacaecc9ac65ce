"""ids never reused: AUTOINCREMENT on every SQLite id space

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 10:00:00.000000

A SQLite rowid key without AUTOINCREMENT hands out max(id) + 1, so deleting
the row with the highest id gives that id to the next row: a reference by id
(a workbook naming job "22", a monitoring check run with `-j 22`, a script
that remembers an execution id) then silently names a different job or run.
With AUTOINCREMENT SQLite keeps the highest id it ever handed out in
sqlite_sequence and never goes below it.

SQLite cannot add AUTOINCREMENT to an existing table, so each table with an
integer id (files, users, groups, roles, job_configurations, executions;
data has had it since 0001) is rebuilt, and its sqlite_sequence entry is set
to the highest id it holds now. Ids handed out and deleted at the top before
this migration left no trace, so they can still come back once; nothing later
than this migration can. The rebuild drops and recreates tables that foreign
keys point at, so datamill.store.migrate runs migrations on SQLite with
foreign key enforcement off and checks every foreign key before it commits.

PostgreSQL ids come from sequences (SERIAL), which never hand out a value
twice, rolled back or not, across restarts: nothing to do there.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# Parents before children does not matter with enforcement off; kept readable.
TABLES = ("files", "users", "groups", "roles", "job_configurations", "executions")


def upgrade() -> None:
    """Rebuild the SQLite id tables with AUTOINCREMENT, seeded with their highest id."""
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    if bind.exec_driver_sql("PRAGMA foreign_keys").scalar():
        # Dropping a table that rows point at would fail (or, deferred, fail at commit).
        raise RuntimeError("run migrations through datamill.store.migrate.upgrade()")
    for table in TABLES:
        with op.batch_alter_table(
            table, recreate="always", table_kwargs={"sqlite_autoincrement": True}
        ):
            pass
    for table in (*TABLES, "data"):
        _seed_sequence(bind, table)


def _seed_sequence(bind: sa.Connection, table: str) -> None:
    """Make sqlite_sequence hold at least the table's highest id, never lower it.

    Copying the rows into the rebuilt table sets it already; done explicitly so
    the guarantee does not hang on how Alembic copies, and for data, which is
    not rebuilt and whose entry may be above its highest id already.
    """
    highest = bind.exec_driver_sql(f'SELECT max(id) FROM "{table}"').scalar()
    if highest is None:
        return
    known = bind.exec_driver_sql(
        "SELECT seq FROM sqlite_sequence WHERE name = ?", (table,)
    ).scalar()
    if known is None:
        bind.exec_driver_sql(
            "INSERT INTO sqlite_sequence (name, seq) VALUES (?, ?)", (table, highest)
        )
    elif known < highest:
        bind.exec_driver_sql("UPDATE sqlite_sequence SET seq = ? WHERE name = ?", (highest, table))


def downgrade() -> None:
    """Rebuild the tables without AUTOINCREMENT (ids may then be reused again)."""
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    for table in TABLES:
        with op.batch_alter_table(
            table, recreate="always", table_kwargs={"sqlite_autoincrement": False}
        ):
            pass
