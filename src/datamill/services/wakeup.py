"""Waking workers promptly: in-process events, and LISTEN/NOTIFY on PostgreSQL."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import psycopg

from datamill.store.executions import WAKEUP_CHANNEL as CHANNEL

log = logging.getLogger(__name__)


class Wakeup:
    """Tells sleeping worker threads that there is new work or a stop request."""

    def __init__(self) -> None:
        self._work = threading.Condition()
        self._generation = 0
        self.stop_requested = threading.Event()
        # Where announcements also go: the server's worker child (worker/supervisor.py).
        self.forward: Callable[[str], None] | None = None

    def notify_work(self) -> None:
        """New or newly startable executions exist."""
        with self._work:
            self._generation += 1
            self._work.notify_all()
        forward = self.forward
        if forward is not None:
            forward("work")

    def notify_stop(self) -> None:
        """A running execution was asked to stop."""
        self.stop_requested.set()
        forward = self.forward
        if forward is not None:
            forward("stop")

    def wait_for_work(self, timeout: float, seen: int) -> int:
        """Sleep until work newer than generation `seen` is announced; return the generation."""
        with self._work:
            if self._generation == seen:
                self._work.wait(timeout)
            return self._generation

    @property
    def generation(self) -> int:
        """A counter bumped by every work announcement."""
        with self._work:
            return self._generation


class PostgresListener(threading.Thread):
    """Relays NOTIFYs from other nodes (API servers, workers) to a local Wakeup."""

    def __init__(self, conninfo: str, wakeup: Wakeup) -> None:
        super().__init__(name="datamill-listen", daemon=True)
        self._conninfo = conninfo
        self._wakeup = wakeup
        self._closing = threading.Event()

    def run(self) -> None:
        """Listen until closed, reconnecting after database outages."""
        while not self._closing.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    while not self._closing.is_set():
                        for note in conn.notifies(timeout=1.0):
                            if note.payload == "stop":
                                self._wakeup.notify_stop()
                            else:
                                self._wakeup.notify_work()
            except psycopg.Error as error:
                log.warning("listening for wake-ups failed, retrying: %s", error)
                self._closing.wait(1.0)

    def close(self) -> None:
        """Stop listening."""
        self._closing.set()


def libpq_conninfo(sqlalchemy_url: str) -> str:
    """A libpq connection string from a SQLAlchemy PostgreSQL URL."""
    from sqlalchemy.engine import make_url

    url = make_url(sqlalchemy_url)
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


class ChannelListener(threading.Thread):
    """Calls `on_notify` for each NOTIFY on one channel, and once after each (re)connection.

    The call after connecting stands for whatever was announced while no
    connection listened (a database restart): the listener re-reads then.
    """

    def __init__(self, conninfo: str, channel: str, on_notify: Callable[[], None]) -> None:
        super().__init__(name=f"datamill-listen-{channel}", daemon=True)
        self._conninfo = conninfo
        self._channel = channel
        self._on_notify = on_notify
        self._closing = threading.Event()

    def run(self) -> None:
        """Listen until closed, reconnecting after database outages."""
        while not self._closing.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True) as conn:
                    conn.execute(f"LISTEN {self._channel}")
                    self._on_notify()
                    while not self._closing.is_set():
                        for _note in conn.notifies(timeout=1.0):
                            self._on_notify()
            except psycopg.Error as error:
                log.warning("listening on %s failed, retrying: %s", self._channel, error)
                self._closing.wait(1.0)

    def close(self) -> None:
        """Stop listening."""
        self._closing.set()
