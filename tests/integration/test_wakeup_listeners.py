"""Wake-ups between nodes on PostgreSQL (services/wakeup.py listeners): what another node's
NOTIFY does here, also after the listening connection was lost.

Real PostgreSQL, real threads; the announcing "other node" is a plain connection
running `pg_notify`, as store/executions.py `notify_other_nodes` does.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import psycopg
import pytest

from datamill.services.wakeup import ChannelListener, PostgresListener, Wakeup, libpq_conninfo
from datamill.store.executions import WAKEUP_CHANNEL

pytestmark = pytest.mark.postgres

PATIENCE = 30.0
"""How long a test lets a listener take to (re)connect or relay (a loaded machine)."""
CHANNEL = "datamill_test_channel"


def _listeners(conninfo: str, channel: str) -> list[int]:
    """The backends of this database that have run LISTEN on `channel`."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity"
            " WHERE datname = current_database() AND query = %s AND pid <> pg_backend_pid()",
            (f"LISTEN {channel}",),
        ).fetchall()
    return [row[0] for row in rows]


def _until(condition: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + PATIENCE
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting: {what}"
        time.sleep(0.02)


def _notify(conninfo: str, channel: str, payload: str) -> None:
    """Another node's announcement."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("SELECT pg_notify(%s, %s)", (channel, payload))


def _cut(conninfo: str, pids: list[int]) -> None:
    """A database outage, as the listener sees one: its connection ends."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for pid in pids:
            conn.execute("SELECT pg_terminate_backend(%s)", (pid,))


@pytest.fixture
def conninfo(postgres_url: str) -> str:
    return libpq_conninfo(postgres_url)


@pytest.fixture
def wakeup(conninfo: str) -> Iterator[Wakeup]:
    """A node's Wakeup with its PostgresListener running (and stopped after the test)."""
    wakeup = Wakeup()
    listener = PostgresListener(conninfo, wakeup)
    listener.start()
    yield wakeup
    listener.close()
    listener.join(PATIENCE)
    assert not listener.is_alive(), "a closed listener must end"


def test_another_nodes_work_wakes_this_nodes_workers_and_a_stop_asks_them_to_stop(
    conninfo: str, wakeup: Wakeup
) -> None:
    _until(lambda: _listeners(conninfo, WAKEUP_CHANNEL), "the listener's LISTEN")
    seen = wakeup.generation
    _notify(conninfo, WAKEUP_CHANNEL, "work")
    assert wakeup.wait_for_work(PATIENCE, seen) != seen
    assert not wakeup.stop_requested.is_set()
    # A stop is no new work: the stop flag is set and the generation stays.
    seen = wakeup.generation
    _notify(conninfo, WAKEUP_CHANNEL, "stop")
    assert wakeup.stop_requested.wait(PATIENCE)
    assert wakeup.generation == seen


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "datamill.services.wakeup"]


def _said_why(messages: list[str], prefix: str) -> None:
    assert [m[: len(prefix)] for m in messages] == [prefix], messages
    assert "connection" in messages[0][len(prefix) :], messages


def test_after_an_outage_the_listener_says_why_and_listens_again(
    conninfo: str, wakeup: Wakeup, caplog: pytest.LogCaptureFixture
) -> None:
    _until(lambda: _listeners(conninfo, WAKEUP_CHANNEL), "the listener's LISTEN")
    first = _listeners(conninfo, WAKEUP_CHANNEL)
    with caplog.at_level(logging.WARNING, logger="datamill.services.wakeup"):
        _cut(conninfo, first)
        _until(lambda: _warnings(caplog), "the listener's warning")
    # The operator's log says what failed and why, in psycopg's words (the connection).
    _said_why(_warnings(caplog), "listening for wake-ups failed, retrying: ")
    _until(
        lambda: set(_listeners(conninfo, WAKEUP_CHANNEL)) - set(first),
        "the listener's LISTEN after the outage",
    )
    seen = wakeup.generation
    _notify(conninfo, WAKEUP_CHANNEL, "work")
    assert wakeup.wait_for_work(PATIENCE, seen) != seen


def test_a_channel_listener_calls_back_per_notification_and_after_each_connection(
    conninfo: str, caplog: pytest.LogCaptureFixture
) -> None:
    calls = threading.Semaphore(0)
    listener = ChannelListener(conninfo, CHANNEL, calls.release)
    listener.start()
    try:
        # Once on connecting: whatever was announced while nobody listened.
        assert calls.acquire(timeout=PATIENCE)
        _until(lambda: _listeners(conninfo, CHANNEL), "the listener's LISTEN")
        for _ in range(2):
            _notify(conninfo, CHANNEL, "")
            assert calls.acquire(timeout=PATIENCE)
        with caplog.at_level(logging.WARNING, logger="datamill.services.wakeup"):
            _cut(conninfo, _listeners(conninfo, CHANNEL))
            assert calls.acquire(timeout=PATIENCE), "no call after reconnecting"
        _said_why(_warnings(caplog), f"listening on {CHANNEL} failed, retrying: ")
        _notify(conninfo, "another_channel", "")
        _notify(conninfo, CHANNEL, "")
        assert calls.acquire(timeout=PATIENCE)
    finally:
        listener.close()
        listener.join(PATIENCE)
    assert not listener.is_alive(), "a closed listener must end"
    assert not calls.acquire(blocking=False), "a call nothing announced"


def test_a_process_that_ends_without_closing_its_listeners_still_exits(conninfo: str) -> None:
    # A worker or server that dies without shutting down (an unhandled error) must
    # exit, so that its supervisor or the operator's service manager can restart it.
    code = (
        "import sys\n"
        "from datamill.services.wakeup import ChannelListener, PostgresListener, Wakeup\n"
        "PostgresListener(sys.argv[1], Wakeup()).start()\n"
        "ChannelListener(sys.argv[1], 'datamill_runs', lambda: None).start()\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    ended = subprocess.run(
        [sys.executable, "-c", code, conninfo], env=env, timeout=PATIENCE, check=False
    )
    assert ended.returncode == 0
