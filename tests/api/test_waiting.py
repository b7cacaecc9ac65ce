"""Trigger and wait, status and wait, and the events stream, through the real app and worker.

Four actors on a job `bob` owns: bob (owner), eve (reads it through a
group, may not run it), mallory (no rights) and admin (ADMIN). No timing
is asserted: a wait that ended is proved by the state it answers.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from datamill.domain.status import JobKind, JobStatus
from datamill.services.waiting import WAIT_THREADS, RunWatch, WaitLimit
from datamill.store import users as user_store
from tests.helpers import (
    execution,
    orders_import,
    password_hash,
    wait_for,
    wait_terminal,
    write_orders_csv,
)
from tests.security.conftest import PASSWORD, Actors
from tests.security.conftest import actors as actors  # the four actors, as fixtures
from tests.security.conftest import running as running

ENDLESS = "SELECT sum(hash(x)) AS s FROM range(1000000000000) AS t(x)"
MISSING_RUN = "Entity of type 'JobExecution' with id '{}' not found."


def _world(actors: Actors, files_root: Path) -> dict[str, int]:
    """bob's import job and endless workbook; eve reads both through a group; mallory nothing."""
    node = actors.node
    node.store.users.create("mallory", password_hash(PASSWORD))
    # bob's private location (every user has one under <files>/users/<name>).
    source = write_orders_csv(files_root / "users" / "bob", rows=5)
    imp, imp_config = node.jobs.define_job(
        "/Data/bob/orders.imp", JobKind.IMPORT, orders_import(source), "bob"
    )
    endless_doc = {"sheets": [{"kind": "sql", "name": "out", "keep": True, "sql": ENDLESS}]}
    wbk, wbk_config = node.jobs.define_job(
        "/Data/bob/endless.wbk", JobKind.WORKBOOK, endless_doc, "bob"
    )
    with node.store.db.write() as conn:
        user_store.insert_group(conn, "readers")
        user_store.replace_groups(conn, "eve", ["readers"])
        for entry in (imp, wbk):
            node.store.files.set_group_flags(
                conn, entry.id, "readers", readable=True, writable=False, executable=False
            )
    return {
        "imp": imp.id,
        "imp_config": imp_config.id,
        "wbk": wbk.id,
        "wbk_config": wbk_config.id,
    }


@pytest.fixture
def world(running: Actors, files_root: Path) -> dict[str, int]:
    return _world(running, files_root)


def _run(actors: Actors, file_id: int) -> int:
    response = actors.call("bob", "POST", f"/api/job-execution/{file_id}/trigger")
    assert response.status_code == 200, response.text
    return int(response.json()["job-execution-id"])


def _stop(actors: Actors, execution_id: int) -> None:
    response = actors.call("bob", "POST", f"/rest/job-execution/job-kill/{execution_id}")
    assert response.status_code == 200, response.text
    wait_terminal(actors.node, execution_id)


# ---------------------------------------------------------------- triggers


@pytest.mark.parametrize("user", ["bob", "admin"])
def test_a_legacy_trigger_with_wait_answers_the_final_state_in_todays_shape(
    running: Actors, world: dict[str, int], user: str
) -> None:
    url = f"/rest/job-execution?configuration={world['imp_config']}&wait=120"
    response = running.call(user, "POST", url)
    assert response.status_code == 200, response.text
    body = response.json()
    assert list(body) == ["id", "jobStatus"]
    assert body["jobStatus"] == "COMPLETED"
    assert "Preference-Applied" not in response.headers
    # The run ended before the answer: the store says so too.
    assert execution(running.node, body["id"]).status is JobStatus.COMPLETED


