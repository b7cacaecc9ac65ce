"""Attacks on waiting requests and event streams (attack review on PostgreSQL, issue 15).

The real app over a real store on SQLite and PostgreSQL, no worker: every run
stays QUEUED until it is stopped, so nothing ends by itself. No timing is
asserted: what was answered while something else was held is.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from datamill.api import event_routes
from datamill.domain.records import User
from datamill.services.waiting import RunWatch, WaitLimit
from datamill.store import users as user_rows
from tests.api.test_waiting import _events
from tests.security.conftest import Actors, auth
from tests.security.test_idempotency import _workbook

KEY = "replayed-after-unsharing"


def _trigger(actors: Actors, user: str, path: str) -> int:
    response = actors.call(user, "POST", f"/api/job-execution{path}/trigger")
    assert response.status_code == 200, response.text
    return int(response.json()["job-execution-id"])


def _stop(actors: Actors, user: str, execution_id: int) -> None:
    response = actors.call(user, "POST", f"/rest/job-execution/job-kill/{execution_id}")
    assert response.status_code == 200, response.text


def _until(condition: Callable[[], bool], what: str) -> None:
    for _ in range(12_000):
        if condition():
            return
        threading.Event().wait(0.01)
    raise AssertionError(f"never: {what}")


class _HeldReads:
    """Holds every events-stream read of one user until released, counting them."""

    def __init__(self, user: str) -> None:
        self.user = user
        self.release = threading.Event()
        self._lock = threading.Lock()
        self.active = 0
        self.most = 0
        self.calls: dict[int, int] = {}
        self._real = event_routes.runs.run_report

    def __call__(self, jobs: Any, execution_id: int, user: User, **options: Any) -> Any:
        with self._lock:
            self.calls[execution_id] = self.calls.get(execution_id, 0) + 1
        if user.name != self.user:
            return self._real(jobs, execution_id, user, **options)
        with self._lock:
            self.active += 1
            self.most = max(self.most, self.active)
        try:
            assert self.release.wait(120), "the test never released the reads"
            return self._real(jobs, execution_id, user, **options)
        finally:
            with self._lock:
                self.active -= 1


@pytest.fixture
def held(monkeypatch: pytest.MonkeyPatch) -> Iterator[_HeldReads]:
    reads = _HeldReads("eve")
    monkeypatch.setattr(event_routes.runs, "run_report", reads)
    yield reads
    reads.release.set()


def test_one_users_streams_hold_one_wait_thread_and_others_waits_are_answered(
    actors: Actors, held: _HeldReads
) -> None:
    # Attack on PostgreSQL: 20 streams of eve over 600 of her ended runs each
    # held the server's 4 wait threads for 85 s; bob's `status?wait=0` waited
    # that long (his sign-in and reads queue on those threads too).
    eves = _trigger(actors, "eve", _workbook(actors, "eve", "streamed"))
    bobs_path = _workbook(actors, "bob", "waited")
    _trigger(actors, "bob", bobs_path)
    limit: WaitLimit = actors.client.app.state.wait_limit  # type: ignore[attr-defined]
    streams: list[httpx.Response] = []

    def stream() -> None:
        streams.append(actors.call("eve", "GET", f"/api/job-execution/{eves}/events"))

    threads = [threading.Thread(target=stream) for _ in range(6)]
    for thread in threads:
        thread.start()
    try:
        _until(lambda: limit.held("eve") == 6 and held.active >= 1, "eve's streams read")
        answers: list[httpx.Response] = []
        bob = threading.Thread(
            target=lambda: answers.append(
                actors.call("bob", "GET", f"/api/job-execution{bobs_path}/status?wait=0")
            )
        )
        bob.start()
        bob.join(120)
        # Answered while every read of eve's is still held, and she never held more
        # than her one thread.
        assert answers, "bob's wait was not answered while eve's streams read"
        assert answers[0].status_code == 200, answers[0].text
        assert answers[0].json()["job-status"] == "QUEUED"
        assert held.active == 1 and held.most == 1
    finally:
        held.release.set()
    _until(lambda: held.calls.get(eves, 0) >= 6, "eve's streams' first reads")
    _stop(actors, "eve", eves)
    for thread in threads:
        thread.join(120)
    assert len(streams) == 6
    for response in streams:
        assert response.status_code == 200, response.text
        assert _events(response.text)[-1] == ("end", {"runs": {str(eves): "CANCELED"}})
    watch: RunWatch = actors.client.app.state.run_watch  # type: ignore[attr-defined]
    assert watch._turns == {}  # nothing kept of eve's turn once her work is done


def test_a_stream_reads_an_ended_run_once_not_at_every_change(
    actors: Actors, held: _HeldReads
) -> None:
    # 1,000 ended runs and one queued in one stream cost 1,000 reads per change
    # of the queued one; an ended run has nothing more to tell.
    held.release.set()
    path = _workbook(actors, "eve", "mostly-ended")
    ended = []
    for _ in range(3):
        run = _trigger(actors, "eve", path)
        _stop(actors, "eve", run)
        ended.append(run)
    other = _trigger(actors, "eve", _workbook(actors, "eve", "still-queued"))
    ids = ",".join(map(str, [*ended, other]))
    streams: list[httpx.Response] = []
    thread = threading.Thread(
        target=lambda: streams.append(actors.call("eve", "GET", f"/api/job-execution/{ids}/events"))
    )
    thread.start()
    watch: RunWatch = actors.client.app.state.run_watch  # type: ignore[attr-defined]
    _until(lambda: other in watch._watchers, "the stream watches its runs")
    # Two changes of the queued run: a second run of its job queued (nothing the
    # stream follows), then the run stopped.
    _stop(actors, "eve", other)
    thread.join(120)
    assert streams and streams[0].status_code == 200, streams
    events = _events(streams[0].text)
    assert events[-1] == (
        "end",
        {"runs": {str(i): "CANCELED" for i in [*ended, other]}},
    )
    assert {i: held.calls[i] for i in ended} == dict.fromkeys(ended, 1)
    assert held.calls[other] >= 2


def _share(actors: Actors, path: str, group: str, *, readable: bool) -> None:
    with actors.node.store.db.write() as conn:
        entry = actors.node.store.files.find(conn, path)
        assert entry is not None
        if not user_rows.get_groups(conn, [group]):
            user_rows.insert_group(conn, group)
            user_rows.replace_groups(conn, "eve", [group])
        actors.node.store.files.set_group_flags(
            conn, entry.id, group, readable=readable, writable=False, executable=readable
        )


def _keyed(actors: Actors, route: str, path: str, query: str = "") -> httpx.Response:
    headers = auth("eve") | {"Idempotency-Key": KEY}
    if route == "v2":
        return actors.client.post(f"/api/job-execution{path}/trigger{query}", headers=headers)
    if route == "legacy":
        with actors.node.store.db.read() as conn:
            entry = actors.node.store.files.find(conn, path)
            assert entry is not None
            config = actors.node.store.jobs.for_file(conn, entry.id)
            assert config is not None
        joined = "&" + query[1:] if query else ""
        return actors.client.post(
            f"/rest/job-execution?configuration={config.id}{joined}", headers=headers
        )
    body = {"fileIds": [path]}
    return actors.client.post(
        f"/api/job-execution/sequential-trigger{query}", headers=headers, json=body
    )


def _ids_and_statuses(route: str, body: dict[str, Any]) -> list[tuple[int, Any]]:
    if route == "v2":
        return [(body["job-execution-id"], body.get("job-status"))]
    if route == "legacy":
        return [(body["id"], body["jobStatus"])]
    return [(m["job-execution-id"], m.get("job-status")) for m in body["execution-plan"]]


def _as_gone(route: str, first: httpx.Response) -> dict[str, Any]:
    """The first answer, its run's state as for a run that no longer exists: the stored
    one (legacy) or null (v2, plans)."""
    expected: dict[str, Any] = json.loads(first.content)
    if route == "v2":
        expected["job-status"] = None
    if route == "sequential":
        for member in expected["execution-plan"]:
            if "job-execution-id" in member:
                member["job-status"] = None
    return expected


def _in_thread(call: Callable[[], httpx.Response]) -> tuple[threading.Thread, list[Any]]:
    answers: list[httpx.Response] = []
    thread = threading.Thread(target=lambda: answers.append(call()))
    thread.start()
    return thread, answers


@pytest.mark.parametrize("route", ["v2", "legacy", "sequential"])
def test_a_keyed_replay_with_wait_tells_nothing_of_a_run_its_caller_may_no_longer_read(
    actors: Actors, route: str
) -> None:
    # eve ran bob's shared job with a key; bob unshared it. Her replay (answered
    # by her role alone) asking to wait waited on his run and told her its state
    # once it ended, which the status route refuses her (404): when, and how.
    path = _workbook(actors, "bob", "unshared")
    _share(actors, path, "runners", readable=True)
    first = _keyed(actors, route, path)
    assert first.status_code == 200, first.text
    [(run, _)] = _ids_and_statuses(route, first.json())
    _share(actors, path, "runners", readable=False)
    status = actors.call("eve", "GET", f"/api/job-execution{path}/status")
    assert status.status_code == 404

    # The run still queued: the replay answers at once, not when bob's run ends.
    thread, answers = _in_thread(lambda: _keyed(actors, route, path, "?wait=3600"))
    try:
        thread.join(120)
        assert answers, "the replay waited on a run its caller may not read"
    finally:
        _stop(actors, "bob", run)
        thread.join()
    assert answers[0].status_code == 200, answers[0].text
    assert answers[0].headers["idempotent-replayed"] == "true"
    assert answers[0].json() == _as_gone(route, first)

    # The run ended (CANCELED): still nothing told.
    ended = _keyed(actors, route, path, "?wait=1")
    assert ended.json() == _as_gone(route, first)

    # Shared again, the replay tells the state, as before.
    _share(actors, path, "runners", readable=True)
    shared = _keyed(actors, route, path, "?wait=1")
    assert _ids_and_statuses(route, shared.json()) == [(run, "CANCELED")]


def _lose_the_right(actors: Actors, path: str, how: str) -> None:
    if how == "unshared":
        _share(actors, path, "runners", readable=False)
    elif how == "left the group":
        body = {"groups": []}
        left = actors.call("admin", "PUT", "/rest/user-management/users/eve", body)
        assert left.status_code == 200, left.text
    else:
        gone = actors.call("admin", "DELETE", "/rest/user-management/users/eve")
        assert gone.status_code == 200, gone.text
    if how == "deleted and made again":
        # A new eve in the same group: the old eve's wait must not answer with her rights.
        new = {"name": "eve", "password": "other", "roles": ["ANALYST"], "groups": ["runners"]}
        made = actors.call("admin", "POST", "/rest/user-management/users", new)
        assert made.status_code == 200, made.text


def _answer_after_losing_the_right(
    actors: Actors, path: str, how: str, call: Callable[[], httpx.Response]
) -> httpx.Response:
    """eve's waiting `call`, answered once bob's run of `path` (his workbook, shared with
    her group) ended after she lost the right `how`."""
    _share(actors, path, "runners", readable=True)
    thread, answers = _in_thread(call)
    watch: RunWatch = actors.client.app.state.run_watch  # type: ignore[attr-defined]
    try:
        _until(lambda: bool(watch._watchers), "eve's request waits on the run")
        _lose_the_right(actors, path, how)
    finally:
        # bob's one run ends, whatever happened above.
        stopped = actors.call("bob", "POST", f"/api/job-execution{path}/stop")
        thread.join()
    assert stopped.status_code == 200, stopped.text
    answer: httpx.Response = answers[0]
    return answer


_LOST = ["unshared", "left the group", "deleted", "deleted and made again"]


@pytest.mark.parametrize("how", _LOST)
def test_a_right_lost_while_a_triggered_run_is_waited_on_hides_its_end(
    actors: Actors, how: str
) -> None:
    # Checked again after the wait, as the status routes do, with the rights
    # the caller has then: with the ones she had when the wait began, eve,
    # taken out of the group (or deleted) meanwhile, still learned the end of
    # bob's run (up to an hour later).
    path = _workbook(actors, "bob", "unshared-meanwhile")
    answer = _answer_after_losing_the_right(
        actors, path, how, lambda: _keyed(actors, "v2", path, "?wait=3600")
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["job-status"] is None
    status = actors.call("bob", "GET", f"/api/job-execution{path}/status")
    assert status.json()["job-status"] == "CANCELED"
    assert status.json()["job-execution-id"] == answer.json()["job-execution-id"]


@pytest.mark.parametrize("how", _LOST)
def test_a_right_lost_while_a_status_waits_answers_as_for_a_missing_job(
    actors: Actors, how: str
) -> None:
    path = _workbook(actors, "bob", "status-meanwhile")
    _trigger(actors, "bob", path)
    waiting = f"/api/job-execution{path}/status?wait=3600"
    answer = _answer_after_losing_the_right(
        actors, path, how, lambda: actors.client.get(waiting, headers=auth("eve"))
    )
    missing_path = path.replace("status-meanwhile", "no-such")
    missing = actors.call("admin", "GET", f"/api/job-execution{missing_path}/status")
    assert missing.status_code == 404, missing.text
    assert answer.status_code == 404, answer.text
    assert answer.text == missing.text.replace(missing_path, path)
