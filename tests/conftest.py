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


_DROPPER: _Dropper | None = None


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[str]:
    """A migrated template database; each test clones it (fast, isolated)."""
    global _DROPPER
    require_postgres()
    with psycopg.connect(_admin_conninfo(), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {TEMPLATE}")
        conn.execute(f"CREATE DATABASE {TEMPLATE}")
    db = Database(make_url(PG_URL).set(database=TEMPLATE).render_as_string(hide_password=False))
    upgrade(db)
    db.dispose()
    _DROPPER = _Dropper()
    yield TEMPLATE
    _DROPPER.close()
    _DROPPER = None
    with psycopg.connect(_admin_conninfo(), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {TEMPLATE} WITH (FORCE)")


@pytest.fixture
def postgres_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh PostgreSQL database for one test, dropped after it (in the background)."""
    template = request.getfixturevalue("postgres_template")
    name = f"datamill_t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_admin_conninfo(), autocommit=True) as conn:
        clone_template(conn, name, template)
    yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    assert _DROPPER is not None
    _DROPPER.drop(name)


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
        heartbeat_seconds=0.2,
        worker_lost_seconds=2.0,
        poll_seconds=0.2,
        shutdown_grace_seconds=5.0,
        stop_wait_seconds=20.0,
        engine_memory_limit="512MB",
        concurrency=2,
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
