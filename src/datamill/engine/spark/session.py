"""Spark Connect sessions: one per work horse, every run's operations tagged.

A work horse keeps one Spark Connect session for all its runs, named by the
id the worker gave the horse (`RunRequest.horse_session`): no session to set
up per run, and the schema of each Parquet file runs read is inferred by
Spark once, not per run. Each run tags its
operations; a stop inside the run interrupts its tag, and the worker, after
killing a horse mid-run, connects to the horse's session and interrupts and
ends it (`interrupt_run`), which cancels the cluster's work. A run's views
are dropped when it ends; a sheet's SQL can only name its own workbook's
earlier sheets (engine/sql.py), never another run's.
"""

from __future__ import annotations

import collections
import os
import re
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar, cast

from datamill.domain import runlog as rl
from datamill.engine.base import EventCallback, ProgressCallback, RunRequest
from datamill.engine.duckdb.progress import Progress
from datamill.engine.spark.inputs import on_this_machine
from datamill.engine.spark.schemas import footer_schema
from datamill.errors import InvalidSql, JobFailed

if TYPE_CHECKING:
    from pyspark.sql.connect.session import SparkSession
    from pyspark.sql.connect.shell.progress import ProgressHandler

_MESSAGE_LIMIT = 1500
T = TypeVar("T")
# Spark errors that mean the user's SQL is wrong rather than the run failing.
_SQL_ERROR_CLASSES = ("AnalysisException", "ParseException")
_TOKEN_RE = re.compile(r"(;token=)[^;]*", re.IGNORECASE)
# Input file schemas a horse's session keeps (least recently used dropped first).
SOURCE_VIEWS = 64
# A session idle this long is checked before a run uses it (a cluster ends
# idle sessions, by default after an hour).
IDLE_CHECK_SECONDS = 60.0
StageHandler = Callable[[list[Any], bool], None]


def shown_remote(remote: str) -> str:
    """A Spark Connect address as a message may show it: its token masked."""
    return _TOKEN_RE.sub(r"\1***", remote)


def session_id(request: RunRequest) -> str:
    """The Spark Connect session id of a run: the same in the work horse and the worker."""
    return request.attempt_id


def run_tag(request: RunRequest) -> str:
    """The tag of every Spark operation of a run."""
    return f"datamill-{request.execution_id}-{request.attempt_id}"


def connect(remote: str, session: str) -> SparkSession:
    """A new Spark Connect client of the session `session` at `remote`."""
    from pyspark.sql.connect.session import SparkSession

    url = remote.rstrip("/")
    url += f";session_id={session}" if "/;" in url else f"/;session_id={session}"
    return SparkSession.builder.remote(url).create()


def interrupt_run(request: RunRequest) -> None:
    """Interrupt and end the sessions a killed run's work may be in: its horse's, its own."""
    if request.spark_remote is None:
        return  # a local server dies with the run's process
    from pyspark.errors import PySparkException

    for session in dict.fromkeys(s for s in (request.horse_session, request.attempt_id) if s):
        spark = connect(request.spark_remote, session)
        try:
            spark.interruptAll()
        except PySparkException as error:
            # The session ended already (the run finished or failed first).
            if "SESSION_CLOSED" not in str(error):
                raise
        finally:
            spark.stop()


def _file_key(path: str) -> tuple[str, int, int, int] | None:
    # A file replaced at the same path gets a new view; no key: not a local file.
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return (os.path.realpath(path), stat.st_ino, stat.st_mtime_ns, stat.st_size)


