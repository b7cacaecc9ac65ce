"""Bring a metadata database to the newest schema with Alembic, one node at a time.

Several nodes may start together on a fresh database. Each migration runs
under a lock the database itself keeps (a PostgreSQL advisory lock held by
the migration's transaction; on SQLite the transaction begins EXCLUSIVE), so
the second node waits, then finds the schema at head and changes nothing.
`startup_lock` serialises the rest of a node's start (built-in rows, the
first admin), whose checks and inserts would otherwise race too.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

from datamill.store.db import Database

MIGRATIONS = Path(__file__).parent / "migrations"
# Advisory lock keys (any 64-bit numbers no other application on the database uses).
MIGRATION_LOCK = 0x64_6D_6D_69_67  # "dmmig"
STARTUP_LOCK = 0x64_6D_73_74_61  # "dmsta"


def alembic_config(db: Database | None) -> Config:
    """An Alembic config that points at the packaged migrations (and at `db`, if given)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if db is not None:
        config.set_main_option("sqlalchemy.url", db.url.replace("%", "%%"))
    return config


@functools.cache
def head_revision() -> str:
    """The newest migration this code knows."""
    head = ScriptDirectory.from_config(alembic_config(None)).get_current_head()
    assert head is not None
    return head


def upgrade(db: Database, revision: str = "head") -> None:
    """Apply every migration up to `revision`, waiting for any other node doing the same.

    A database already at the head is left as it is without running Alembic,
    which loads its environment and every migration script each time (about
    0.1 s, paid by every node start). Its version is only ever written by a
    migration's commit, so a node that reads the head here finds the schema whole.
    """
    if revision == "head" and _at_head(db):
        return
    config = alembic_config(db)
    if not db.is_sqlite:
        with db.engine.begin() as conn:
            # Released with the transaction: by then the next node sees the new schema.
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")
            config.attributes["connection"] = conn
            command.upgrade(config, revision)
        return
    # SQLite changes a table by rebuilding it (create, copy, drop, rename), and
    # dropping a table that rows point at fails while foreign keys are
    # enforced. The pragma is ignored inside a transaction, so it is switched
    # off on the raw connection before the migration's transaction begins (the
    # documented SQLite procedure); every key is checked before the commit.
    with db.engine.connect() as conn:
        raw = conn.connection.driver_connection
        assert raw is not None
        raw.execute("PRAGMA foreign_keys=OFF")
        try:
            # EXCLUSIVE: a second node's migration waits (busy timeout) for this
            # one to commit, then reads the version it wrote.
            with conn.execution_options(datamill_begin="EXCLUSIVE").begin():
                config.attributes["connection"] = conn
                command.upgrade(config, revision)
                broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                if broken:
                    raise RuntimeError(f"migration left rows without their parent: {broken[:5]}")
        finally:
            raw.execute("PRAGMA foreign_keys=ON")


def _at_head(db: Database) -> bool:
    with db.engine.connect() as conn:
        if not sa.inspect(conn).has_table("alembic_version"):
            return False
        versions = conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalars().all()
    return versions == [head_revision()]


@contextlib.contextmanager
def startup_lock(db: Database) -> Iterator[None]:
    """Hold a lock across all nodes of one database while a node sets it up.

    PostgreSQL: a session advisory lock on a connection of its own.
    SQLite: an exclusive lock on a file beside the database (SQLite's own
    write lock belongs to one connection, and setting up uses several).
    """
    if db.is_sqlite:
        path = db.engine.url.database
        if not path or path == ":memory:":
            yield
            return
        fd = os.open(f"{path}.startup-lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock
        return
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql(f"SELECT pg_advisory_lock({STARTUP_LOCK})")
        try:
            yield
        finally:
            conn.exec_driver_sql(f"SELECT pg_advisory_unlock({STARTUP_LOCK})")