@pytest.mark.parametrize("user", ["eve", "mallory"])
def test_a_trigger_with_wait_is_refused_as_today_to_who_may_not_run_it(
    running: Actors, world: dict[str, int], user: str
) -> None:
    plain = running.call(user, "POST", f"/rest/job-execution?configuration={world['imp_config']}")
    waiting = running.call(
        user, "POST", f"/rest/job-execution?configuration={world['imp_config']}&wait=5"
    )
    assert (waiting.status_code, waiting.json()) == (plain.status_code, plain.json())
    assert waiting.status_code == (403 if user == "eve" else 404)


def test_the_v2_trigger_with_prefer_wait_adds_the_final_status(
    running: Actors, world: dict[str, int]
) -> None:
    response = running.client.post(
        f"/api/job-execution/{world['imp']}/trigger",
        headers={**_auth("bob"), "Prefer": "respond-async, wait=120"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert list(body) == [
        "status",
        "job-execution-id",
        "job-execution-user",
        "job-execution-trigger",
        "job-status",
    ]
    assert body["job-status"] == "COMPLETED"
    assert response.headers["Preference-Applied"] == "wait=120"


@pytest.mark.parametrize("route", ["legacy", "v2"])
def test_a_retried_keyed_trigger_with_wait_waits_on_the_first_run_and_starts_nothing(
    running: Actors, world: dict[str, int], route: str
) -> None:
    # cron retries `trigger?wait=` with the same Idempotency-Key after a dropped
    # connection: the retry must wait on the run the first try started.
    if route == "legacy":
        url, id_member, status_member = (
            f"/rest/job-execution?configuration={world['imp_config']}&wait=120",
            "id",
            "jobStatus",
        )
    else:
        url, id_member, status_member = (
            f"/api/job-execution/{world['imp']}/trigger?wait=120",
            "job-execution-id",
            "job-status",
        )
    headers = {**_auth("bob"), "Idempotency-Key": f"nightly-{route}"}
    first = running.client.post(url, headers=headers)
    again = running.client.post(url, headers=headers)
    assert first.status_code == again.status_code == 200, (first.text, again.text)
    assert first.json()[status_member] == again.json()[status_member] == "COMPLETED"
    assert again.json()[id_member] == first.json()[id_member]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    history = running.call(
        "bob", "GET", f"/rest/job-configuration/job-history/{world['imp_config']}"
    )
    assert [run["id"] for run in history.json()] == [first.json()[id_member]]


def test_the_v2_trigger_with_a_wait_query_adds_the_final_status(
    running: Actors, world: dict[str, int]
) -> None:
    response = running.call("bob", "POST", f"/api/job-execution/{world['imp']}/trigger?wait=120")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["job-status"] == "COMPLETED"
    assert execution(running.node, body["job-execution-id"]).status is JobStatus.COMPLETED
    assert "Preference-Applied" not in response.headers


def test_a_wait_that_runs_out_answers_the_state_the_run_then_has(
    running: Actors, world: dict[str, int]
) -> None:
    url = f"/rest/job-execution?configuration={world['wbk_config']}&wait=1"
    body = running.call("bob", "POST", url).json()
    assert body["jobStatus"] in ("QUEUED", "RUNNING")
    run = body["id"]
    wait_for(running.node, run, {JobStatus.RUNNING})
    # Now it runs for good: a status wait of a second answers RUNNING, a live document.
    status = running.call("bob", "GET", f"/api/job-execution/{world['wbk']}/status?wait=1")
    assert status.json()["job-status"] == "RUNNING"
    assert list(status.json())[-2:] == ["estimate-time", "job-progress"]
    _stop(running, run)


@pytest.mark.parametrize("value", ["-1", "abc", "3601", "1.5", "", "99999999999999999999", "1e3"])
def test_a_bad_wait_is_a_400_that_starts_nothing(
    running: Actors, world: dict[str, int], value: str
) -> None:
    url = f"/rest/job-execution?configuration={world['imp_config']}&wait={value}"
    response = running.call("bob", "POST", url)
    assert response.status_code == 400
    assert response.json() == {
        "status": "failure",
        "reason": "wait must be a whole number of seconds from 0 to 3600",
    }
    prefer = running.client.post(
        f"/api/job-execution/{world['imp']}/trigger",
        headers={**_auth("bob"), "Prefer": f"wait={value}"},
    )
    assert prefer.status_code == 400
    history = running.call(
        "bob", "GET", f"/rest/job-configuration/job-history/{world['imp_config']}"
    )
    assert history.json() == []


def test_a_sequential_trigger_with_wait_answers_when_the_whole_plan_ended(
    running: Actors, world: dict[str, int], files_root: Path
) -> None:
    node = running.node
    node.jobs.define_job(
        "/Data/bob/totals.wbk",
        JobKind.WORKBOOK,
        {
            "sheets": [
                {"kind": "data", "name": "orders", "source": {"importJob": "/Data/bob/orders.imp"}},
                {
                    "kind": "sql",
                    "name": "n",
                    "keep": True,
                    "sql": "SELECT count(*) AS n FROM orders",
                },
            ]
        },
        "bob",
    )
    response = running.client.post(
        "/api/job-execution/sequential-trigger?wait=120",
        headers=_auth("bob"),
        json={"fileIds": ["/Data/bob/orders.imp", "/Data/bob/totals.wbk"]},
    )
    assert response.status_code == 200, response.text
    plan = response.json()["execution-plan"]
    assert [m["job-status"] for m in plan] == ["COMPLETED", "COMPLETED"]
    assert list(plan[0]) == [
        "job-configuration-name",
        "job-configuration-id",
        "trigger",
        "job-execution-id",
        "job-status",
    ]


# ---------------------------------------------------------------- status


@pytest.mark.parametrize("user", ["bob", "eve", "admin"])
def test_a_status_wait_answers_once_the_newest_run_ended(
    running: Actors, world: dict[str, int], user: str
) -> None:
    run = _run(running, world["imp"])
    response = running.call(user, "GET", f"/api/job-execution/{world['imp']}/status?wait=120")
    body = response.json()
    assert (body["job-execution-id"], body["job-status"]) == (run, "COMPLETED")
    assert "stop-time" in body
    legacy = running.call(
        user, "GET", f"/rest/job-configuration/job-status/{world['imp_config']}?wait=120"
    )
    assert legacy.json() == {"id": run, "jobStatus": "COMPLETED"}


def test_a_status_wait_on_an_unreadable_job_is_the_404_of_a_missing_one(
    running: Actors, world: dict[str, int]
) -> None:
    _run(running, world["wbk"])
    for form in ("status?wait=5", "status"):
        hidden = running.call("mallory", "GET", f"/api/job-execution/{world['wbk']}/{form}")
        missing = running.call("mallory", "GET", f"/api/job-execution/999999/{form}")
        assert hidden.status_code == missing.status_code == 404
        assert hidden.json() == missing.json()
    hidden = running.call(
        "mallory", "GET", f"/rest/job-configuration/job-status/{world['wbk_config']}?wait=5"
    )
    assert hidden.status_code == 404
    assert str(world["wbk_config"]) in hidden.json()["reason"]


def _losing_the_right(actors: Actors, world: dict[str, int], run: int, url: str) -> Any:
    """eve's answer to `url`, asked while the run runs; she loses the right, then it is stopped."""
    wait_for(actors.node, run, {JobStatus.RUNNING})
    answers: list[Any] = []
    waiting = threading.Thread(target=lambda: answers.append(actors.call("eve", "GET", url)))
    waiting.start()
    _until_watched(actors, run)
    with actors.node.store.db.write() as conn:
        actors.node.store.files.delete_group_flags(conn, world["wbk"], "readers")
    _stop(actors, run)
    waiting.join()
    return answers[0]


def test_a_reader_who_loses_the_right_while_waiting_gets_the_404(
    running: Actors, world: dict[str, int]
) -> None:
    run = _run(running, world["wbk"])
    url = f"/api/job-execution/{world['wbk']}/status?wait=120"
    answer = _losing_the_right(running, world, run, url)
    assert answer.status_code == 404, answer.text


def _watch(actors: Actors) -> RunWatch:
    watch: RunWatch = actors.client.app.state.run_watch  # type: ignore[attr-defined]
    return watch


def _until_watched(actors: Actors, execution_id: int, waiters: int = 1) -> None:
    """Until `waiters` requests wait on the run (the watch lists them)."""
    watch = _watch(actors)
    for _ in range(10_000):
        if len(watch._watchers.get(execution_id, ())) >= waiters:
            return
        threading.Event().wait(0.01)
    raise AssertionError("nobody waits on the run")


def test_waiters_woken_together_share_one_status_read_per_caller(
    running: Actors, world: dict[str, int]
) -> None:
    """One read answers many waiters of one caller, yet each caller's rights are checked."""
    run = _run(running, world["wbk"])
    wait_for(running.node, run, {JobStatus.RUNNING})
    callers = ["bob"] * 6 + ["eve"] * 6
    answers: dict[int, Any] = {}

    def ask(index: int, user: str) -> None:
        url = f"/api/job-execution/{world['wbk']}/status?wait=120"
        answers[index] = running.call(user, "GET", url)

    threads = [threading.Thread(target=ask, args=item) for item in enumerate(callers)]
    for thread in threads:
        thread.start()
    _until_watched(running, run, len(callers))
    built = _watch(running).answers_built
    # eve loses the right while waiting; bob keeps his.
    with running.node.store.db.write() as conn:
        running.node.store.files.delete_group_flags(conn, world["wbk"], "readers")
    _stop(running, run)
    for thread in threads:
        thread.join()
    for index, user in enumerate(callers):
        answer = answers[index]
        if user == "bob":
            assert answer.status_code == 200, answer.text
            assert (answer.json()["job-execution-id"], answer.json()["job-status"]) == (
                run,
                "CANCELED",
            )
        else:
            assert answer.status_code == 404, answer.text
    # Fewer status reads than waiters: woken waiters of one caller shared them.
    assert _watch(running).answers_built - built < len(callers)
    assert not _watch(running)._watchers


def _leave_while_waiting(
    actors: Actors, path: str, query: str, user: str, waiting: Callable[[], bool]
) -> list[dict[str, Any]]:
    """A GET through the real app whose client goes away once `waiting()`; what was sent."""
    sent: list[dict[str, Any]] = []

    async def wait_then_leave() -> None:
        left = asyncio.Event()

        async def receive() -> dict[str, Any]:
            await left.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": query.encode(),
            "root_path": "",
            "headers": [
                (b"host", b"testserver"),
                (b"authorization", _auth(user)["Authorization"].encode()),
            ],
            "client": ("127.0.0.1", 50000),
            "server": ("testserver", 80),
        }
        request = asyncio.ensure_future(actors.client.app(scope, receive, send))
        while not waiting():
            assert not request.done(), sent
            await asyncio.sleep(0.01)
        left.set()  # the client goes away
        await request

    actors.client.portal.call(wait_then_leave)  # type: ignore[union-attr]
    return sent


def test_a_client_that_goes_away_stops_waiting_and_the_run_goes_on(
    running: Actors, world: dict[str, int]
) -> None:
    run = _run(running, world["wbk"])
    wait_for(running.node, run, {JobStatus.RUNNING})
    watch = _watch(running)
    path = f"/api/job-execution/{world['wbk']}/status"
    _leave_while_waiting(running, path, "wait=3600", "bob", lambda: run in watch._watchers)
    # The server stopped waiting for it (nobody waits on the run any more)...
    assert run not in watch._watchers
    # ...and the run goes on.
    assert execution(running.node, run).status is JobStatus.RUNNING
    status = running.call("bob", "GET", f"/api/job-execution/{world['wbk']}/status")
    assert status.json()["job-status"] == "RUNNING"
    _stop(running, run)


def _auth(user: str) -> dict[str, str]:
    from tests.security.conftest import auth

    return auth(user)


# ---------------------------------------------------------------- events


def _events(text: str) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if not line.startswith(":"))
        if lines:
            found.append((lines["event"], json.loads(lines["data"])))
    return found


