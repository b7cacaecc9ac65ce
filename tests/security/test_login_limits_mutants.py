"""The sign-in limits themselves (services/login_limits.py): the cases its mutants showed untested.

The token buckets run on a clock of the test's own (their module's `time`
replaced), so refill and Retry-After are exact without waiting. What a user
sees of them: 429 with the seconds to wait, a success giving its token back,
and a bounded memory of names and addresses.
"""

from __future__ import annotations

import threading
import types

import pytest

from datamill.errors import TooManyRequests
from datamill.services import login_limits
from datamill.services.login_limits import FailureBuckets, VerificationGate


class Clock:
    """A monotonic clock that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(login_limits, "time", types.SimpleNamespace(monotonic=clock.monotonic))
    return clock


def test_a_bucket_empties_refills_at_its_rate_and_says_how_long_to_wait(clock: Clock) -> None:
    buckets = FailureBuckets(burst=3, refill_per_second=0.5)
    assert buckets.retry_after("bob") == 0
    assert [buckets.take("bob") for _ in range(4)] == [True, True, True, False]
    assert buckets.retry_after("bob") == 2  # one token at half a token a second
    assert buckets.take("eve") is True  # each name its own bucket
    clock.now += 1.0
    assert buckets.retry_after("bob") == 1
    assert buckets.take("bob") is False
    clock.now += 1.0
    assert buckets.retry_after("bob") == 0
    assert buckets.take("bob") is True
    # A long pause refills no more than the burst.
    clock.now += 3600.0
    assert [buckets.take("bob") for _ in range(4)] == [True, True, True, False]


def test_retry_after_rounds_up_to_whole_seconds_and_is_never_zero_while_empty(
    clock: Clock,
) -> None:
    slow = FailureBuckets(burst=1, refill_per_second=0.3)
    assert slow.take("x") is True
    assert slow.retry_after("x") == 4  # 3.33 s
    fast = FailureBuckets(burst=1, refill_per_second=100.0)
    assert fast.take("x") is True
    clock.now += 0.005  # half a token back: 5 ms to wait, said as one second
    assert fast.retry_after("x") == 1
    assert fast.take("x") is False


def test_a_success_gives_its_token_back_but_never_above_the_burst(clock: Clock) -> None:
    buckets = FailureBuckets(burst=2, refill_per_second=0.001)
    assert [buckets.take("bob") for _ in range(3)] == [True, True, False]
    buckets.give_back("bob")
    assert [buckets.take("bob") for _ in range(2)] == [True, False]
    buckets.give_back("eve")  # a full bucket stays full
    buckets.give_back("eve")
    assert [buckets.take("eve") for _ in range(3)] == [True, True, False]


def test_the_least_recently_used_name_is_forgotten_past_the_limit(
    clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(login_limits, "MAX_TRACKED", 2)
    buckets = FailureBuckets(burst=2, refill_per_second=0.001)
    assert buckets.take("a") and buckets.take("b") and buckets.take("a")  # a: empty, recent
    assert buckets.take("c") is True  # three names: b, the least recent, is forgotten
    assert buckets.take("a") is False  # a is still remembered, empty
    assert [buckets.take("b") for _ in range(3)] == [True, True, False]  # b starts full again


def test_checks_beyond_the_gate_and_its_queue_are_refused_at_once() -> None:
    gate = VerificationGate(at_once=1, waiting=1)
    release = threading.Event()
    first_running = threading.Event()
    second_running = threading.Event()
    results: list[str] = []

    def first() -> str:
        first_running.set()
        release.wait()
        return "first"

    def second() -> str:
        second_running.set()
        return "second"

    threads = [
        threading.Thread(target=lambda: results.append(gate.run(first))),
        threading.Thread(target=lambda: results.append(gate.run(second))),
    ]
    threads[0].start()
    assert first_running.wait(30)
    threads[1].start()
    # One check at a time: the second waits for the first (it would have started by now).
    assert not second_running.wait(0.5)
    # One running, one waiting: a third is refused at once, no argon2 for it.
    with pytest.raises(TooManyRequests) as refused:
        gate.run(lambda: "third")
    assert refused.value.message == "too many sign-ins at once; try again in a moment"
    assert refused.value.retry_after == 1
    release.set()
    for thread in threads:
        thread.join(30)
    assert results == ["first", "second"]
    # Both places are free again, and a check that fails frees its place too.
    for _ in range(2):
        with pytest.raises(ZeroDivisionError):
            gate.run(lambda: str(1 / 0))
    assert gate.run(lambda: "again") == "again"
    assert gate.run(lambda: "and again") == "and again"
