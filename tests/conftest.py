"""Shared fixtures: every store-backed test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import os
import queue
import shutil
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy.engine import make_url

from datamill.bootstrap import Node, open_node
from datamill.settings import Settings
from datamill.store.db import Database
from datamill.store.migrate import upgrade
from datamill.worker.worker import Worker
from tests.helpers import password_hash
from tests.schedule import longest_files_first, scope_of

PG_URL = os.environ.get(
    "DATAMILL_TEST_POSTGRES_URL", "postgresql+psycopg://postgres:postgres@127.0.0.1:5432/postgres"
)
IN_CI = os.environ.get("CI") == "true"
# Per process: each pytest-xdist worker (scripts/test) migrates its own template.
TEMPLATE = f"datamill_tpl_{os.getpid()}"


def _admin_conninfo() -> str:
    url = make_url(PG_URL).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Hand the longest test files to the xdist workers first (tests/schedule.py)."""
    longest_files_first(items)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """`--dist loadfile`, except that tests/spark goes to one worker whole (tests/schedule.py).

    Each worker that runs a Spark test starts the session's Spark (a JVM and a
    Spark Connect server); file by file, both workers did.
    """
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class SharedScopeScheduling(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return scope_of(nodeid)

    return SharedScopeScheduling(config, log)


def postgres_unavailable_reason() -> str | None:
    """Why PostgreSQL tests cannot run here, or None if they can."""
    try:
        with psycopg.connect(_admin_conninfo(), connect_timeout=3):
            return None
    except psycopg.Error as error:
        return f"PostgreSQL at {PG_URL} is not reachable: {error}"


def require_postgres() -> None:
    """Skip locally without PostgreSQL; fail under CI, which must never pass by skipping."""
    reason = postgres_unavailable_reason()
    if reason is not None:
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)


def clone_template(conn: psycopg.Connection[Any], name: str, template: str) -> None:
    """CREATE DATABASE `name` from the migrated template, committing without waiting for disk.

    synchronous_commit=off (for this database only) makes a commit return
    before its WAL is flushed: about 8 ms less per commit on this machine,
    and a test commits hundreds of times. Nothing else changes: locks,
    isolation and visibility to other sessions are the same, and a commit
    is lost only if the PostgreSQL server itself crashes, which no test does
    (tests kill Datamill processes and backends, never the server).
    """
    conn.execute(f"CREATE DATABASE {name} TEMPLATE {template}")
    conn.execute(f"ALTER DATABASE {name} SET synchronous_commit = off")


class _Dropper:
    """Drops test databases on threads of their own, so no test waits for them.

    DROP DATABASE waits for a checkpoint (disk flushes, up to a second when
    the machine is busy); the next test need not wait for the last one's.
    Several threads, because drops waiting at once share a checkpoint: with
    fsync on, one thread fell behind the tests and the session's end waited
    minutes for the backlog (5 threads drop twice as fast; .ci/run turns
    fsync off on its throwaway cluster, which makes a drop ~25 ms).
    """

    THREADS = 4

    def __init__(self) -> None:
        self._names: queue.Queue[str | None] = queue.Queue()
        self.failures: list[str] = []
        self._threads = [
            threading.Thread(target=self._run, name="test-db-dropper", daemon=True)
            for _ in range(self.THREADS)
        ]
        for thread in self._threads:
            thread.start()

    def drop(self, name: str) -> None:
        """Drop the database soon."""
        self._names.put(name)

    def _run(self) -> None:
        while (name := self._names.get()) is not None:
            try:
                with psycopg.connect(_admin_conninfo(), autocommit=True) as conn:
                    conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            except psycopg.Error as error:  # reported by close(); the other drops go on
                self.failures.append(f"{name}: {error}")

    def close(self) -> None:
        """Drop what is queued, then stop; fail if any drop failed."""
        for _ in self._threads:
            self._names.put(None)
        for thread in self._threads:
            thread.join()
        assert self.failures == [], self.failures


