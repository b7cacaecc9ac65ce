"""The DuckDB engine: runs import jobs, workbooks and export jobs, each in a fresh connection."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import duckdb
import pyarrow as pa
from pydantic import ValidationError

from datamill.domain import runlog as rl
from datamill.domain.definitions import (
    CsvSource,
    DatabaseSource,
    ImportJobDefinition,
    WorkbookDefinition,
    definition_model,
)
from datamill.domain.status import JobStatus
from datamill.engine import sinks, sources
from datamill.engine.base import (
    EventCallback,
    ProgressCallback,
    RunRequest,
    RunResult,
    ignore_event,
)
from datamill.engine.sources import Output, Scan, lit, lit_list
from datamill.engine.workbooks import OUTPUT_FOLDER, Window, run_workbook, workbook_inputs
from datamill.errors import DatamillError, InvalidDefinition, InvalidInput, InvalidSql, JobFailed
from datamill.processes import pid_alive

_POLL_SECONDS = 0.1
_PREVIEW_RECORDS = 5_000
_MESSAGE_LIMIT = 1500
# DuckDB errors that mean the user's SQL is wrong rather than the run failing.
_SQL_ERRORS = (
    duckdb.BinderException,
    duckdb.CatalogException,
    duckdb.ParserException,
    duckdb.PermissionException,
)


def _duckdb_message(error: duckdb.Error) -> str:
    text = str(error).strip()
    return text if len(text) <= _MESSAGE_LIMIT else text[:_MESSAGE_LIMIT] + " ..."


class _Progress:
    """One monotonic 0..1 fraction for the callback, fed from steps and poll threads."""

    def __init__(self, callback: ProgressCallback) -> None:
        self._callback = callback
        self._lock = threading.Lock()
        self._reported = 0.0
        self.done = 0.0

    def report(self, fraction: float) -> None:
        """Pass `fraction` on if it moves forward."""
        with self._lock:
            fraction = min(1.0, fraction)
            if fraction <= self._reported:
                return
            self._reported = fraction
            self._callback(fraction)

    def advance(self, share: float) -> None:
        """Mark `share` more of the run as done."""
        self.done = min(1.0, self.done + share)
        self.report(self.done)


class _Watch:
    """One running statement whose progress the poller reports."""

    __slots__ = ("due", "session", "share", "start")

    def __init__(self, session: Session, start: float, share: float, due: float) -> None:
        self.session = session
        self.start = start
        self.share = share
        self.due = due

    def poll(self) -> bool:
        """Report the statement's progress; False once the callback refused (never raises)."""
        try:
            percent = float(self.session.con.query_progress())
        except Exception:  # the query may just have ended; polling must never fail a run
            return True
        if percent < 0:
            return True
        try:
            self.session.progress.report(self.start + self.share * min(percent, 100.0) / 100)
        except BaseException as error:
            # The callback refused (the worker stops the run, say): stop the query
            # and let the statement's thread raise the callback's exception.
            self.session.callback_error = error
            self.session.con.interrupt()
            return False
        return True


class _Poller:
    """One long-lived thread per process that polls the progress of running statements.

    A thread started and joined per statement cost a trivial run more of the
    warm child's CPU than its query: now a statement is only registered, and
    the thread wakes when a registered statement's next poll is due (the
    first `_POLL_SECONDS` after it started, as before), else sleeps.
    Polling and reporting happen under the lock, so once `unwatch` returns
    nothing reports for that statement any more.
    """

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._watched: dict[int, _Watch] = {}
        self._next_token = 0
        self._idle = False
        self._thread: threading.Thread | None = None
        self._pid = 0

    def watch(self, session: Session, start: float, share: float) -> int:
        """Report `share` of the session's progress, from `start`, until unwatched; a token."""
        with self._lock:
            self._next_token += 1
            token = self._next_token
            self._watched[token] = _Watch(session, start, share, time.monotonic() + _POLL_SECONDS)
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                self._pid = os.getpid()  # a forked child has no thread of its parent's
                self._idle = False
                self._thread = threading.Thread(
                    target=self._run, name="duckdb-progress", daemon=True
                )
                self._thread.start()
            elif self._idle:
                # A sleeping thread only wakes for this; a timed wait ends by itself.
                self._idle = False
                self._lock.notify()
        return token

    def unwatch(self, token: int) -> None:
        """Stop reporting the statement; waits for a poll of it under way."""
        with self._lock:
            self._watched.pop(token, None)

    def _run(self) -> None:
        with self._lock:
            while True:
                now = time.monotonic()
                for token, watch in list(self._watched.items()):
                    if watch.due <= now:
                        watch.due = now + _POLL_SECONDS
                        if not watch.poll():
                            del self._watched[token]
                if self._watched:
                    due = min(watch.due for watch in self._watched.values())
                    self._lock.wait(max(0.0, due - time.monotonic()))
                else:
                    self._idle = True
                    self._lock.wait()


