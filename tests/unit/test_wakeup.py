"""Waking workers (services/wakeup.py): what a worker thread sleeping for work may rely on.

A worker that found no run notes the generation, sleeps up to its poll
interval, and must wake for any work announced after it looked, also work
announced before it fell asleep; the server's worker child hears of every
announcement through `forward`. Real threads and a real Wakeup, no database.
"""

from __future__ import annotations

import threading

from psycopg.conninfo import conninfo_to_dict

from datamill.services.wakeup import Wakeup, libpq_conninfo

NEVER = 3600.0
"""A poll interval no test waits out: only an announcement ends such a sleep."""
PATIENCE = 30.0
"""How long a test lets a woken thread take to return (a loaded machine); never waited out."""


class _Sleeper:
    """A worker thread in `wait_for_work`, and the generation it woke with."""

    def __init__(self, wakeup: Wakeup, seen: int, timeout: float = NEVER) -> None:
        self.woke: list[int] = []
        self._thread = threading.Thread(
            target=lambda: self.woke.append(wakeup.wait_for_work(timeout, seen)), daemon=True
        )
        self._thread.start()

    def returned(self) -> bool:
        """Whether the sleep ended (given PATIENCE to)."""
        self._thread.join(PATIENCE)
        return not self._thread.is_alive()

    def still_asleep_after_a_moment(self) -> bool:
        """Whether it still sleeps a moment after it started (a wrong early return shows here)."""
        self._thread.join(0.2)
        return self._thread.is_alive()


def test_work_announced_while_a_worker_sleeps_wakes_it_with_a_new_generation() -> None:
    wakeup = Wakeup()
    seen = wakeup.generation
    sleeper = _Sleeper(wakeup, seen)
    assert sleeper.still_asleep_after_a_moment()
    wakeup.notify_work()
    assert sleeper.returned()
    assert sleeper.woke == [wakeup.generation]
    assert wakeup.generation != seen


def test_work_announced_before_a_worker_falls_asleep_is_not_missed() -> None:
    # The worker reads the generation, finds no run, and is about to sleep when
    # work is announced: the sleep must end at once, every time.
    wakeup = Wakeup()
    for _ in range(3):
        seen = wakeup.generation
        wakeup.notify_work()
        sleeper = _Sleeper(wakeup, seen)
        assert sleeper.returned(), "slept through work announced after it looked"
        assert sleeper.woke == [wakeup.generation] and sleeper.woke != [seen]


def test_a_worker_with_no_new_work_looks_again_after_its_poll_interval() -> None:
    wakeup = Wakeup()
    wakeup.notify_work()
    seen = wakeup.generation
    sleeper = _Sleeper(wakeup, seen, timeout=0.05)
    assert sleeper.returned(), "a sleep without announcements must end after its timeout"
    assert sleeper.woke == [seen]


def test_every_announcement_reaches_the_servers_worker_child() -> None:
    wakeup = Wakeup()
    sent: list[str] = []
    wakeup.forward = sent.append
    wakeup.notify_work()
    wakeup.notify_stop()
    wakeup.notify_work()
    assert sent == ["work", "stop", "work"]
    assert wakeup.stop_requested.is_set()


def test_announcements_without_a_worker_child_are_kept_locally() -> None:
    # A worker process of its own (`datamill worker`) has no child to forward to.
    wakeup = Wakeup()
    seen = wakeup.generation
    wakeup.notify_work()
    assert not wakeup.stop_requested.is_set()
    wakeup.notify_stop()
    assert wakeup.stop_requested.is_set()
    assert wakeup.generation != seen


def test_the_listeners_connect_to_the_metadata_database_as_configured() -> None:
    # The SQLAlchemy URL of DATAMILL_DATABASE_URL, read by libpq: the same server,
    # database and credentials (a password with URL-quoted characters included).
    url = "postgresql+psycopg://datamill:p%40ss%2Fw@db.example:5433/meta"
    assert conninfo_to_dict(libpq_conninfo(url)) == {
        "host": "db.example",
        "port": "5433",
        "user": "datamill",
        "password": "p@ss/w",
        "dbname": "meta",
    }