class HorseSession:
    """The Spark Connect session of one work horse (or one run, `per_run`)."""

    def __init__(self, remote: str, session: str, *, per_run: bool = False) -> None:
        self.id = session
        self.remote = remote
        self.per_run = per_run
        # Whether the server can read the files a run holds open (engine/held.py).
        self.same_machine = on_this_machine(remote)
        try:
            self.spark = connect(remote, session)
            # Spark pastes `${env:X}`, `${system:X}` and `${<conf>}` into SQL text
            # before parsing it, string literals included: a sheet's '${env:X}' would
            # read the server's environment (its secrets). Off before any SQL runs.
            self.spark.conf.set("spark.sql.variable.substitute", "false")
            # Parquet any engine reads the same way: timestamps as INT64, not Spark's INT96.
            self.spark.conf.set("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
        except Exception as error:
            raise JobFailed(
                f"cannot reach Spark at {shown_remote(remote)}: {spark_message(error)}"
            ) from None
        self.handler: StageHandler | None = None
        self.spark.registerProgressHandler(cast("ProgressHandler", self._on_progress))
        self._schemas: collections.OrderedDict[tuple[str, int, int, int], Any] = (
            collections.OrderedDict()
        )
        self.used = time.monotonic()

    def _on_progress(
        self,
        stages: Iterable[Any] | None,
        inflight_tasks: int,
        operation_id: str | None,
        done: bool,
    ) -> None:
        del inflight_tasks, operation_id
        handler = self.handler
        if handler is not None:
            handler(list(stages or ()), done)

    def alive(self) -> bool:
        """Whether the server still knows the session (asked only after an idle spell)."""
        return time.monotonic() - self.used < IDLE_CHECK_SECONDS or self.responds()

    def responds(self) -> bool:
        """Whether the server still knows the session, asked now."""
        try:
            self.spark.conf.get("spark.sql.parquet.outputTimestampType")
        except Exception:  # closed by the server, or the server restarted
            return False
        return True

    def source(self, path: str) -> Any:
        """A DataFrame of the Parquet file `path`, with no Spark job to learn its schema.

        Spark's own inference reads the file's footer with a Spark job per
        read. The schema is read from the footer here (engine/spark/schemas.py)
        where its types map exactly; otherwise the schema Spark inferred the
        first time is handed back on later reads in this session.
        """
        given = footer_schema(path)
        if given is not None:
            return self.spark.read.schema(given).parquet(path)
        key = _file_key(path)
        schema = self._schemas.get(key) if key is not None else None
        if schema is not None:
            self._schemas.move_to_end(key)  # type: ignore[arg-type]
            return self.spark.read.schema(schema).parquet(path)
        frame = self.spark.read.parquet(path)
        if key is not None:
            self._schemas[key] = frame.schema
            if len(self._schemas) > SOURCE_VIEWS:
                self._schemas.popitem(last=False)
        return frame

    def close(self) -> None:
        """End the session on the server (its views go with it)."""
        try:
            self.spark.stop()
        except Exception:  # the server may be gone; nothing of the run is left to keep
            return


class SparkRun:
    """One run on a horse's Spark session: its tag, progress, views and errors."""

    def __init__(
        self,
        request: RunRequest,
        session: HorseSession,
        callback: ProgressCallback,
        events: EventCallback,
    ) -> None:
        self.request = request
        self.session = session
        self.spark = session.spark
        self.progress = Progress(callback)
        self.emit = events
        self.where: dict[str, Any] = {}
        self.staging_dir = os.path.realpath(request.staging_dir)
        os.makedirs(self.staging_dir, exist_ok=True)
        self.callback_error: BaseException | None = None
        self.views: set[str] = set()
        self._share = (0.0, 0.0)
        self.spark.clearTags()
        self.spark.addTag(run_tag(request))
        session.handler = self._on_stages

    def event(self, event: str, **detail: Any) -> None:
        """Tell the run's log that something happened."""
        self.emit(rl.pending(event, **detail))

    def view(self, name: str, frame: Any) -> None:
        """Make `frame` the run's view `name` (dropped when the run ends)."""
        frame.createOrReplaceTempView(name)
        self.views.add(name)

    def _on_stages(self, stages: list[Any], done: bool) -> None:
        # Spark's own progress: completed tasks of the operation's stages so far.
        total = sum(s.num_tasks for s in stages)
        fraction = (
            1.0 if done else (sum(s.num_completed_tasks for s in stages) / total if total else 0.0)
        )
        start, share = self._share
        try:
            self.progress.report(start + share * fraction)
        except BaseException as error:
            # The callback refused (the run is being stopped): stop Spark's work.
            if self.callback_error is None:
                self.callback_error = error
                threading.Thread(target=self._interrupt, daemon=True).start()

    def _interrupt(self) -> None:
        try:
            self.spark.interruptTag(run_tag(self.request))
        except Exception:  # the operation may have ended meanwhile
            return

    def execute(
        self,
        action: Callable[[], T],
        *,
        context: str,
        share: float = 0.0,
        user_sql: str | None = None,
    ) -> T:
        """Run one Spark action; `share` of the run's progress follows Spark's progress.

        Spark errors become JobFailed naming `context`, or InvalidSql naming
        `user_sql` when Spark refused a user's query.
        """
        self._share = (self.progress.done, share)
        try:
            result = action()
        except Exception as error:
            if self.callback_error is not None:
                raise self.callback_error from None
            if not _is_spark_error(error):
                raise
            message = spark_message(error)
            if user_sql is not None and type(error).__name__ in _SQL_ERROR_CLASSES:
                raise InvalidSql(f"{user_sql}: {message}") from None
            raise JobFailed(f"{context}: {message}") from None
        finally:
            self._share = (0.0, 0.0)
        if self.callback_error is not None:
            raise self.callback_error
        self.progress.advance(share)
        return result

    def close(self) -> None:
        """Drop the run's views and its tag; a per-run session is left for the caller to end."""
        self.session.handler = None
        self.session.used = time.monotonic()
        if self.session.per_run:
            return
        try:
            for name in sorted(self.views):
                self.spark.catalog.dropTempView(name)
        except Exception:  # the session is gone: the next run checks it
            self.session.used = 0.0
        self.spark.clearTags()


def spark_message(error: BaseException) -> str:
    """Spark's error text without the JVM stack, cut to a length a status can hold."""
    text = str(error).strip().split("\n\nJVM stacktrace:")[0]
    return text if len(text) <= _MESSAGE_LIMIT else text[:_MESSAGE_LIMIT] + " ..."


def _is_spark_error(error: BaseException) -> bool:
    from pyspark.errors import PySparkException

    return isinstance(error, PySparkException) or type(error).__module__.startswith("grpc")
