"""The migrations must produce exactly the schema the code's tables describe."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from datamill.bootstrap import Node, install_locations, open_node
from datamill.domain.records import User
from datamill.domain.status import JobKind
from datamill.services.jobs import JobService
from datamill.services.wakeup import Wakeup
from datamill.settings import Settings
from datamill.store import locations as loc_store
from datamill.store import tables as t
from datamill.store import users as user_module
from datamill.store.db import Database
from datamill.store.jobs import delete_job
from datamill.store.migrate import alembic_config, upgrade
from datamill.store.store import Store
from datamill.store.tables import metadata
from tests.helpers import orders_import, password_hash, write_orders_csv


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


# Every table whose key the database hands out (the id spaces).
ID_SPACES = {"files", "users", "groups", "roles", "job_configurations", "executions", "data"}
# Added after 0004 (by 0007): run log ids are the `since` of a tailing client.
LATER_ID_SPACES = {"run_log"}


def test_every_id_space_never_hands_out_an_id_twice(database_url: str) -> None:
    # Issue #11 item 1: SQLite needs AUTOINCREMENT (else max(id) + 1 comes back
    # after a delete at the top); PostgreSQL ids come from a sequence.
    spaces = {
        table.name: table
        for table in metadata.sorted_tables
        if table.autoincrement_column is not None
    }
    assert set(spaces) == ID_SPACES | LATER_ID_SPACES
    db = Database(database_url)
    upgrade(db)
    with db.engine.connect() as conn:
        for name, table in spaces.items():
            if db.is_sqlite:
                assert table.dialect_options["sqlite"]["autoincrement"], name
                ddl = conn.exec_driver_sql(
                    "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
                ).scalar()
                assert ddl is not None and "AUTOINCREMENT" in ddl, name
            else:
                sequence = conn.exec_driver_sql(
                    "SELECT pg_get_serial_sequence(%s, 'id')", (name,)
                ).scalar()
                assert sequence is not None, name
    db.dispose()


def _home_at_0003(tmp_path: Path) -> tuple[Settings, Node]:
    """A home whose schema is at 0003, filled by the code through the real services."""
    settings = Settings(home=tmp_path / "home", database_url=f"sqlite:///{tmp_path}/meta.db")
    settings.ensure_folders()
    db = Database(settings.resolved_database_url)
    upgrade(db, "0003")
    db.dispose()
    store = Store(settings.resolved_database_url, str(settings.resolved_data_root))
    store.files.ensure_default_tree()
    store.users.ensure_builtin_roles()
    install_locations(store, settings)
    jobs = JobService(store, Wakeup(), stop_wait_seconds=1.0, timezone=settings.timezone)
    return settings, Node(settings, store, Wakeup(), jobs)


# Columns that later migrations added; a home at 0003 or 0004 has none of them.
_ADDED_AFTER_0004 = {"users": {"session_epoch"}, "executions": {"retry_at"}}


def _rows_of_0004(conn: sa.Connection, name: str) -> list[Any]:
    """Every row of a table, in the columns it had at migration 0004."""
    table = t.metadata.tables[name]
    later = _ADDED_AFTER_0004.get(name, set())
    return list(conn.execute(sa.select(*(c for c in table.c if c.name not in later))).all())


def _add_user(node: Node, name: str, role: str = "ANALYST") -> None:
    """A user row with only the columns of schema 0003, which later code can read no more."""
    with node.store.db.write() as conn:
        conn.execute(
            sa.insert(t.users).values(
                name=name, password_hash=password_hash("pw"), created_at=dt.datetime(2026, 1, 1)
            )
        )
        conn.execute(sa.insert(t.user_roles).values(user_name=name, role_name=role))


def _fill(node: Node, round_: str, source: Path) -> dict[str, int]:
    """One new row in every id space; their ids."""
    _add_user(node, f"u{round_}")
    with node.store.db.write() as conn:
        user_module.insert_group(conn, f"g{round_}")
        user_module.insert_role(conn, f"r{round_}", ["job.read"])
    entry, config = node.jobs.define_job(
        f"/Data/ImportJobs/j{round_}.imp", JobKind.IMPORT, orders_import(source), "admin"
    )
    # Built, not read: the users of schema 0003 lack columns later code reads.
    admin = User(name="admin", password_hash="", roles=("ADMIN",), groups=(), email=None)
    execution = node.jobs.trigger(entry.path, admin)
    with node.store.db.write() as conn:
        data_id = conn.execute(
            sa.insert(t.data)
            .values(
                job_configuration_id=config.id,
                execution_id=execution.id,
                created_at=dt.datetime(2026, 1, 1),
                record_count=0,
                sheets={},
                location="",
            )
            .returning(t.data.c.id)
        ).scalar_one()
    return {
        "files": entry.id,
        "job_configurations": config.id,
        "executions": execution.id,
        "data": data_id,
        "users": _id(node, t.users, f"u{round_}"),
        "groups": _id(node, t.groups, f"g{round_}"),
        "roles": _id(node, t.roles, f"r{round_}"),
    }


def _id(node: Node, table: sa.Table, name: str) -> int:
    with node.store.db.read() as conn:
        return int(conn.execute(sa.select(table.c.id).where(table.c.name == name)).scalar_one())


def _drop(node: Node, ids: dict[str, int], round_: str) -> None:
    """Delete the rows `_fill` made: each was the newest of its id space."""
    with node.store.db.write() as conn:
        config = node.store.jobs.get(conn, ids["job_configurations"])
        # Today's delete_job also deletes run logs (0007) and delete_user the
        # user's Idempotency-Keys (0008), tables a home at 0003 lacks: lent
        # for the deletion, gone again before the migration.
        lent = [
            table
            for table in (t.run_log, t.idempotency_keys)
            if not sa.inspect(conn).has_table(table.name)
        ]
        for table in lent:
            table.create(conn)
        delete_job(conn, config)
        user_module.delete_user(conn, f"u{round_}")
        for table in lent:
            table.drop(conn)
        user_module.delete_group(conn, f"g{round_}")
        user_module.delete_role(conn, f"r{round_}")


def _tops(node: Node) -> dict[str, int]:
    with node.store.db.read() as conn:
        return {
            name: int(conn.execute(sa.text(f'SELECT coalesce(max(id), 0) FROM "{name}"')).scalar())
            for name in ID_SPACES
        }


def test_migration_0004_keeps_every_row_and_never_goes_below_the_highest_id(
    tmp_path: Path,
) -> None:
    settings, old = _home_at_0003(tmp_path)
    _add_user(old, "admin", role="ADMIN")
    source = write_orders_csv(Path(settings.resolved_source_roots[0]) / "m", rows=2)
    kept = _fill(old, "kept", source)
    gone = _fill(old, "gone", source)
    _drop(old, gone, "gone")
    tops = _tops(old)
    with old.store.db.read() as conn:
        before = {name: _rows_of_0004(conn, name) for name in ID_SPACES}
    old.store.close()

    db = Database(settings.resolved_database_url)
    upgrade(db)
    with db.engine.connect() as conn:
        after = {name: _rows_of_0004(conn, name) for name in ID_SPACES}
        assert conn.exec_driver_sql("PRAGMA foreign_key_check").all() == []
        assert conn.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
        # The migration switched enforcement off on its connection only for a while.
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []
    db.dispose()
    assert after == before

    node = open_node(settings)
    try:
        fresh = _fill(node, "new", source)
        for name in ID_SPACES:
            # Above everything that exists. Ids deleted at the top before 0004
            # left no trace and may come once more, except data ids, which had
            # AUTOINCREMENT already: the migration never lowers a sequence.
            assert fresh[name] > tops[name], name
        assert fresh["data"] > gone["data"]
        assert all(fresh[name] > kept[name] for name in ID_SPACES)
        # From now on a deleted top id never comes back, also after a restart.
        _drop(node, fresh, "new")
        node.store.close()
        node = open_node(settings)
        newer = _fill(node, "newer", source)
        for name in ID_SPACES:
            assert newer[name] > fresh[name], name
        # The partial unique index came through the rebuild partial: two runs of
        # one job may wait at once, but only one may run.
        with node.store.db.read() as conn:
            sql = conn.exec_driver_sql(
                "SELECT sql FROM sqlite_master WHERE name = 'uq_executions_one_running_per_config'"
            ).scalar()
        assert sql is not None and "WHERE status = 'RUNNING'" in sql
    finally:
        node.store.close()


def test_a_sqlite_migration_that_would_orphan_rows_changes_nothing(tmp_path: Path) -> None:
    # Migrations on SQLite run with foreign keys unenforced (tables are rebuilt);
    # a row whose parent is missing afterwards rolls the whole upgrade back.
    db = Database(f"sqlite:///{tmp_path}/m.db")
    upgrade(db, "0003")
    with db.engine.connect() as conn:
        raw = conn.connection.driver_connection
        assert raw is not None
        raw.execute("PRAGMA foreign_keys=OFF")
        with conn.begin():
            conn.exec_driver_sql("INSERT INTO locations (file_id, folder) VALUES (999, '/x')")
        raw.execute("PRAGMA foreign_keys=ON")
    with pytest.raises(RuntimeError, match="without their parent"):
        upgrade(db)
    with db.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar() == "0003"
        ddl = conn.exec_driver_sql("SELECT sql FROM sqlite_master WHERE name = 'files'").scalar()
        assert ddl is not None and "AUTOINCREMENT" not in ddl
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    db.dispose()


def _store_with_connections_folder(database_url: str, tmp_path: Path) -> Store:
    """A store at the newest schema, with the tree and /Connections made."""
    upgrade(Database(database_url))
    store = Store(database_url, str(tmp_path / "data"))
    store.files.ensure_default_tree()
    with store.db.write() as conn:
        store.files.ensure_folder(conn, "/Connections", "admin")
    return store


def _upgrade_again_from(store: Store, revision: str) -> None:
    """Downgrade to `revision` and upgrade again: the migrations after it run on what is there."""
    config = alembic_config(store.db)
    with store.db.engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, revision)
    upgrade(store.db)


def test_migration_0010_records_around_each_entry_what_the_old_rule_counted(
    database_url: str, tmp_path: Path
) -> None:
    # A run re-checks a location (or SQLite connection) against the locations
    # recorded around it when it was given (`bases`). Entries made before
    # 0010 get what the re-check counted until then: the locations with a
    # smaller entry id whose folder encloses theirs.
    store = _store_with_connections_folder(database_url, tmp_path)
    try:
        x = tmp_path / "x"
        folders = {
            "a": x,
            "b": x / "y",
            "c": x / "y" / "z",
            "d": tmp_path / "q" / "r",
            "e": tmp_path / "q",
            "s3": "s3a://bucket/x",
        }
        ids: dict[str, int] = {}
        with store.db.write() as conn:
            for name, folder in folders.items():
                entry = store.files.create_resource(
                    conn, f"/Connections/{name}.loc", "location", "admin"
                )
                loc_store.insert_location(conn, entry.id, str(folder), bases=())
                ids[name] = entry.id
            for name, url in {
                "db": f"sqlite:///{x / 'y' / 'f.db'}",
                "pg": "postgresql://h/d",
            }.items():
                entry = store.files.create_resource(
                    conn, f"/Connections/{name}.dst", "connection", "admin"
                )
                loc_store.insert_connection(conn, entry.id, url, None, bases=())
                ids[name] = entry.id
        _upgrade_again_from(store, "0009")
        with store.db.read() as conn:
            found = {name: loc_store.get_location(conn, ids[name]) for name in folders}
            db = loc_store.get_connection(conn, ids["db"])
            pg = loc_store.get_connection(conn, ids["pg"])
    finally:
        store.close()
    bases = {name: location.bases for name, location in found.items() if location is not None}
    assert bases == {
        "a": frozenset(),
        "b": {ids["a"]},
        "c": {ids["a"], ids["b"]},
        "d": frozenset(),  # q.loc was made after it
        "e": frozenset(),
        "s3": frozenset(),
    }
    assert db is not None and db.bases == {ids["a"], ids["b"]}
    assert pg is not None and pg.bases == frozenset()


def test_migration_0011_records_around_each_object_store_location_what_the_old_rule_counted(
    database_url: str, tmp_path: Path
) -> None:
    # 0010 gave s3a:// locations no bases; since the twelfth attack their
    # folders are checked as given and re-checked against their bases, so
    # 0011 gives existing ones the object-store locations with a smaller id
    # around their prefix (whole segments, same bucket).
    store = _store_with_connections_folder(database_url, tmp_path)
    try:
        folders = {
            "a": "s3a://bucket/x",
            "b": "s3a://bucket/x/y",
            "c": "s3a://bucket/x/y/z",
            "d": "s3a://bucket/xy",
            "e": "s3a://other/x/y",
            "f": "s3a://bucket",
            "local": str(tmp_path / "x"),
        }
        ids: dict[str, int] = {}
        with store.db.write() as conn:
            for name, folder in folders.items():
                entry = store.files.create_resource(
                    conn, f"/Connections/{name}.loc", "location", "admin"
                )
                loc_store.insert_location(conn, entry.id, folder, bases=())
                ids[name] = entry.id
        _upgrade_again_from(store, "0010")
        with store.db.read() as conn:
            found = {name: loc_store.get_location(conn, ids[name]) for name in folders}
    finally:
        store.close()
    bases = {name: location.bases for name, location in found.items() if location is not None}
    assert bases == {
        "a": frozenset(),
        "b": {ids["a"]},
        "c": {ids["a"], ids["b"]},
        "d": frozenset(),
        "e": frozenset(),
        "f": frozenset(),  # around them all, but made after them
        "local": frozenset(),
    }
