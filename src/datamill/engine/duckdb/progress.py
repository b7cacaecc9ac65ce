"""Progress of a DuckDB run: one monotonic fraction, fed by steps and by polling DuckDB."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from datamill.engine.base import ProgressCallback

if TYPE_CHECKING:
    from datamill.engine.duckdb.session import Session

_POLL_SECONDS = 0.1


class Progress:
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


class Poller(threading.Thread):
    """Reads DuckDB's progress of the running query and reports it; never raises."""

    def __init__(self, session: Session, start: float, share: float) -> None:
        super().__init__(name="duckdb-progress", daemon=True)
        self._session = session
        self._start = start
        self._share = share
        self._stop_event = threading.Event()

    def run(self) -> None:
        """Poll until stopped."""
        while not self._stop_event.wait(_POLL_SECONDS):
            try:
                percent = float(self._session.con.query_progress())
            except Exception:  # the query may just have ended; polling must never fail a run
                continue
            if percent < 0:
                continue
            try:
                self._session.progress.report(self._start + self._share * min(percent, 100.0) / 100)
            except BaseException as error:
                # The callback refused (the worker stops the run, say): stop the query
                # and let the main thread raise the callback's exception.
                self._session.callback_error = error
                self._session.con.interrupt()
                return

    def stop(self) -> None:
        """Ask the thread to end and wait for it."""
        self._stop_event.set()
        self.join()