# Everything of a test database that a test could change and an emptied
# database would keep: its objects (tables, columns and their collations,
# defaults, constraints, indexes, functions, triggers, schemas, extensions),
# its sequences' positions, its settings, whether it takes connections, its
# prepared transactions and the schema version. Equal to a fresh clone's: reusable.
_FINGERPRINT = """
SELECT md5(string_agg(x, '|' ORDER BY x)) FROM (
  SELECT 'class ' || n.nspname || '.' || c.relname || ' ' || c.relkind::text || ' '
         || c.relpersistence::text || ' ' || coalesce(c.reloptions::text, '')
         || ' ' || coalesce(c.relacl::text, '') || ' ' || c.relrowsecurity::text
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
   WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
  UNION ALL
  SELECT 'column ' || c.relname || '.' || a.attname || ' ' || a.atttypid::text || ' '
         || a.atttypmod::text || ' ' || a.attnotnull::text || ' ' || a.attcollation::text
         || ' ' || coalesce(pg_get_expr(d.adbin, d.adrelid), '')
    FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
    JOIN pg_namespace n ON n.oid = c.relnamespace
    LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
   WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') AND a.attnum > 0
  UNION ALL
  SELECT 'constraint ' || conrelid::regclass::text || ' ' || conname || ' '
         || pg_get_constraintdef(oid)
    FROM pg_constraint WHERE connamespace NOT IN ('pg_catalog'::regnamespace,
                                                  'information_schema'::regnamespace)
  UNION ALL
  SELECT 'index ' || indexdef FROM pg_indexes
   WHERE schemaname NOT IN ('pg_catalog', 'information_schema')
  UNION ALL
  SELECT 'function ' || p.oid::regprocedure::text || ' ' || md5(coalesce(p.prosrc, ''))
    FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
   WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
  UNION ALL
  SELECT 'trigger ' || tgrelid::regclass::text || ' ' || tgname || ' ' || tgenabled::text
    FROM pg_trigger WHERE NOT tgisinternal
  UNION ALL
  SELECT 'rule ' || schemaname || '.' || rulename FROM pg_rules
   WHERE schemaname NOT IN ('pg_catalog', 'information_schema')
  UNION ALL
  SELECT 'policy ' || schemaname || '.' || tablename || '.' || policyname FROM pg_policies
  UNION ALL
  SELECT 'schema ' || nspname FROM pg_namespace
  UNION ALL
  SELECT 'extension ' || extname || ' ' || extversion FROM pg_extension
  UNION ALL
  SELECT 'sequence ' || schemaname || '.' || sequencename || ' '
         || coalesce(last_value::text, 'unused') FROM pg_sequences
  UNION ALL
  SELECT 'setting ' || setrole::text || ' ' || array_to_string(setconfig, ',')
    FROM pg_db_role_setting
   WHERE setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())
  UNION ALL
  SELECT 'database ' || datallowconn::text || ' ' || datconnlimit::text || ' '
         || coalesce(datacl::text, '')
    FROM pg_database WHERE datname = current_database()
  UNION ALL
  SELECT 'prepared ' || gid FROM pg_prepared_xacts WHERE database = current_database()
  UNION ALL
  SELECT 'version ' || version_num FROM alembic_version
) AS parts(x)
"""


