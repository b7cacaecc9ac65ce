"""The migrations must produce exactly the schema the code's tables describe."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from datamill.store.db import Database
from datamill.store.migrate import upgrade
from datamill.store.tables import metadata


def test_migrations_produce_the_models_schema(database_url: str) -> None:
    db = Database(database_url)
    upgrade(db)
    with db.engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), metadata)
    db.dispose()
    assert differences == []


def test_upgrading_twice_changes_nothing(database_url: str) -> None:
    db = Database(database_url)
    upgrade(db)
    upgrade(db)
    with db.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []
    db.dispose()


def test_sqlite_never_reuses_ids_of_deleted_data(tmp_path: object) -> None:
    # Data ids name folders: ids of deleted data rows are never handed out again.
    db = Database(f"sqlite:///{tmp_path}/m.db")
    upgrade(db)
    with db.engine.connect() as conn:
        ddl = conn.exec_driver_sql("SELECT sql FROM sqlite_master WHERE name = 'data'").scalar()
    db.dispose()
    assert ddl is not None and "AUTOINCREMENT" in ddl
