"""What the worker tells operators about each run: a log line and metrics at start and end.

The worker calls these at four points (claimed, ended, handed back, slot
free); nothing here changes what a run does, and a failure here (say, the
job's path cannot be read) never fails a run.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from datamill.domain.records import Execution
from datamill.domain.status import JobStatus
from datamill.engine.base import RunRequest
from datamill.observability.logs import BindToken, bind, unbind
from datamill.store import tables as t
from datamill.store.db import utcnow
from datamill.store.store import Store

log = logging.getLogger("datamill.runs")

UNKNOWN_KIND = "unknown"


@dataclass
class _Started:
    kind: str
    at: float
    token: BindToken


class RunObserver:
    """Logs and counts each run of one worker's slots."""

    def __init__(self, store: Store, worker_id: str) -> None:
        self.store = store
        self.metrics = store.metrics
        self.worker_id = worker_id
        self._started: dict[int, _Started] = {}
        self._lock = threading.Lock()
        # Metric children by label values, looked up once each: `labels()`
        # checks and locks on every call, four calls per run. The label values
        # come from small fixed sets (kinds, statuses), so this stays small.
        self._children: dict[tuple[object, ...], Any] = {}

    def _child(self, metric: Any, *values: str) -> Any:
        key = (id(metric), *values)
        child = self._children.get(key)
        if child is None:
            child = self._children.setdefault(key, metric.labels(*values))
        return child

    def started(self, execution: Execution, request: RunRequest | str, path: str | None) -> None:
        """A slot claimed `execution` (of the job at `path`) and is about to run it."""
        kind = request.kind.value if isinstance(request, RunRequest) else UNKNOWN_KIND
        token = bind(execution_id=execution.id, job_path=path, worker_id=self.worker_id)
        with self._lock:
            self._started[execution.id] = _Started(kind, time.monotonic(), token)
        wait = _seconds(execution.created_at, execution.started_at or utcnow())
        self._child(self.metrics.runs_started, kind).inc()
        self._child(self.metrics.queue_wait, kind).observe(wait)
        self.metrics.slot_taken()
        log.info("run started: %s, attempt %d, queued %.3f s", kind, execution.attempts, wait)

    def ended(self, execution: Execution, status: JobStatus, reason: str | None) -> None:
        """The store recorded the run's end."""
        with self._lock:
            started = self._started.get(execution.id)
        kind = started.kind if started else UNKNOWN_KIND
        seconds = time.monotonic() - started.at if started else 0.0
        self._child(self.metrics.runs_finished, kind, status.value).inc()
        self._child(self.metrics.run_duration, kind).observe(seconds)
        calm = status.is_success or status is JobStatus.CANCELED
        level = logging.INFO if calm else logging.WARNING
        because = f": {reason}" if reason else ""
        log.log(level, "run ended %s after %.3f s%s", status.value, seconds, because)

    def handed_back(self, execution_id: int) -> None:
        """The run went back to the queue."""
        self.metrics.handed_back.inc()
        log.info("run %d handed back to the queue", execution_id)

    def slot_free(self, execution_id: int) -> None:
        """The slot is done with the run, however it ended (in the slot's thread)."""
        with self._lock:
            started = self._started.pop(execution_id, None)
        if started is None:
            return
        self.metrics.slot_freed()
        unbind(started.token)


_PATH = sa.select(t.files.c.path).where(t.files.c.id == sa.bindparam("file_id"))


def job_path(conn: Connection, execution: Execution) -> str | None:
    """The path of the execution's job for the log lines; read in the claim's transaction.

    A separate transaction per run cost the worker more than the rest of its
    bookkeeping; a job deleted meanwhile has no path.
    """
    return conn.execute(_PATH, {"file_id": execution.file_id}).scalar()


def _seconds(earlier: dt.datetime, later: dt.datetime) -> float:
    return max(0.0, (later - earlier).total_seconds())
