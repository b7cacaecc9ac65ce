"""Progress of a DuckDB run: one monotonic fraction, fed by steps and by polling DuckDB."""

from __future__ import annotations

import os
import threading
import time
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


class Watch:
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
        self._watched: dict[int, Watch] = {}
        self._next_token = 0
        self._idle = False
        self._thread: threading.Thread | None = None
        self._pid = 0

    def watch(self, session: Session, start: float, share: float) -> int:
        """Report `share` of the session's progress, from `start`, until unwatched; a token."""
        with self._lock:
            self._next_token += 1
            token = self._next_token
            self._watched[token] = Watch(session, start, share, time.monotonic() + _POLL_SECONDS)
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


POLLER = _Poller()