_POLLER = _Poller()


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
        raise InvalidInput(f"cannot start DuckDB: {_duckdb_message(error)}") from None
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
            raise InvalidInput(f"cannot start DuckDB: {_duckdb_message(error)}") from None
        self.opened_rss = resident_bytes()

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
        """A new connection for one run."""
        try:
            con = self.con.cursor()
            _show_progress(con)
        except duckdb.Error as error:
            raise JobFailed(f"cannot start DuckDB: {_duckdb_message(error)}") from None
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
        with contextlib.suppress(duckdb.Error):
            self.con.close()
        shutil.rmtree(self.spill_dir, ignore_errors=True)
        if self.window is not None:
            self.window.close()


def _file_roots(request: RunRequest) -> tuple[str, ...]:
    """The operator's source and sink roots; callers that give none fall back to the run's."""
    return request.file_roots or request.roots.source_roots


class Session:
    """The DuckDB connection of one run, with progress and error translation."""

    def __init__(
        self,
        request: RunRequest,
        callback: ProgressCallback,
        spare: duckdb.DuckDBPyConnection | None = None,
        shared: SharedDatabase | None = None,
        events: EventCallback = ignore_event,
    ) -> None:
        self.request = request
        self.progress = _Progress(callback)
        self.emit = events
        # Where the run is (sheet, source): named in the log if it fails there.
        self.where: dict[str, Any] = {}
        self.callback_error: BaseException | None = None
        self.staging_dir = os.path.realpath(request.staging_dir)
        os.makedirs(self.staging_dir, exist_ok=True)
        self.shared = shared
        if shared is not None:
            # Locked down already, to the worker's folders or the window.
            self.locked = True
            self.owns_temp_dir = False
            self.temp_dir = shared.spill_dir
            self.con = shared.connect()
            return
        self.locked = False
        self.owns_temp_dir = request.temp_dir is None
        # Spill files go to the run's staging area unless the operator chose a folder.
        self.temp_dir = os.path.realpath(
            request.temp_dir or os.path.join(self.staging_dir, ".duckdb_tmp")
        )
        os.makedirs(self.temp_dir, exist_ok=True)
        self.con = spare if spare is not None else open_database(database_config(request))

    def event(self, event: str, **detail: Any) -> None:
        """Tell the run's log that something happened."""
        self.emit(rl.pending(event, **detail))

    def close(self) -> None:
        """Close the connection and remove spill files."""
        self.con.close()
        if self.owns_temp_dir:
            shutil.rmtree(self.temp_dir, ignore_errors=True)

    def execute(
        self,
        sql: str,
        params: Sequence[Any] = (),
        *,
        context: str,
        share: float = 0.0,
        user_sql: str | None = None,
    ) -> list[tuple[Any, ...]]:
        """Run one statement; `share` of the run's progress follows DuckDB's progress.

        DuckDB errors become JobFailed naming `context`, or InvalidSql naming
        `user_sql` when the statement runs a user's query that DuckDB refused.
        """
        watching = _POLLER.watch(self, self.progress.done, share) if share > 0 else None
        try:
            rows = self.con.execute(sql, list(params)).fetchall()
        except duckdb.Error as error:
            if self.callback_error is not None:
                raise self.callback_error from None
            message = _duckdb_message(error)
            if user_sql is not None and isinstance(error, _SQL_ERRORS):
                raise InvalidSql(f"{user_sql}: {message}") from None
            raise JobFailed(f"{context}: {message}") from None
        finally:
            if watching is not None:
                _POLLER.unwatch(watching)
        if self.callback_error is not None:
            raise self.callback_error
        self.progress.advance(share)
        return rows

    def lock_down(self, files: Sequence[str]) -> None:
        """Let DuckDB touch only `files`, the staging and the spill folder, for good.

        Defense in depth: whatever SQL gets this far can no longer read other
        files, attach databases, load extensions or undo these settings.
        """
        if self.locked:
            return
        self.locked = True
        dirs = [self.staging_dir, self.temp_dir]
        statements = [
            f"SET allowed_paths = {lit_list([os.path.realpath(f) for f in files])}",
            f"SET allowed_directories = {lit_list(dirs)}",
            "SET enable_external_access = false",
            "SET python_enable_replacements = false",
            "SET lock_configuration = true",
        ]
        for statement in statements:
            self.execute(statement, context="locking down DuckDB")