class _Databases:
    """The test databases of one worker: each cloned once, then emptied and reused.

    CREATE DATABASE copies the template's ~8 MB (0.1-0.4 s a test, and a drop
    after it); emptying a database a test has finished with takes ~30 ms. A
    database goes back to the next test only when it is exactly as a fresh
    clone: every other session of it ended (as DROP ... WITH (FORCE) would),
    the database renamed (a process left behind that connects again finds
    none, as after a drop), every table emptied and every sequence restarted
    (the template holds no rows but the schema version), and then its
    `_FINGERPRINT` equal to a fresh clone's. A test that changed anything else
    (a trigger, a function, a column's collation, a setting, a table of its
    own) leaves a database that is dropped instead, and the next test gets a
    fresh clone.
    """

    def __init__(self, template: str) -> None:
        self._template = template
        self._free: list[str] = []
        self._fresh: str | None = None  # a fresh clone's fingerprint
        self._filled = ""  # a query: the tables that hold rows
        self._admin: psycopg.Connection[Any] | None = None
        self.reused = self.cloned = 0

    @property
    def admin(self) -> psycopg.Connection[Any]:
        """The worker's own connection to the server's maintenance database."""
        if self._admin is None or self._admin.closed:
            self._admin = psycopg.connect(_admin_conninfo(), autocommit=True)
        return self._admin

    def take(self) -> str:
        """The name of an empty database at the template's state, for one test."""
        if self._free:
            self.reused += 1
            return self._free.pop()
        name = f"datamill_t_{uuid.uuid4().hex[:12]}"
        clone_template(self.admin, name, self._template)
        self.cloned += 1
        if self._fresh is None:
            with psycopg.connect(_conninfo(name), autocommit=True) as conn:
                self._fresh = _fingerprint(conn)
                tables = [
                    str(table)
                    for (table,) in conn.execute(
                        "SELECT c.oid::regclass::text FROM pg_class c"
                        " JOIN pg_namespace n ON n.oid = c.relnamespace"
                        " WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')"
                        " AND c.relname <> 'alembic_version'"
                    )
                ]
            # Which tables hold rows: only those are truncated (each TRUNCATE
            # makes new files, the larger part of emptying a database).
            self._filled = " UNION ALL ".join(
                f"SELECT '{table}' WHERE EXISTS (SELECT FROM {table})" for table in tables
            )
        return name

    def give_back(self, name: str) -> None:
        """Empty the database for the next test, or drop it if it cannot be as fresh."""
        try:
            renamed: str | None = self._rename(name)
        except psycopg.Error:  # a session came back before the rename: a fresh clone instead
            renamed = None
        try:
            clean = renamed is not None and self._empty(renamed)
        except psycopg.Error:  # it would not empty: a fresh clone for the next test
            clean = False
        assert _DROPPER is not None
        if renamed is not None and clean:
            self._free.append(renamed)
        else:
            _DROPPER.drop(renamed or name)

    def _rename(self, name: str) -> str:
        """End the test's sessions and give its database a new name.

        A process the test left behind (a killed server's worker child, a
        thread still polling) may connect again: under the old name it finds
        no database, as after a drop, instead of writing into the next test's.
        """
        self.admin.execute(
            "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )
        renamed = f"datamill_t_{uuid.uuid4().hex[:12]}"
        self.admin.execute(f'ALTER DATABASE "{name}" RENAME TO "{renamed}"')
        return renamed

    def _empty(self, name: str) -> bool:
        with psycopg.connect(_conninfo(name), autocommit=True) as conn:
            conn.execute("SET lock_timeout = '10s'")
            filled = [str(table) for (table,) in conn.execute(self._filled)] if self._filled else []
            if filled:
                conn.execute(f"TRUNCATE {', '.join(filled)} CASCADE")
            used = conn.execute(
                "SELECT format('%I.%I', schemaname, sequencename) FROM pg_sequences"
                " WHERE last_value IS NOT NULL"
            ).fetchall()
            for (sequence,) in used:
                conn.execute(f"ALTER SEQUENCE {sequence} RESTART")
            return _fingerprint(conn) == self._fresh

    def close(self) -> None:
        """Drop every database kept for reuse."""
        assert _DROPPER is not None
        while self._free:
            _DROPPER.drop(self._free.pop())
        if self._admin is not None:
            self._admin.close()


def _conninfo(database: str) -> str:
    url = make_url(PG_URL).set(drivername="postgresql", database=database)
    return url.render_as_string(hide_password=False)


def _fingerprint(conn: psycopg.Connection[Any]) -> str:
    row = conn.execute(_FINGERPRINT).fetchone()
    assert row is not None
    return str(row[0])


_DROPPER: _Dropper | None = None
_DATABASES: _Databases | None = None


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[str]:
    """A migrated template database; tests get clones of it (fast, isolated)."""
    global _DROPPER, _DATABASES
    require_postgres()
    with psycopg.connect(_admin_conninfo(), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {TEMPLATE}")
        conn.execute(f"CREATE DATABASE {TEMPLATE}")
    db = Database(make_url(PG_URL).set(database=TEMPLATE).render_as_string(hide_password=False))
    upgrade(db)
    db.dispose()
    _DROPPER = _Dropper()
    _DATABASES = _Databases(TEMPLATE)
    yield TEMPLATE
    _DATABASES.close()
    _DATABASES = None
    _DROPPER.close()
    _DROPPER = None
    with psycopg.connect(_admin_conninfo(), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {TEMPLATE} WITH (FORCE)")


@pytest.fixture
def postgres_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A PostgreSQL database for one test, as a fresh clone of the template (`_Databases`)."""
    request.getfixturevalue("postgres_template")
    assert _DATABASES is not None
    name = _DATABASES.take()
    yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    _DATABASES.give_back(name)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The metadata database URL, once per backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'meta.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite database file; `settings` gives each test a copy of it.

    Migrating SQLite costs most of a second (0004 rebuilds tables), paid once
    per worker here instead of once per test: the same as PostgreSQL, whose
    tests clone a migrated template. The node still runs every migration
    check on the copy (at head: nothing to do). Tests that need a database
    without a schema take `database_url` alone (tests/integration/test_migrations.py).
    """
    path = tmp_path_factory.mktemp("sqlite_template") / "meta.db"
    db = Database(f"sqlite:///{path}")
    upgrade(db)
    db.dispose()
    # All in the one file: the last connection's close checkpointed the WAL.
    assert not path.with_name("meta.db-wal").exists()
    return path


# The timings and limits of a test node: beats and polls fast enough that a
# test waits little, limits small enough for two xdist workers side by side.
TEST_NODE_TIMINGS: dict[str, Any] = {
    "heartbeat_seconds": 0.2,
    "worker_lost_seconds": 2.0,
    "poll_seconds": 0.2,
    "shutdown_grace_seconds": 5.0,
    "stop_wait_seconds": 20.0,
    "engine_memory_limit": "512MB",
    "concurrency": 2,
}


@pytest.fixture
def settings(request: pytest.FixtureRequest, tmp_path: Path, database_url: str) -> Settings:
    """Settings for an isolated Datamill home on the backend under test, its schema at head."""
    sqlite_path = make_url(database_url).database if database_url.startswith("sqlite") else None
    if sqlite_path and not Path(sqlite_path).exists():
        template: Path = request.getfixturevalue("sqlite_template")
        shutil.copyfile(template, sqlite_path)
    return Settings(
        home=tmp_path / "home",
        database_url=database_url,
        **TEST_NODE_TIMINGS,
    )


@pytest.fixture
def node(settings: Settings) -> Iterator[Node]:
    """A migrated store with services and an admin user 'admin' (password 'secret')."""
    node = open_node(settings)
    node.store.users.create("admin", password_hash("secret"), roles=("ADMIN",))
    yield node
    node.store.close()


@pytest.fixture
def files_root(settings: Settings) -> Path:
    """The folder sources may read and sinks may write."""
    root = Path(settings.resolved_source_roots[0])
    root.mkdir(parents=True, exist_ok=True)
    return root


@pytest.fixture
def worker(node: Node) -> Iterator[Worker]:
    """An embedded worker on the node's store, shut down after the test."""
    worker = Worker(node.store, node.settings, node.wakeup)
    worker.start()
    yield worker
    worker.shutdown(grace_seconds=1.0)
