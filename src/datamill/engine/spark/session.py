"""The Spark Connect session of one run: tagged, with progress and error translation.

Every run gets a Spark Connect session of its own, named by the request's
random `attempt` id. The worker, after killing a run's process, connects to
the same session and interrupts it (`interrupt_run`), so a stop also stops
the cluster's work; temporary views live and die with the session, so runs
never see each other's sheets.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar, cast

from datamill.domain import runlog as rl
from datamill.engine.base import EventCallback, ProgressCallback, RunRequest
from datamill.engine.duckdb.progress import Progress
from datamill.errors import InvalidSql, JobFailed

if TYPE_CHECKING:
    from pyspark.sql.connect.session import SparkSession
    from pyspark.sql.connect.shell.progress import ProgressHandler

_MESSAGE_LIMIT = 1500
T = TypeVar("T")
# Spark errors that mean the user's SQL is wrong rather than the run failing.
_SQL_ERROR_CLASSES = ("AnalysisException", "ParseException")
_TOKEN_RE = re.compile(r"(;token=)[^;]*", re.IGNORECASE)


def shown_remote(remote: str) -> str:
    """A Spark Connect address as a message may show it: its token masked."""
    return _TOKEN_RE.sub(r"\1***", remote)


def session_id(request: RunRequest) -> str:
    """The Spark Connect session id of a run: the same in the work horse and the worker."""
    return request.attempt_id


def run_tag(request: RunRequest) -> str:
    """The tag of every Spark operation of a run."""
    return f"datamill-{request.execution_id}"


def connect(remote: str, session: str) -> SparkSession:
    """A new Spark Connect client of the session `session` at `remote`."""
    from pyspark.sql.connect.session import SparkSession

    url = remote.rstrip("/")
    url += f";session_id={session}" if "/;" in url else f"/;session_id={session}"
    return SparkSession.builder.remote(url).create()


def interrupt_run(request: RunRequest) -> None:
    """Interrupt every operation of the run's session (after its process was killed)."""
    if request.spark_remote is None:
        return  # a local server dies with the run's process
    from pyspark.errors import PySparkException

    spark = connect(request.spark_remote, session_id(request))
    try:
        spark.interruptAll()
    except PySparkException as error:
        # The run's session ended already (the run finished or failed first).
        if "SESSION_CLOSED" not in str(error):
            raise
    finally:
        spark.stop()


def spark_message(error: BaseException) -> str:
    """Spark's error text without the JVM stack, cut to a length a status can hold."""
    text = str(error).strip().split("\n\nJVM stacktrace:")[0]
    return text if len(text) <= _MESSAGE_LIMIT else text[:_MESSAGE_LIMIT] + " ..."


class SparkRun:
    """One run's Spark session."""

    def __init__(
        self, request: RunRequest, remote: str, callback: ProgressCallback, events: EventCallback
    ) -> None:
        self.request = request
        self.progress = Progress(callback)
        self.emit = events
        self.where: dict[str, Any] = {}
        self.staging_dir = os.path.realpath(request.staging_dir)
        os.makedirs(self.staging_dir, exist_ok=True)
        self.callback_error: BaseException | None = None
        self._share = (0.0, 0.0)
        try:
            self.spark = connect(remote, session_id(request))
        except Exception as error:
            raise JobFailed(
                f"cannot reach Spark at {shown_remote(remote)}: {spark_message(error)}"
            ) from None
        self.spark.addTag(run_tag(request))
        # Spark pastes `${env:X}`, `${system:X}` and `${<conf>}` into SQL text
        # before parsing it, string literals included: a sheet's '${env:X}' would
        # read the server's environment (its secrets). Off before any SQL runs.
        self.spark.conf.set("spark.sql.variable.substitute", "false")
        # Parquet any engine reads the same way: timestamps as INT64, not Spark's INT96.
        self.spark.conf.set("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
        self.spark.registerProgressHandler(cast("ProgressHandler", self._on_progress))

    def event(self, event: str, **detail: Any) -> None:
        """Tell the run's log that something happened."""
        self.emit(rl.pending(event, **detail))

    def _on_progress(
        self,
        stages: Iterable[Any] | None,
        inflight_tasks: int,
        operation_id: str | None,
        done: bool,
    ) -> None:
        # Spark's own progress: completed tasks of the operation's stages so far.
        del inflight_tasks, operation_id
        listed = list(stages or ())
        total = sum(s.num_tasks for s in listed)
        fraction = (
            1.0 if done else (sum(s.num_completed_tasks for s in listed) / total if total else 0.0)
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
        """End the run's session on the server (its views go with it)."""
        try:
            self.spark.stop()
        except Exception:  # the server may be gone; nothing of the run is left to keep
            return


def _is_spark_error(error: BaseException) -> bool:
    from pyspark.errors import PySparkException

    return isinstance(error, PySparkException) or type(error).__module__.startswith("grpc")