@pytest.mark.parametrize("user", ["bob", "eve", "admin"])
def test_the_events_stream_follows_a_run_to_its_end_in_order(
    running: Actors, world: dict[str, int], user: str
) -> None:
    run = _run(running, world["imp"])
    response = running.call(user, "GET", f"/api/job-execution/{run}/events")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = _events(response.text)
    assert events[-1] == ("end", {"runs": {str(run): "COMPLETED"}})
    states = [d["job-status"] for name, d in events if name == "state"]
    assert states[-1] == "COMPLETED"
    order = ["QUEUED", "RUNNING", "COMPLETED"]
    assert [order.index(s) for s in states] == sorted(order.index(s) for s in states)
    log = [d for name, d in events if name == "log"]
    assert [d["seq"] for d in log] == sorted({d["seq"] for d in log})
    assert log[0]["event"] == "queued" and log[-1]["event"] == "finished"


def test_the_events_of_an_unreadable_run_are_the_404_of_a_missing_one(
    running: Actors, world: dict[str, int]
) -> None:
    run = _run(running, world["imp"])
    hidden = running.call("mallory", "GET", f"/api/job-execution/{run}/events")
    missing = running.call("mallory", "GET", "/api/job-execution/999999/events")
    assert hidden.status_code == missing.status_code == 404
    assert hidden.json()["reason"] == MISSING_RUN.format(run)
    assert missing.json()["reason"] == MISSING_RUN.format(999999)
    both = running.call("mallory", "GET", f"/api/job-execution/999999,{run}/events")
    assert both.json()["reason"] == MISSING_RUN.format(999999)


