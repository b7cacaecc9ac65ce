"""The DuckDB engine: runs imports, workbooks and exports, each in a connection of its own."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import duckdb
import pyarrow as pa

from datamill.domain import runlog as rl
from datamill.domain.definitions import ImportJobDefinition, WorkbookDefinition
from datamill.engine.base import (
    EventCallback,
    ProgressCallback,
    RunRequest,
    RunResult,
    ignore_event,
)
from datamill.engine.duckdb import exports
from datamill.engine.duckdb.database import (
    RECYCLE_BYTES,
    SharedDatabase,
    database_config,
    duckdb_message,
    open_database,
    resident_bytes,
)
from datamill.engine.duckdb.imports import run_import
from datamill.engine.duckdb.session import Session
from datamill.engine.duckdb.workbooks import run_workbook
from datamill.engine.runs import parse_request, workbook_inputs
from datamill.engine.windows import OUTPUT_FOLDER
from datamill.errors import DatamillError, JobFailed


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
                used = self._shared = SharedDatabase(used.request)
            elif used is self._workbooks:
                used = self._workbooks = SharedDatabase.for_workbooks(used.request)
        if self._keep_warm and used is not None and used in (self._shared, self._workbooks):
            # The next run is most likely of the same kind as the last one.
            used.prepare_next()
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
        definition = parse_request(request)
        if isinstance(definition, WorkbookDefinition):
            return self._run_workbook(request, definition, progress)
        if request.shared_database:
            session = self._shared_session(request, progress, workbook=False)
        else:
            session = self._own_session(request, progress)
        return self._finish(
            session,
            lambda: (
                run_import(session, definition)
                if isinstance(definition, ImportJobDefinition)
                else exports.run_export(session, definition)
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
                    session,
                    definition,
                    workbook_inputs(session.request, definition),
                    session.staging_dir,
                ),
            )
        session = self._shared_session(request, progress, workbook=True)
        window = session.shared.window if session.shared is not None else None
        assert window is not None
        try:
            real = workbook_inputs(session.request, definition)
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
            raise JobFailed(session.shown(duckdb_message(error))) from None
        except (OSError, pa.ArrowException) as error:
            raise JobFailed(session.shown(f"cannot read or write a file: {error}")) from None
        finally:
            # The sources are let go now, even where the database closes later.
            session.release_files()
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
