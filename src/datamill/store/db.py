"""Connecting to the metadata database: one interface over SQLite and PostgreSQL."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from datamill.store import precompiled, run_changes
from datamill.store.compiled_cache import SharedCompiledCache
from datamill.store.filelock import WriterFileLock

# SQLite's busy timeout (PRAGMA busy_timeout), and the longest wait on the writers' file lock.
SQLITE_BUSY_SECONDS = 30.0

# Every Database of the process compiles a statement once (store/compiled_cache.py).
_COMPILED = SharedCompiledCache()

_clock_lock = threading.Lock()
_last_now = dt.datetime.min


def utcnow() -> dt.datetime:
    """The current time as a naive UTC datetime, the way the store keeps times.

    Never earlier than a time it gave before in this process: when the host's
    clock is stepped back, a run that started after another ended must still
    show a later start time.
    """
    global _last_now
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    with _clock_lock:
        _last_now = max(_last_now, now)
        return _last_now


def normalize_url(url: str) -> str:
    """Pick psycopg 3 for a bare postgresql:// URL."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


class Database:
    """A SQLAlchemy engine plus the transaction habits of each backend."""

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url = normalize_url(url)
        self.is_sqlite = self.url.startswith("sqlite")
        if self.is_sqlite:
            # As many pooled connections as the API has threads: opening an
            # overflow connection per request (with its PRAGMAs) is slow.
            self.engine: Engine = sa.create_engine(
                self.url,
                connect_args={"timeout": SQLITE_BUSY_SECONDS, "check_same_thread": False},
                pool_size=40,
                max_overflow=10,
                execution_options={"compiled_cache": _COMPILED},
            )
            _configure_sqlite(self.engine)
        else:
            self.engine = sa.create_engine(
                self.url,
                pool_size=pool_size,
                max_overflow=20,
                pool_pre_ping=True,
                execution_options={"compiled_cache": _COMPILED},
            )
        run_changes.install(self.engine)
        # Write transactions' connections come with the option already set:
        # setting it per transaction was a tenth of opening one.
        self._immediate = self.engine.execution_options(datamill_immediate=True)
        # Called (in the writing thread) after each commit that changed a run.
        self.run_change_listeners: list[Callable[[], None]] = []
        self._writers: contextlib.AbstractContextManager[Any] = (
            threading.RLock() if self.is_sqlite else contextlib.nullcontext()
        )
        # Writers of other processes on the same file (SQLite; see store/filelock.py).
        self._file_lock = _writer_file_lock(self.engine) if self.is_sqlite else None
        # Write transactions this process has open (under _writers): the
        # file lock is taken by the outermost only.
        self._depth = 0
        # The same pool; connections taken through it run each statement on its own.
        self._autocommit_reads: Engine | None = (
            None if self.is_sqlite else self.engine.execution_options(isolation_level="AUTOCOMMIT")
        )

    @property
    def dialect(self) -> str:
        """'sqlite' or 'postgresql'."""
        return self.engine.dialect.name

    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        """A connection for reading.

        SQLite: a deferred transaction, so all reads see one snapshot.
        PostgreSQL: autocommit. Under its READ COMMITTED every statement sees
        the newest commits whether or not a transaction is open, so BEGIN and
        COMMIT would be two round trips that change nothing.
        """
        if self._autocommit_reads is not None:
            with self._autocommit_reads.connect() as conn:
                yield conn
            return
        with self.engine.connect() as conn, conn.begin():
            yield conn

    @contextlib.contextmanager
    def write(self) -> Iterator[Connection]:
        """A transaction for writing.

        On SQLite it starts with BEGIN IMMEDIATE: taking the write lock up front
        means two writers queue on the busy timeout instead of one failing at
        once when it tries to upgrade a read lock. Writers of one process queue
        on a Python lock first: SQLite's busy handler sleeps 1, 2, 5, 10 ms...
        between tries, so a writer would wait milliseconds for a lock that
        was released microseconds after it asked. Writers of different
        processes (the API and its worker child) queue on a file lock next,
        for the same reason (store/filelock.py).
        """
        with self._writers, self._immediate.connect() as conn, self._across_processes():
            with conn.begin():
                yield conn
            changed = run_changes.committed_changes(conn)
        if changed:
            for listener in list(self.run_change_listeners):
                listener()

    @contextlib.contextmanager
    def _across_processes(self) -> Iterator[None]:
        """Hold the writers' file lock around a write transaction (outermost only)."""
        lock = self._file_lock
        if lock is None:  # PostgreSQL, or SQLite in memory: nothing to share
            yield
            return
        self._depth += 1
        held = self._depth == 1 and lock.acquire()
        try:
            yield
        finally:
            self._depth -= 1
            if held:
                lock.release()

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()
        if self._file_lock is not None:
            self._file_lock.close()


def _writer_file_lock(engine: Engine) -> WriterFileLock | None:
    """The writers' file lock of a SQLite database file; None for one in memory."""
    path = engine.url.database
    if not path or path == ":memory:" or path.startswith("file:") or engine.url.query:
        return None
    return WriterFileLock(os.path.abspath(path), SQLITE_BUSY_SECONDS)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's begin event, not the driver, decide how transactions start.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_SECONDS * 1000)}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        options = conn.get_execution_options()
        if options.get("datamill_immediate"):
            # On the driver's cursor: through SQLAlchemy's execution path it
            # cost as much as a statement of the transaction's own.
            precompiled.run(conn, "BEGIN IMMEDIATE")
        elif options.get("datamill_begin") == "EXCLUSIVE":  # migrations (store/migrate.py)
            conn.exec_driver_sql("BEGIN EXCLUSIVE")
        else:
            conn.exec_driver_sql("BEGIN")
