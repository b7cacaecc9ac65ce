"""The DuckDB connection of one run, with progress and error translation."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from typing import Any

import duckdb

from datamill.domain import runlog as rl
from datamill.engine.base import EventCallback, ProgressCallback, RunRequest, ignore_event
from datamill.engine.duckdb.database import (
    SharedDatabase,
    database_config,
    duckdb_message,
    open_database,
)
from datamill.engine.duckdb.literals import lit_list, literal_file
from datamill.engine.duckdb.progress import POLLER, Progress
from datamill.engine.held import HeldFiles
from datamill.errors import InvalidSql, JobFailed

# DuckDB errors that mean the user's SQL is wrong rather than the run failing.
_SQL_ERRORS = (
    duckdb.BinderException,
    duckdb.CatalogException,
    duckdb.ParserException,
    duckdb.PermissionException,
)


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
        self.progress = Progress(callback)
        self.emit = events
        # Where the run is (sheet, source): named in the log if it fails there.
        self.where: dict[str, Any] = {}
        self.callback_error: BaseException | None = None
        # The run's source files, open from their check to the run's end (engine/held.py).
        self.held: HeldFiles | None = None
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

    def hold(self, files: Sequence[str]) -> list[str]:
        """Hold the checked `files` open for the run; the paths DuckDB reads them by."""
        assert self.held is None, "a run holds one set of source files"
        self.held = HeldFiles(files)
        return self.held.paths()

    def shown(self, text: str) -> str:
        """`text` naming the held source files by their real paths, as the user knows them."""
        return text if self.held is None else self.held.named(text)

    def release_files(self) -> None:
        """Close the held source files (the run has read them)."""
        if self.held is not None:
            self.held.close()

    def close(self) -> None:
        """Close the connection and the held source files, and remove spill files."""
        self.release_files()
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
        watching = POLLER.watch(self, self.progress.done, share) if share > 0 else None
        try:
            rows = self.con.execute(sql, list(params)).fetchall()
        except duckdb.Error as error:
            if self.callback_error is not None:
                raise self.callback_error from None
            message = self.shown(duckdb_message(error))
            if user_sql is not None and isinstance(error, _SQL_ERRORS):
                raise InvalidSql(f"{user_sql}: {message}") from None
            raise JobFailed(f"{context}: {message}") from None
        finally:
            if watching is not None:
                POLLER.unwatch(watching)
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
            f"SET allowed_paths = {lit_list(_allowed(files))}",
            f"SET allowed_directories = {lit_list(dirs)}",
            "SET enable_external_access = false",
            "SET python_enable_replacements = false",
            "SET lock_configuration = true",
        ]
        for statement in statements:
            self.execute(statement, context="locking down DuckDB")


def _allowed(files: Sequence[str]) -> list[str]:
    """Each file as DuckDB opens it and as the readers name it (wildcards escaped).

    DuckDB checks the name it was given as well as the file it opens; an
    escaped name matches only its own file, so allowing it widens nothing.
    """
    names: list[str] = []
    for f in files:
        real = os.path.realpath(f)
        names += dict.fromkeys([real, literal_file(real), literal_file(f)])
    return names
