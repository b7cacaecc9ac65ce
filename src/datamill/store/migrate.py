"""Bring a metadata database to the newest schema with Alembic."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from datamill.store.db import Database

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(db: Database) -> Config:
    """An Alembic config that points at the packaged migrations."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", db.url.replace("%", "%%"))
    return config


def upgrade(db: Database, revision: str = "head") -> None:
    """Apply every migration up to `revision`."""
    config = alembic_config(db)
    if not db.is_sqlite:
        with db.engine.begin() as conn:
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
            with conn.begin():
                config.attributes["connection"] = conn
                command.upgrade(config, revision)
                broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                if broken:
                    raise RuntimeError(f"migration left rows without their parent: {broken[:5]}")
        finally:
            raw.execute("PRAGMA foreign_keys=ON")