def test_a_reader_who_loses_the_right_while_streaming_gets_an_error_event_and_no_more(
    running: Actors, world: dict[str, int]
) -> None:
    run = _run(running, world["wbk"])
    answer = _losing_the_right(running, world, run, f"/api/job-execution/{run}/events")
    assert answer.status_code == 200
    events = _events(answer.text)
    # eve saw the run running, then only that it is gone for her: not its end.
    assert any(name == "state" and data["job-status"] == "RUNNING" for name, data in events)
    assert events[-1] == ("error", {"status": "failure", "reason": MISSING_RUN.format(run)})
    assert all(name != "end" for name, _ in events)
    assert "CANCELED" not in answer.text


def test_a_plan_streams_as_the_list_of_its_runs(running: Actors, world: dict[str, int]) -> None:
    first, second = _run(running, world["imp"]), _run(running, world["imp"])
    response = running.call("bob", "GET", f"/api/job-execution/{first},{second}/events")
    events = _events(response.text)
    assert events[-1] == ("end", {"runs": {str(first): "COMPLETED", str(second): "COMPLETED"}})
    ended = {
        d["job-execution-id"] for n, d in events if n == "state" and d["job-status"] == "COMPLETED"
    }
    assert ended == {first, second}


@pytest.mark.parametrize("ids", ["abc", "1,,2", "-1", "1," * 1000 + "1"])
def test_bad_event_ids_are_a_400(running: Actors, world: dict[str, int], ids: str) -> None:
    response = running.call("bob", "GET", f"/api/job-execution/{ids}/events")
    assert response.status_code == 400
    assert "execution id" in response.json()["reason"]