class DuckDBEngine:
    """Runs one job definition on DuckDB and stages its output.

    A request with `shared_database` runs in a connection of a database this
    engine keeps (see SharedDatabase): workbooks in the workbook database,
    locked to the engine's window, imports and exports in the trusted one.
    Otherwise every run gets a fresh database, locked down to its own files;
    opening and closing one costs tens of milliseconds, so a long-lived engine
    (a warm work horse) may open the next run's database and close the last
    one's between runs, off the critical path: see `between_runs`.
    """

    def __init__(self, *, keep_warm: bool = False) -> None:
        self._keep_warm = keep_warm
        self._spare: tuple[dict[str, Any], duckdb.DuckDBPyConnection] | None = None
        self._finished: list[Session] = []
        self._last_config: dict[str, Any] | None = None
        self._shared: SharedDatabase | None = None
        self._workbooks: SharedDatabase | None = None
        self._last_used: SharedDatabase | None = None
        self._events: EventCallback = ignore_event

    @property
    def shared_database(self) -> SharedDatabase | None:
        """The trusted database of imports and exports, once one has run."""
        return self._shared

    @property
    def workbook_database(self) -> SharedDatabase | None:
        """The database of workbooks (user SQL), once one has run."""
        return self._workbooks

    def between_runs(self) -> None:
        """Close finished runs' databases and open the next run's in advance.

        A shared database keeps the memory a big run used (DuckDB returns its
        buffer pool to the system only when the database closes), so the one
        the last run used is replaced by a fresh one if it grew by more than
        RECYCLE_BYTES.
        """
        while self._finished:
            self._finished.pop().close()
        used, self._last_used = self._last_used, None
        if used is not None and resident_bytes() - used.opened_rss > RECYCLE_BYTES:
            used.close()
            if used is self._shared:
                self._shared = SharedDatabase(used.request)
            elif used is self._workbooks:
                self._workbooks = SharedDatabase.for_workbooks(used.request)
        if self._keep_warm and self._spare is None and self._last_config is not None:
            self._spare = (self._last_config, open_database(self._last_config))

    def close(self) -> None:
        """Close every database this engine holds."""
        self.between_runs()
        if self._spare is not None:
            self._spare[1].close()
            self._spare = None
        for database in (self._shared, self._workbooks):
            if database is not None:
                database.close()
        self._shared = self._workbooks = None

    def _take_spare(self, config: dict[str, Any]) -> duckdb.DuckDBPyConnection | None:
        spare, self._spare = self._spare, None
        if spare is None:
            return None
        if spare[0] == config:
            return spare[1]
        spare[1].close()
        return None

    def _own_session(self, request: RunRequest, progress: ProgressCallback) -> Session:
        config = database_config(request)
        self._last_config = config
        return Session(request, progress, self._take_spare(config), events=self._events)

    def _shared_session(
        self, request: RunRequest, progress: ProgressCallback, *, workbook: bool
    ) -> Session:
        database = self._workbooks if workbook else self._shared
        if database is not None and database.key != SharedDatabase.key_of(request):
            database.close()
            database = None
        if database is None:
            database = (
                SharedDatabase.for_workbooks(request) if workbook else SharedDatabase(request)
            )
        if workbook:
            self._workbooks = database
        else:
            self._shared = database
        self._last_used = database
        return Session(request, progress, shared=database, events=self._events)

    def _forget_if_broken(self, database: SharedDatabase | None) -> None:
        # A fatal DuckDB error invalidates the whole database: start afresh.
        if database is None or database.healthy():
            return
        database.close()
        if database is self._shared:
            self._shared = None
        if database is self._workbooks:
            self._workbooks = None

    def run(
        self,
        request: RunRequest,
        progress: ProgressCallback,
        events: EventCallback = ignore_event,
    ) -> RunResult:
        """Run the request, telling `events` what happens; raise a DatamillError on failure."""
        self._events = events
        events(rl.pending(rl.STARTED, engine="duckdb", pid=os.getpid()))
        model = definition_model(request.kind)
        try:
            definition = model.model_validate(request.definition)
        except ValidationError as error:
            raise InvalidDefinition(f"invalid {request.kind.value} definition: {error}") from None
        if isinstance(definition, WorkbookDefinition):
            return self._run_workbook(request, definition, progress)
        if request.shared_database:
            session = self._shared_session(request, progress, workbook=False)
        else:
            session = self._own_session(request, progress)
        return self._finish(
            session,
            lambda: (
                _run_import(session, definition)
                if isinstance(definition, ImportJobDefinition)
                else sinks.run_export(session, definition)
            ),
        )

    def _run_workbook(
        self, request: RunRequest, definition: WorkbookDefinition, progress: ProgressCallback
    ) -> RunResult:
        if not request.shared_database:
            session = self._own_session(request, progress)
            return self._finish(
                session,
                lambda: run_workbook(
                    session, definition, workbook_inputs(session, definition), session.staging_dir
                ),
            )
        session = self._shared_session(request, progress, workbook=True)
        window = session.shared.window if session.shared is not None else None
        assert window is not None
        try:
            real = workbook_inputs(session, definition)
        except BaseException:
            session.close()
            raise
        # Inputs are named by their place, not their sheet: nothing of the
        # data root's layout shows in the window.
        links = {name: f"{index}.parquet" for index, name in enumerate(real)}
        folder = window.open_run({links[name]: path for name, path in real.items()})
        if folder is None:
            # An input cannot be linked into the window: this run gets a
            # database of its own, locked to its own files.
            session.close()
            session = self._own_session(request, progress)
            return self._finish(
                session,
                lambda: run_workbook(session, definition, real, session.staging_dir),
            )
        inputs = {name: os.path.join(folder, link) for name, link in links.items()}
        try:
            out_dir = os.path.join(folder, OUTPUT_FOLDER)
            return self._finish(session, lambda: run_workbook(session, definition, inputs, out_dir))
        finally:
            window.close_run(folder)

    def _finish(self, session: Session, body: Callable[[], RunResult]) -> RunResult:
        failed = True
        try:
            result = body()
            failed = False
        except DatamillError:
            raise
        except duckdb.Error as error:  # a path we did not wrap: still never leak a raw error
            raise JobFailed(_duckdb_message(error)) from None
        except (OSError, pa.ArrowException) as error:
            raise JobFailed(f"cannot read or write a file: {error}") from None
        finally:
            # A run's own spill folder lies in its staging folder, which is
            # about to be published: that database must close first.
            if self._keep_warm and not session.owns_temp_dir and session.shared is None:
                self._finished.append(session)
            else:
                session.close()
            if failed:
                if session.where:
                    session.event(rl.FAILED_AT, **session.where)
                self._forget_if_broken(session.shared)
        session.progress.report(1.0)
        return result


