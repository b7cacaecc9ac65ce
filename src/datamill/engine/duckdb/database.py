"""DuckDB databases: a fresh one per run, or one a process keeps (SharedDatabase)."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from typing import Any

import duckdb

from datamill.engine.base import RunRequest
from datamill.engine.duckdb.literals import lit_list
from datamill.engine.windows import Window
from datamill.errors import InvalidInput, JobFailed
from datamill.processes import pid_alive

_MESSAGE_LIMIT = 1500


def duckdb_message(error: duckdb.Error) -> str:
    """DuckDB's error text, cut to a length a log and a status can hold."""
    text = str(error).strip()
    return text if len(text) <= _MESSAGE_LIMIT else text[:_MESSAGE_LIMIT] + " ..."


def database_config(request: RunRequest) -> dict[str, Any]:
    """The DuckDB settings a run's fresh database is opened with."""
    return {
        "memory_limit": request.memory_limit,
        "threads": request.threads,
        "temp_directory": os.path.realpath(
            request.temp_dir or os.path.join(request.staging_dir, ".duckdb_tmp")
        ),
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": False,
        # DuckDB 2.0 starts 8 threads per database for asynchronous "tasks like
        # I/O" (its setting's words). A run's database reads and writes local
        # files only (external access is off; object-store sources are copied
        # in first, engine/object_runs.py), and local scans and writes of 20M
        # rows took as long without them; woken at every statement that writes
        # a file, they cost a trivial run 0.5-1.4 ms of CPU on 2 busy cores (a
        # third of bench/throughput.py's baseline loop; docs/performance.md,
        # tenth round).
        "async_threads": 0,
    }


def _show_progress(con: duckdb.DuckDBPyConnection) -> None:
    # query_progress() answers -1 unless the progress bar is on; printing stays off.
    con.execute("SET enable_progress_bar = true; SET enable_progress_bar_print = false")


def open_database(config: dict[str, Any]) -> duckdb.DuckDBPyConnection:
    """A fresh in-memory DuckDB database with progress reporting on."""
    try:
        con = duckdb.connect(":memory:", config=config)
        _show_progress(con)
    except duckdb.Error as error:
        raise InvalidInput(f"cannot start DuckDB: {duckdb_message(error)}") from None
    return con


_SPILL_PREFIX = "engine-"
# How much a shared database may grow a process before it is replaced.
RECYCLE_BYTES = 256 * 1024 * 1024