def test_event_streams_read_on_the_waits_own_threads_never_ahead_of_other_requests(
    running: Actors, world: dict[str, int]
) -> None:
    # Attack review: 1,500 streams of one user made every other user's requests
    # take 5-10 s, their reads filling the server's common threads at each
    # change. A stream reads on the run watch's few threads, as waits do: with
    # those all busy, a stream queues there while other requests are served.
    run = _run(running, world["imp"])
    wait_terminal(running.node, run)
    watch = _watch(running)
    portal = running.client.portal  # type: ignore[attr-defined]
    borrowers = [object() for _ in range(WAIT_THREADS)]

    async def occupy() -> None:
        watch._bind()
        assert watch._limiter is not None
        for borrower in borrowers:
            await watch._limiter.acquire_on_behalf_of(borrower)

    async def release() -> None:
        assert watch._limiter is not None
        for borrower in borrowers:
            watch._limiter.release_on_behalf_of(borrower)

    def queued() -> int:
        assert watch._limiter is not None
        return int(watch._limiter.statistics().tasks_waiting)

    portal.call(occupy)
    answers: dict[str, Any] = {}
    url = f"/api/job-execution/{run}/events"
    stream = threading.Thread(target=lambda: answers.update(r=running.call("bob", "GET", url)))
    stream.start()
    try:
        deadline = 600
        while queued() < 1 and deadline:
            deadline -= 1
            stream.join(0.1)
        assert queued() == 1, "the stream did not queue on the waits' own threads"
        other = running.call("eve", "GET", f"/api/job-execution/{world['imp']}/status")
        assert other.status_code == 200 and other.json()["job-status"] == "COMPLETED"
        assert "r" not in answers
    finally:
        portal.call(release)
        stream.join()
    assert _events(answers["r"].text)[-1] == ("end", {"runs": {str(run): "COMPLETED"}})