def _bad_records(session: Session, scan: Scan, outputs: list[Output], bad: str) -> list[str]:
    """The first few records that do not match the schema, each as what does not fit."""
    checked = [o for o in outputs if o.fits() is not None]
    items = [f"{o.fits()}, {o.source.expr}" for o in checked]
    rows = session.execute(
        f"SELECT {', '.join(items)} FROM {scan.relation('example')} "
        f"WHERE {scan.readable} AND {bad} LIMIT {rl.MAX_SAMPLE_LINES}",
        context="finding the first bad records",
    )
    found = []
    for row in rows:
        for index, output in enumerate(checked):
            if not row[2 * index]:
                found.append(
                    f"column {output.name!r} value {row[2 * index + 1]!r} is not a {output.target}"
                )
                break
    return found or ["unknown"]


def _csv_rejects(session: Session, tag: str) -> tuple[int, str, list[dict[str, Any]]]:
    """How many CSV lines could not be read, the first in words, and a sample with line numbers."""
    count = session.execute(
        f"SELECT count(*) FROM (SELECT DISTINCT file_id, line FROM dm_rejects_{tag})",
        context="counting unreadable CSV lines",
    )[0][0]
    rows = session.execute(
        f"SELECT s.file_path, r.line, r.error_message, r.csv_line FROM dm_rejects_{tag} r "
        f"JOIN dm_scans_{tag} s USING (scan_id, file_id) ORDER BY r.file_id, r.line "
        f"LIMIT {rl.MAX_SAMPLE_LINES}",
        context="reading unreadable CSV lines",
    )
    sample = [
        {
            "file": os.path.basename(str(path)),
            "line": int(line),
            "text": str(text),
            "reason": str(message),
        }
        for path, line, message, text in rows
    ]
    first = (
        f"line {rows[0][1]} of {os.path.basename(str(rows[0][0]))}: {rows[0][2]}" if rows else ""
    )
    return int(count), first, sample