def resident_bytes() -> int:
    """This process's resident memory (Linux), 0 where it cannot be read."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _remove_dead_spill_folders(parent: str) -> None:
    """Spill folders of engine processes that were killed are never cleaned otherwise."""
    with contextlib.suppress(OSError):
        for name in os.listdir(parent):
            pid = name.removeprefix(_SPILL_PREFIX).split("-")[0]
            if name.startswith(_SPILL_PREFIX) and pid.isdigit() and not pid_alive(int(pid)):
                shutil.rmtree(os.path.join(parent, name), ignore_errors=True)


class SharedDatabase:
    """One process's long-lived DuckDB database; every run gets its own connection in it.

    Creating a DuckDB database costs 15-25 ms of CPU, more than a trivial run,
    so a warm work horse keeps its databases. Each is locked down once, for
    good; a run's connection sees only its own TEMP views, and closing the
    connection drops them. Two kinds (see docs/decisions.md):

    - the *trusted* database (`SharedDatabase(request)`) runs imports and
      exports, whose SQL Datamill builds itself from checked paths: locked to
      the data root with staging, its spill folder and the operator's file
      roots;
    - the *workbook* database (`SharedDatabase.for_workbooks`) runs user SQL:
      locked to its spill folder and the engine's window only (see
      engine/workbooks.py), where a run finds its own inputs and nothing else.
    """

    def __init__(self, request: RunRequest, *, window: Window | None = None) -> None:
        parent = os.path.realpath(request.temp_dir or tempfile.gettempdir())
        _remove_dead_spill_folders(parent)
        kind = "workbook" if window is not None else "trusted"
        # A folder per database: DuckDB's spill file names are not unique across databases.
        self.spill_dir = os.path.join(parent, f"{_SPILL_PREFIX}{os.getpid()}-{kind}")
        shutil.rmtree(self.spill_dir, ignore_errors=True)
        os.makedirs(self.spill_dir)
        self.window = window
        if window is not None:
            self.directories = [window.root]
        else:
            staging_root = os.path.dirname(os.path.realpath(request.staging_dir))
            self.directories = sorted(
                {
                    os.path.realpath(request.data_root or staging_root),
                    staging_root,
                    self.spill_dir,
                    *(os.path.realpath(r) for r in _file_roots(request)),
                }
            )
        config = database_config(request) | {"temp_directory": self.spill_dir}
        self.key = self.key_of(request)
        self.request = request
        self.con = open_database(config)
        try:
            # Unlike the per-run lock-down, lock_configuration stays off: a run's
            # connection must still turn progress reporting on for itself. These
            # cannot be undone while the database is open.
            self.con.execute(f"SET allowed_directories = {lit_list(self.directories)}")
            self.con.execute("SET enable_external_access = false")
            # No Python variable of the engine's frames is ever a table.
            self.con.execute("SET python_enable_replacements = false")
        except duckdb.Error as error:
            self.con.close()
            raise InvalidInput(f"cannot start DuckDB: {duckdb_message(error)}") from None
        self.opened_rss = resident_bytes()
        # A connection made between runs for the next one (see `prepare_next`).
        self._next: duckdb.DuckDBPyConnection | None = None

    @classmethod
    def for_workbooks(cls, request: RunRequest) -> SharedDatabase:
        """A database for user SQL, locked to a new window below the staging root."""
        window = Window(os.path.dirname(os.path.realpath(request.staging_dir)))
        try:
            return cls(request, window=window)
        except BaseException:
            window.close()
            raise

    @staticmethod
    def key_of(request: RunRequest) -> tuple[Any, ...]:
        """What must be equal for two requests to share a database."""
        return (
            request.memory_limit,
            request.threads,
            request.temp_dir,
            request.data_root,
            # Staging folders of one worker share their parent; no realpath per run.
            os.path.dirname(request.staging_dir),
            # Operator-wide folders, never a run's own: those change from run to run.
            _file_roots(request),
        )

    def connect(self) -> duckdb.DuckDBPyConnection:
        """A new connection for one run: never used before, with progress reporting on."""
        ready, self._next = self._next, None
        if ready is not None:
            return ready
        return self._new_connection()

    def prepare_next(self) -> None:
        """Make the next run's connection now, between runs, off its critical path.

        Turning progress reporting on costs a connection two SET statements
        (~0.16 ms of CPU, more than a trivial run's other set-up, and DuckDB
        accepts them neither globally nor as database options); made here,
        after the last run's answer went out, the next run does not wait for
        them. The connection is a fresh one that no run has used, exactly
        what `connect` would make.
        """
        if self._next is None:
            self._next = self._new_connection()

    def _new_connection(self) -> duckdb.DuckDBPyConnection:
        try:
            con = self.con.cursor()
            _show_progress(con)
        except duckdb.Error as error:
            raise JobFailed(f"cannot start DuckDB: {duckdb_message(error)}") from None
        return con

    def healthy(self) -> bool:
        """Whether the database still answers (a fatal error invalidates it)."""
        try:
            con = self.con.cursor()
            try:
                con.execute("SELECT 1").fetchall()
            finally:
                con.close()
        except duckdb.Error:
            return False
        return True

    def close(self) -> None:
        """Close the database and remove its spill folder (and window)."""
        ready, self._next = self._next, None
        with contextlib.suppress(duckdb.Error):
            if ready is not None:
                ready.close()
            self.con.close()
        shutil.rmtree(self.spill_dir, ignore_errors=True)
        if self.window is not None:
            self.window.close()


def _file_roots(request: RunRequest) -> tuple[str, ...]:
    """The operator's source and sink roots; callers that give none fall back to the run's."""
    return request.file_roots or request.roots.source_roots