# ---------------------------------------------------------------- the per-user cap


def _limit(actors: Actors, per_user: int | None = None) -> WaitLimit:
    limit: WaitLimit = actors.client.app.state.wait_limit  # type: ignore[attr-defined]
    if per_user is not None:
        limit.per_user = per_user
    return limit


def _assert_too_many(response: Any) -> None:
    assert response.status_code == 429, response.text
    assert response.json()["status"] == "failure"
    assert response.json()["reason"].startswith("you already hold 2 waiting requests")
    assert response.headers["Retry-After"] == "5"


def test_a_user_at_her_cap_of_waits_gets_a_429_that_starts_nothing_and_others_wait_on(
    running: Actors, world: dict[str, int]
) -> None:
    assert _limit(running).per_user == 100  # DATAMILL_MAX_WAITS_PER_USER's default
    limit = _limit(running, per_user=2)
    run = _run(running, world["wbk"])
    answers: dict[int, Any] = {}

    def ask(index: int) -> None:
        url = f"/api/job-execution/{world['wbk']}/status?wait=120"
        answers[index] = running.call("bob", "GET", url)

    threads = [threading.Thread(target=ask, args=(index,)) for index in range(2)]
    for thread in threads:
        thread.start()
    try:
        _until_watched(running, run, 2)
        assert limit.held("bob") == 2
        # One more wait of bob's, on any waiting route: a 429, and no run starts.
        config, imp = world["imp_config"], world["imp"]
        _assert_too_many(
            running.call("bob", "POST", f"/rest/job-execution?configuration={config}&wait=60")
        )
        _assert_too_many(running.call("bob", "POST", f"/api/job-execution/{imp}/trigger?wait=60"))
        prefer = running.client.post(
            f"/api/job-execution/{imp}/trigger", headers={**_auth("bob"), "Prefer": "wait=60"}
        )
        _assert_too_many(prefer)
        plan = running.client.post(
            "/api/job-execution/sequential-trigger?wait=60",
            headers=_auth("bob"),
            json={"fileIds": [imp]},
        )
        _assert_too_many(plan)
        _assert_too_many(running.call("bob", "GET", f"/api/job-execution/{imp}/status?wait=60"))
        _assert_too_many(
            running.call("bob", "GET", f"/rest/job-configuration/job-status/{config}?wait=5")
        )
        _assert_too_many(running.call("bob", "GET", f"/api/job-execution/{run}/events"))
        history = running.call("bob", "GET", f"/rest/job-configuration/job-history/{config}")
        assert history.json() == []
        # A request without wait is not counted.
        plain = running.call("bob", "GET", f"/api/job-execution/{world['wbk']}/status")
        assert plain.json()["job-status"] in ("QUEUED", "RUNNING")
        # Another user waits as before, on this very job too.
        other = running.call(
            "admin", "POST", f"/rest/job-execution?configuration={config}&wait=120"
        )
        assert other.status_code == 200 and other.json()["jobStatus"] == "COMPLETED"
        assert limit.held("admin") == 0
        assert limit.held("bob") == 2
    finally:
        _stop(running, run)
        for thread in threads:
            thread.join()
    assert [answers[i].json()["job-status"] for i in range(2)] == ["CANCELED", "CANCELED"]
    # Her waits ended: she may wait again.
    assert limit.held("bob") == 0
    again = running.call("bob", "POST", f"/rest/job-execution?configuration={config}&wait=120")
    assert again.status_code == 200 and again.json()["jobStatus"] == "COMPLETED"
    assert limit.held("bob") == 0


