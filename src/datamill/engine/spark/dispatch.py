"""The Spark engine: workbooks and file exports on Spark through Spark Connect.

With `spark_remote` set the engine talks to that cluster; without, it starts a
local Spark Connect server for its process (engine/spark/server.py) on first use.
"""

from __future__ import annotations

import os

from datamill.domain import runlog as rl
from datamill.domain.definitions import (
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
from datamill.engine.spark.session import SparkRun
from datamill.errors import DatamillError, JobFailed


class SparkEngine:
    """Runs one job definition on Spark and stages its output."""

    def __init__(self, *, keep_warm: bool = False) -> None:
        self._keep_warm = keep_warm
        self._local: LocalServer | None = None
        # Imports and database exports go through the worker (see imports.py).
        self._duckdb = DuckDBEngine(keep_warm=keep_warm)

    def _remote(self, request: RunRequest) -> str:
        if request.spark_remote:
            return request.spark_remote
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
        if isinstance(definition, ImportJobDefinition) or (
            isinstance(definition, ExportJobDefinition)
            and not isinstance(definition.sink, FileSink)
        ):
            return imports.run_import(self._duckdb, request, progress, events)
        events(rl.pending(rl.STARTED, engine="spark", pid=os.getpid()))
        run = SparkRun(request, self._remote(request), progress, events)
        failed = True
        try:
            if isinstance(definition, WorkbookDefinition):
                result = workbooks.run_workbook(run, definition)
            else:
                result = exports.run_export(run, definition)
            failed = False
        except DatamillError:
            raise
        except OSError as error:
            raise JobFailed(f"cannot read or write a file: {error}") from None
        finally:
            run.close()
            if failed and run.where:
                run.event(rl.FAILED_AT, **run.where)
        run.progress.report(1.0)
        return result

    def between_runs(self) -> None:
        """Let the worker's DuckDB tidy up; Spark keeps nothing between runs."""
        self._duckdb.between_runs()

    def close(self) -> None:
        """Stop the local server, if this engine started one."""
        self._duckdb.close()
        if self._local is not None:
            self._local.close()
            self._local = None
