"""The Spark engine: workbooks and file exports on Spark through Spark Connect.

With `spark_remote` set the engine talks to that cluster; without, it starts a
local Spark Connect server for its process (engine/spark/server.py) on first use.
"""

from __future__ import annotations

import logging
import os

from datamill.domain import runlog as rl
from datamill.domain.definitions import (
    DatabaseSource,
    ExportJobDefinition,
    FileSink,
    ImportJobDefinition,
    WorkbookDefinition,
)
from datamill.engine.base import (
    EventCallback,
    ProgressCallback,
    RunRequest,
    RunResult,
    ignore_event,
)
from datamill.engine.duckdb import DuckDBEngine
from datamill.engine.runs import parse_request
from datamill.engine.spark import exports, imports, workbooks
from datamill.engine.spark.server import LocalServer
from datamill.engine.spark.session import HorseSession, SparkRun
from datamill.errors import DatamillError, JobFailed

log = logging.getLogger(__name__)


class SparkEngine:
    """Runs one job definition on Spark and stages its output."""

    def __init__(self, *, keep_warm: bool = False) -> None:
        self._keep_warm = keep_warm
        self._local: LocalServer | None = None
        # Database imports and exports go through the worker (see imports.py).
        self._duckdb = DuckDBEngine(keep_warm=keep_warm)
        self._session: HorseSession | None = None
        # Set once the horse's session was lost (a cluster ended it): the
        # worker knows only the horse's id and each run's, so every later run
        # has a session of its own, named by its attempt, as the worker expects.
        self._per_run = False
        # Sessions of single runs, ended after the run's answer was sent: ending
        # one on the server takes seconds on a loaded machine (measured ~2 s).
        self._ended: list[HorseSession] = []

    def _session_for(self, request: RunRequest) -> HorseSession:
        remote = self._remote(request)
        wanted = request.horse_session
        if self._per_run or wanted is None:
            # No horse's id (a caller other than the worker): the run's own session.
            return HorseSession(remote, request.attempt_id, per_run=True)
        session = self._session
        if session is not None and (session.id, session.remote) != (wanted, remote):
            session.close()  # another horse's id or another cluster: not this session
            session = self._session = None
        if session is not None and not session.alive():
            log.warning("the Spark session %s was lost; each run gets its own from now", wanted)
            session.close()
            self._session, self._per_run = None, True
            return HorseSession(remote, request.attempt_id, per_run=True)
        if session is None:
            session = self._session = HorseSession(remote, wanted)
        return session

    def _remote(self, request: RunRequest) -> str:
        if request.spark_remote:
            return request.spark_remote
        if self._local is not None and self._local.process.poll() is not None:
            # The local Spark died (out of memory, killed): its sessions went with
            # it. A new server, which never saw the horse's id, serves later runs.
            log.warning("the local Spark server ended; starting a new one")
            self._local.close()
            self._local = None
            if self._session is not None:
                self._session.close()
                self._session = None
        if self._local is None:
            server = LocalServer(threads=request.threads, temp_dir=request.temp_dir)
            try:
                server.wait()
            except BaseException:
                server.close()
                raise
            self._local = server
        return self._local.remote

    def run(
        self,
        request: RunRequest,
        progress: ProgressCallback,
        events: EventCallback = ignore_event,
    ) -> RunResult:
        """Run the request, telling `events` what happens; raise a DatamillError on failure."""
        definition = parse_request(request)
        if (
            isinstance(definition, ImportJobDefinition)
            and isinstance(definition.source, DatabaseSource)
        ) or (
            isinstance(definition, ExportJobDefinition)
            and not isinstance(definition.sink, FileSink)
        ):
            # Through the worker, which holds the connection entries and their secrets.
            return self._duckdb.run(request, progress, events)
        self._end_run_sessions()  # a caller that never calls between_runs
        session = self._session_for(request)
        events(rl.pending(rl.STARTED, engine="spark", pid=os.getpid(), session=_kind(session)))
        try:
            return self._run_in(session, request, definition, progress, events)
        except JobFailed:
            if session.per_run or session is not self._session or session.responds():
                raise
        # The horse's session was lost mid-run (the server ended or restarted
        # it): the run's work went with it. Every later run gets a session of
        # its own, which the worker can still name (the attempt's id), and this
        # run starts again on one, from its first sheet.
        log.warning("the Spark session %s was lost; each run gets its own from now", session.id)
        session.close()
        self._session, self._per_run = None, True
        session = self._session_for(request)
        events(
            rl.pending(
                rl.STARTED,
                engine="spark",
                pid=os.getpid(),
                session=_kind(session),
                again="session lost",
            )
        )
        return self._run_in(session, request, definition, progress, events)

    def _run_in(
        self,
        session: HorseSession,
        request: RunRequest,
        definition: WorkbookDefinition | ImportJobDefinition | ExportJobDefinition,
        progress: ProgressCallback,
        events: EventCallback,
    ) -> RunResult:
        run = SparkRun(request, session, progress, events)
        failed = True
        try:
            if isinstance(definition, WorkbookDefinition):
                result = workbooks.run_workbook(run, definition)
            elif isinstance(definition, ImportJobDefinition):
                result = imports.run_import(run, definition)
            else:
                result = exports.run_export(run, definition)
            failed = False
        except DatamillError:
            raise
        except OSError as error:
            raise JobFailed(f"cannot read or write a file: {error}") from None
        finally:
            run.close()
            if session.per_run:
                self._ended.append(session)
            if failed:
                run.session.used = 0.0  # the next run checks the session first
            if failed and run.where:
                run.event(rl.FAILED_AT, **run.where)
        run.progress.report(1.0)
        return result

    def between_runs(self) -> None:
        """End the last run's own Spark session, if any; the horse's stays for the next run."""
        self._end_run_sessions()
        self._duckdb.between_runs()

    def _end_run_sessions(self) -> None:
        while self._ended:
            self._ended.pop().close()

    def close(self) -> None:
        """End the horse's Spark session; stop the local server, if this engine started one."""
        self._duckdb.close()
        self._end_run_sessions()
        if self._session is not None:
            self._session.close()
            self._session = None
        if self._local is not None:
            self._local.close()
            self._local = None


def _kind(session: HorseSession) -> str:
    # The run log says whether the run used its horse's session or one of its own.
    return "run" if session.per_run else "horse"