def test_every_way_a_wait_ends_gives_its_place_back(running: Actors, world: dict[str, int]) -> None:
    limit = _limit(running)
    run = _run(running, world["wbk"])
    wait_for(running.node, run, {JobStatus.RUNNING})
    status_path = f"/api/job-execution/{world['wbk']}/status"
    try:
        # The time is up.
        timed_out = running.call("bob", "GET", f"{status_path}?wait=1")
        assert timed_out.json()["job-status"] == "RUNNING"
        assert limit.held("bob") == 0
        # Errors: a job hidden from the caller, a trigger refused, a run she may not read.
        hidden = running.call("mallory", "GET", f"{status_path}?wait=60")
        assert hidden.status_code == 404
        refused = running.call("eve", "POST", f"/api/job-execution/{world['imp']}/trigger?wait=60")
        assert refused.status_code == 403
        unreadable = running.call("mallory", "GET", f"/api/job-execution/{run}/events")
        assert unreadable.status_code == 404
        assert (limit.held("mallory"), limit.held("eve")) == (0, 0)
        # The client goes away: from a status wait, and from an events stream.
        watch = _watch(running)
        _leave_while_waiting(
            running, status_path, "wait=3600", "bob", lambda: run in watch._watchers
        )
        assert limit.held("bob") == 0
        sent = _leave_while_waiting(
            running, f"/api/job-execution/{run}/events", "", "eve", lambda: run in watch._watchers
        )
        assert sent[0]["status"] == 200
        assert b"RUNNING" in b"".join(message.get("body", b"") for message in sent)
        assert limit.held("eve") == 0
        # A stream that ends with an error event (eve lost the right; the run is stopped).
        stream = _losing_the_right(running, world, run, f"/api/job-execution/{run}/events")
        assert _events(stream.text)[-1][0] == "error"
        assert limit.held("eve") == 0
    finally:
        if not execution(running.node, run).status.is_terminal:
            _stop(running, run)
    # A stream that ends with its run, and a trigger that answers the end.
    ended = running.call("bob", "GET", f"/api/job-execution/{run}/events")
    assert _events(ended.text)[-1] == ("end", {"runs": {str(run): "CANCELED"}})
    done = running.call("bob", "POST", f"/api/job-execution/{world['imp']}/trigger?wait=120")
    assert done.json()["job-status"] == "COMPLETED"
    plan = running.client.post(
        "/api/job-execution/sequential-trigger?wait=120",
        headers=_auth("bob"),
        json={"fileIds": [world["imp"]]},
    )
    assert [m["job-status"] for m in plan.json()["execution-plan"]] == ["COMPLETED"]
    assert limit.held("bob") == 0
