"""Sign-in (services/auth.py): the cases its mutants showed untested.

What a user notices of the password check: the answer of a refusal, how
long a limited name or address must wait, that a script signing in again
and again is never limited, and that a crowd of slow checks is refused
without costing anyone a try.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient

from datamill.api.app import create_app
from datamill.bootstrap import Node
from datamill.domain.records import NO_PASSWORD
from datamill.errors import DatamillError, NotAuthenticated, TooManyRequests
from datamill.services.auth import Authenticator
from tests.helpers import password_hash
from tests.security.conftest import Actors, auth

SELF = "/rest/user-management/users/bob"
HOUR = 3600.0


@pytest.fixture
def client(actors: Actors) -> Iterator[TestClient]:
    """The app with the default bursts (10 per name, 30 per address), one try back per hour."""
    settings = actors.node.settings.model_copy(update={"login_refill_seconds": HOUR})
    with TestClient(create_app(settings, actors.node.jobs)) as client:
        yield client


def test_every_refused_sign_in_gets_the_same_answer(actors: Actors) -> None:
    # A user created without a password cannot sign in, and says so no more than a stranger.
    actors.node.store.users.create("nopw", NO_PASSWORD)
    answers = [
        actors.client.get(SELF, headers=auth(name, password))
        for name, password in (("bob", "wrong"), ("nobody", "pw"), ("nopw", ""), ("nopw", "pw"))
    ]
    for answer in answers:
        assert answer.status_code == 401, answer.text
        assert answer.json() == {"status": "failure", "reason": "wrong user name or password"}


def _limited(client: TestClient, name: str) -> tuple[int, str, int]:
    """(status, reason, Retry-After) of a wrong guess at `name` after its bucket ran dry."""
    answer = client.get(SELF, headers=auth(name, "guess"))
    return answer.status_code, answer.json()["reason"], int(answer.headers["retry-after"])


def _wait_of(reason: str) -> int:
    prefix, suffix = "too many failed sign-ins; try again in ", " s"
    assert reason.startswith(prefix) and reason.endswith(suffix), reason
    return int(reason[len(prefix) : -len(suffix)])


def test_a_limited_name_waits_the_refill_time_of_one_try(client: TestClient) -> None:
    # One try comes back per refill period (an hour here): the wait says so, in the body and header.
    for _ in range(10):
        assert client.get(SELF, headers=auth("bob", "guess")).status_code == 401
    status, reason, header = _limited(client, "bob")
    assert status == 429
    # Less than an hour by the time the ten failures took (seconds, on a loaded machine).
    assert 3000 < _wait_of(reason) <= 3600 and header == _wait_of(reason)


def test_a_limited_address_waits_the_refill_time_of_one_try(client: TestClient) -> None:
    for i in range(30):
        assert client.get(SELF, headers=auth(f"nobody{i}", "x")).status_code == 401
    status, reason, header = _limited(client, "someone-else")
    assert status == 429
    assert 3000 < _wait_of(reason) <= 3600 and header == _wait_of(reason)


def test_signing_in_right_again_and_again_is_never_limited(node: Node) -> None:
    # Nothing cached (no time to live): each sign-in is checked afresh and must cost no try.
    node.store.users.create("bob", password_hash("pw"))
    authenticator = Authenticator(
        node.store, ttl_seconds=0.0, failures_per_name=2, failures_per_client=2, refill_seconds=HOUR
    )
    for _ in range(5):
        assert authenticator.authenticate("bob", "pw", "10.0.0.7").name == "bob"
    # The tries are all still there: two wrong guesses are refused as wrong, the third is limited.
    for _ in range(2):
        with pytest.raises(NotAuthenticated):
            authenticator.authenticate("bob", "guess", "10.0.0.7")
    with pytest.raises(TooManyRequests):
        authenticator.authenticate("bob", "guess", "10.0.0.7")


def test_a_login_in_use_stays_verified(node: Node) -> None:
    # A status poller signs in many times a minute: each use keeps its entry alive.
    node.store.users.create("bob", password_hash("pw"))
    authenticator = Authenticator(node.store)
    stored = authenticator.authenticate("bob", "pw").password_hash
    for _ in range(3):
        assert authenticator.recently_verified("bob", "pw", stored)
        assert authenticator.recently_verified("bob", "pw", stored)
        assert authenticator.authenticate("bob", "pw").name == "bob"


class _SlowChecks:
    """Sign-ins whose argon2 check has not finished: they hold the gate until released."""

    def __init__(self, authenticator: Authenticator, count: int) -> None:
        self._release = threading.Event()
        self._gate = authenticator._gate  # the gate the slow checks would be in
        self._running = threading.Semaphore(0)
        self.outcomes: list[object] = []

        def slow() -> bool:
            self._running.release()
            return self._release.wait(300)

        def sign_in() -> None:
            try:
                self.outcomes.append(self._gate.run(slow))
            except DatamillError as error:
                self.outcomes.append(error)

        self._threads = [threading.Thread(target=sign_in) for _ in range(count)]

    def start(self, running: int = 2) -> None:
        """Start them all; back once `running` of them run and the others wait or were refused."""
        slots = vars(self._gate)["_slots"]
        free = vars(slots)["_value"]  # a sync point only: the gate's free places
        for thread in self._threads:
            thread.start()
        for _ in range(running):
            assert self._running.acquire(timeout=60)
        for _ in range(6000):
            if vars(slots)["_value"] <= max(0, free - len(self._threads)) or self.outcomes:
                return
            time.sleep(0.01)

    def release(self) -> list[object]:
        """Let them finish; what each got (True for a check that ran)."""
        self._release.set()
        for thread in self._threads:
            thread.join(60)
        return self.outcomes


def _in_thread(call: Callable[[], object]) -> Callable[[float], object]:
    """Run `call` in a thread; the returned function joins it and gives its result or error."""
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(call())
        except DatamillError as error:
            outcome.append(error)

    thread = threading.Thread(target=run)
    thread.start()

    def result(timeout: float = 60) -> object:
        thread.join(timeout)
        return outcome[0] if outcome else None

    return result


def test_a_full_gate_refuses_at_once_and_costs_no_try(node: Node) -> None:
    node.store.users.create("bob", password_hash("pw"))
    authenticator = Authenticator(
        node.store, failures_per_name=2, failures_per_client=2, refill_seconds=HOUR
    )
    # Two checks running and eight waiting (4 per place): the gate is full.
    slow = _SlowChecks(authenticator, 2 + 8)
    slow.start()
    try:
        # Answered at once, not queued behind the slow ones (which only the release ends).
        tries = [
            _in_thread(lambda: authenticator.authenticate("bob", "guess", "10.0.0.7"))
            for _ in range(3)
        ]
        refused = [result(30) for result in tries]
        unknown = _in_thread(lambda: authenticator.authenticate("nobody", "x", "10.0.0.8"))(30)
    finally:
        admitted = slow.release()
    assert admitted == [True] * 10  # each of the ten had its place
    for error in [*refused, unknown]:
        assert isinstance(error, TooManyRequests), error
        assert str(error) == "too many sign-ins at once; try again in a moment"
    # None of the three refusals cost bob or his address a try: two wrong guesses are still 401.
    for _ in range(2):
        with pytest.raises(NotAuthenticated):
            authenticator.authenticate("bob", "guess", "10.0.0.7")
    assert authenticator.authenticate("bob", "pw", "10.0.0.9").name == "bob"


def test_a_sign_in_refused_for_its_address_costs_its_name_no_try(node: Node) -> None:
    node.store.users.create("bob", password_hash("pw"))
    node.store.users.create("amy", password_hash("pw"))
    authenticator = Authenticator(
        node.store, failures_per_name=1, failures_per_client=1, refill_seconds=HOUR
    )
    # amy's sign-in holds the address's only try while her check waits behind two slow ones.
    slow = _SlowChecks(authenticator, 2)
    slow.start()
    try:
        amy = _in_thread(lambda: authenticator.authenticate("amy", "pw", "10.0.0.7"))
        # Her tries are taken before her check queues: wait until the address has none left.
        for _ in range(6000):
            if authenticator._by_client.retry_after("10.0.0.7") > 0:
                break
            time.sleep(0.01)
        # Meanwhile bob, from the same address, is refused for the address alone.
        bob = _in_thread(lambda: authenticator.authenticate("bob", "pw", "10.0.0.7"))(30)
    finally:
        slow.release()
    assert isinstance(bob, TooManyRequests) and "failed sign-ins" in str(bob), bob
    assert getattr(amy(60), "name", None) == "amy"  # her success gives the address its try back
    # bob's one try for this address is untouched: he signs in.
    assert authenticator.authenticate("bob", "pw", "10.0.0.7").name == "bob"