def _failed(problems: list[str]) -> str:
    return "found " + "; ".join(problems) + "; errorMode FAIL stops the import"


def _check_long(
    session: Session, scan: Scan, outputs: list[Output], share: float
) -> tuple[int, list[Output]]:
    """Unreadable records, and the outputs with a column whose values do not all fit made text."""
    unreadable = 0
    if scan.readable != "TRUE":
        unreadable = int(
            session.execute(
                f"SELECT count(*) FILTER (WHERE NOT {scan.readable}) FROM {scan.relation('lines')}",
                context="checking the records",
                share=share / 4,
            )[0][0]
        )
    types = lit_list([o.target or "VARCHAR" for o in outputs])
    long = sources.long_form(scan, scan.relation("check"), scan.readable)
    failing = session.execute(
        f"SELECT DISTINCT __dm_i FROM {long} WHERE NOT {sources.type_fits(types)}",
        context="checking the records",
        share=share / 2,
    )
    text = {int(row[0]) for row in failing}
    return unreadable, [
        Output(o.name, o.source, "VARCHAR") if i in text else o for i, o in enumerate(outputs)
    ]


def _source_label(source: Any) -> str:
    """The source as the log names it: its path, or the table or query of a database."""
    if isinstance(source, DatabaseSource):
        return f"database table {source.table}" if source.table else "database query"
    return str(source.path)


def _log_drops(session: Session, bad: int, unreadable: int, bad_sample: list[str]) -> None:
    """DROPPED events for records left out for their type or for being unreadable."""
    if bad:
        session.event(
            rl.DROPPED,
            count=bad,
            reason="the record does not match the schema",
            sample=[{"record": text} for text in bad_sample],
        )
    if unreadable:
        session.event(rl.DROPPED, count=unreadable, reason="the line is not a JSON object")


