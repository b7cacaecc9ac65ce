"""The per-user cap on waiting requests and event streams (services/waiting.py `WaitLimit`).

`max_waits_per_user` bounds what one script may hold open on a server; a
request at the cap gets a 429 that says what to do, and every way a wait ends
gives its place back exactly once. The routes' side is tests/api/test_waiting.py
(with a worker); here the rule itself, with real threads where requests take
their places at once.
"""

from __future__ import annotations

import threading

import pytest

from datamill.errors import TooManyWaits
from datamill.services.waiting import WAIT_RETRY_AFTER_SECONDS, WaitLimit

AT_THE_CAP = (
    "you already hold 2 waiting requests and event streams on this server, the most one"
    " user may (max_waits_per_user); nothing was started; try again once one of them has ended"
)


def test_a_user_at_her_cap_is_refused_with_what_to_do_and_others_still_wait() -> None:
    limit = WaitLimit(per_user=2)
    first, second = limit.slot(), limit.slot()
    first.take("eve")
    second.take("eve")
    with pytest.raises(TooManyWaits) as refused:
        limit.slot().take("eve")
    assert str(refused.value) == AT_THE_CAP
    assert refused.value.http_status == 429
    assert refused.value.retry_after == WAIT_RETRY_AFTER_SECONDS
    assert limit.held("eve") == 2, "a refused wait holds no place"
    other = limit.slot()
    other.take("bob")
    assert (limit.held("eve"), limit.held("bob"), limit.held("mallory")) == (2, 1, 0)
    # One of hers ends: she may wait once more, and only once.
    first.release()
    assert limit.held("eve") == 1
    again = limit.slot()
    again.take("eve")
    with pytest.raises(TooManyWaits):
        limit.slot().take("eve")


def test_every_way_a_wait_ends_gives_its_place_back_once() -> None:
    limit = WaitLimit(per_user=3)
    kept = limit.slot()
    kept.take("eve")
    with limit.slot() as slot:
        slot.take("eve")
        assert limit.held("eve") == 2
    assert limit.held("eve") == 1
    # Released twice (an error path and the `with`): the place comes back once.
    twice = limit.slot()
    twice.take("eve")
    twice.release()
    twice.release()
    assert limit.held("eve") == 1
    # A request refused before it knew its user took nothing and gives nothing back.
    limit.slot().release()
    assert limit.held("eve") == 1
    kept.release()
    assert limit.held("eve") == 0
    # Empty again: the whole cap is hers again.
    slots = [limit.slot() for _ in range(3)]
    for place in slots:
        place.take("eve")
    assert limit.held("eve") == 3


def test_a_place_is_taken_once() -> None:
    limit = WaitLimit(per_user=5)
    slot = limit.slot()
    slot.take("eve")
    with pytest.raises(AssertionError, match="a slot is taken once"):
        slot.take("bob")
    assert (limit.held("eve"), limit.held("bob")) == (1, 0)


def test_requests_arriving_together_never_exceed_the_cap() -> None:
    # Waits take their places on the event loop and on threads at once.
    limit = WaitLimit(per_user=3)
    start = threading.Barrier(8)
    taken: list[bool] = []

    def arrive() -> None:
        start.wait()
        try:
            limit.slot().take("eve")
        except TooManyWaits:
            taken.append(False)
        else:
            taken.append(True)

    threads = [threading.Thread(target=arrive) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(taken) == [False] * 5 + [True] * 3
    assert limit.held("eve") == 3