def _run_import(session: Session, definition: ImportJobDefinition) -> RunResult:
    """Read the source, enforce the schema, stage data.parquet."""
    source = definition.source
    declared = definition.columns
    session.where = {"source": _source_label(source)}
    scan = sources.open_scan(session, source, declared)
    header = source.header if isinstance(source, CsvSource) else True
    outputs = sources.plan_outputs(session, scan, declared, header)
    if not outputs:
        raise JobFailed("no columns could be read from the source")
    fail = definition.error_mode == "FAIL"
    checks = [(o, o.fits()) for o in outputs]
    bad_any = " OR ".join(f"NOT {f}" for _, f in checks if f is not None) or "FALSE"
    remaining = 0.99 - session.progress.done
    unreadable = bad = 0
    problems: list[str] = []
    bad_sample: list[str] = []
    if declared is None and len(outputs) > sources.LONG_FORM_ABOVE:
        # Wide and without a schema: the same check in statements whose
        # length does not grow with the width (see sources.long_form).
        unreadable, outputs = _check_long(session, scan, outputs, remaining)
        bad_any = "FALSE"
        if unreadable:
            problems.append(f"{unreadable} line(s) that are not JSON objects")
        _log_drops(session, 0, unreadable, [])
        if fail and problems:
            raise JobFailed(_failed(problems))
    elif scan.readable != "TRUE" or bad_any != "FALSE":
        items = [f"count(*) FILTER (WHERE NOT {scan.readable})"]
        items.append(f"count(*) FILTER (WHERE {scan.readable} AND ({bad_any}))")
        items += [f"count(*) FILTER (WHERE {scan.readable} AND NOT {f})" for _, f in checks if f]
        counts = session.execute(
            f"SELECT {', '.join(items)} FROM {scan.relation('check')}",
            context="checking the records",
            share=remaining / 2,
        )[0]
        unreadable, bad = int(counts[0]), int(counts[1])
        if declared is None:
            # Without a schema nothing is dropped for its type: a column with a
            # value that does not fit the detected type stays text.
            failing = iter(counts[2:])
            outputs = [
                Output(o.name, o.source, "VARCHAR") if f and next(failing) else o for o, f in checks
            ]
            bad_any, bad = "FALSE", 0
        elif bad:
            bad_sample = _bad_records(session, scan, outputs, f"({bad_any})")
            problems.append(
                f"{bad} record(s) that do not match the schema (first: {bad_sample[0]})"
            )
        if unreadable:
            problems.append(f"{unreadable} line(s) that are not JSON objects")
        _log_drops(session, bad, unreadable, bad_sample)
        if fail and problems:
            raise JobFailed(_failed(problems))
    target = os.path.join(session.staging_dir, "data.parquet")
    selects = ", ".join(o.select() for o in outputs)
    written = int(
        session.execute(
            f"COPY (SELECT {selects} FROM {scan.relation('write')} "
            f"WHERE {scan.readable} AND NOT ({bad_any})) TO {lit(target)} (FORMAT parquet)",
            context="writing the imported data",
            share=0.99 - session.progress.done,
        )[0][0]
    )
    # Staged database rows were only a means: staging must hold just the output.
    shutil.rmtree(os.path.join(session.staging_dir, "_source"), ignore_errors=True)
    broken = 0
    if scan.csv_rejects:
        broken, first, lines = _csv_rejects(session, "write")
        if broken:
            problems.append(f"{broken} CSV line(s) that could not be read (first: {first})")
            session.event(
                rl.DROPPED, count=broken, reason="the CSV line could not be read", sample=lines
            )
            if fail:
                raise JobFailed(_failed(problems))
    dropped = bad + unreadable + broken
    session.event(
        rl.READ,
        source=_source_label(source),
        files=len(scan.files),
        records=written + dropped,
        bytes=scan.source_bytes,
    )
    session.where = {}
    return RunResult(
        status=JobStatus.COMPLETED_WITH_WARNINGS if dropped else JobStatus.COMPLETED,
        success_count=written,
        failure_count=dropped,
        counters={
            "IMPORT_RECORDS": written,
            "IMPORT_BYTES": scan.source_bytes,
            "IMPORT_DROPPED_RECORDS": dropped,
            "IMPORT_PREVIEW_RECORDS": min(written, _PREVIEW_RECORDS),
            "IMPORT_OUTPUT_BYTES": os.path.getsize(target),
            "IMPORT_DROPPED_SPLITS": 0,
            "IMPORT_OUTPUT_PARTITIONS": 1,
        },
        sheets={"data": written},
        warnings=tuple(f"dropped {p}" for p in problems),
    )
