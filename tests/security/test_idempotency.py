"""Safe retried triggers: the Idempotency-Key on every trigger route (issue 15).

The real app over a real store on SQLite and PostgreSQL; no worker runs, so
every run a request starts stays QUEUED and is counted in the executions table.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from datamill.api.app import create_app
from datamill.bootstrap import open_node
from datamill.store import tables as t
from datamill.store import users as user_rows
from datamill.worker.housekeeping import forget_expired_keys
from tests.helpers import config_id, password_hash
from tests.security.conftest import PASSWORD, Actors, auth

KEY = "7c9e6679-7425-40de-944b-e07fc1f90ae7"


def _workbook(actors: Actors, user: str, name: str) -> str:
    """A one-sheet workbook owned by `user` that nobody else may read; returns its path."""
    path = f"/Analytics/Workbooks/{name}.wbk"
    document = {
        "path": path,
        "sheets": [{"kind": "sql", "name": "out", "keep": True, "sql": "SELECT 1 AS n"}],
    }
    created = actors.call(user, "POST", "/rest/workbook", document)
    assert created.status_code == 200, created.text
    return path


def _config_id(actors: Actors, path: str) -> int:
    return config_id(actors.node, path)


def _runs(actors: Actors) -> int:
    with actors.node.store.db.read() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(t.executions)).scalar_one())


def _keys(actors: Actors) -> int:
    with actors.node.store.db.read() as conn:
        count = conn.execute(sa.select(sa.func.count()).select_from(t.idempotency_keys))
        return int(count.scalar_one())


Send = Callable[[Actors, str, str, str | None], httpx.Response]


def _v2(actors: Actors, user: str, path: str, key: str | None) -> httpx.Response:
    headers = auth(user) | ({"Idempotency-Key": key} if key is not None else {})
    return actors.client.post(f"/api/job-execution{path}/trigger", headers=headers)


def _legacy(actors: Actors, user: str, path: str, key: str | None) -> httpx.Response:
    headers = auth(user) | ({"Idempotency-Key": key} if key is not None else {})
    config = _config_id(actors, path)
    return actors.client.post(f"/rest/job-execution?configuration={config}", headers=headers)


def _sequential(
    actors: Actors, user: str, path: str, key: str | None, region: str = "north"
) -> httpx.Response:
    headers = auth(user) | ({"Idempotency-Key": key} if key is not None else {})
    # Datameer's lenient JSON, as curl -d sends it.
    body = '{fileIds: ["' + path + '"], variables: {region: ' + region + "}}"
    return actors.client.post(
        "/api/job-execution/sequential-trigger", headers=headers, content=body
    )


ROUTES: dict[str, Send] = {"v2": _v2, "legacy": _legacy, "sequential": _sequential}


def _execution_ids(body: dict[str, Any]) -> list[int]:
    if "execution-plan" in body:
        return [m["job-execution-id"] for m in body["execution-plan"]]
    return [body.get("job-execution-id") or body["id"]]


@pytest.mark.parametrize("route", ROUTES)
def test_a_retried_trigger_gets_the_first_answer_and_starts_nothing(
    actors: Actors, route: str
) -> None:
    send = ROUTES[route]
    path = _workbook(actors, "eve", "retried")
    first = send(actors, "eve", path, KEY)
    assert first.status_code == 200, first.text
    assert "idempotent-replayed" not in first.headers
    runs = _runs(actors)

    again = send(actors, "eve", path, KEY)
    assert again.status_code == 200
    assert again.content == first.content  # the same bytes, so the same execution ids
    assert again.headers["content-type"] == "application/json"
    assert again.headers["idempotent-replayed"] == "true"
    assert _runs(actors) == runs

    # The quoted form of the IETF draft names the same key.
    quoted = send(actors, "eve", path, f'"{KEY}"')
    assert quoted.content == first.content and _runs(actors) == runs

    # A new key (or none) is a new request: a new run.
    fresh = send(actors, "eve", path, "another-key")
    assert fresh.status_code == 200
    assert _execution_ids(fresh.json()) != _execution_ids(first.json())
    plain = send(actors, "eve", path, None)
    assert plain.status_code == 200 and "idempotent-replayed" not in plain.headers
    assert _runs(actors) == runs + 2


def test_without_the_header_no_key_is_stored(actors: Actors) -> None:
    path = _workbook(actors, "eve", "plain")
    for send in ROUTES.values():
        assert send(actors, "eve", path, None).status_code == 200
    assert _keys(actors) == 0


def test_the_same_key_for_another_request_is_a_422(actors: Actors) -> None:
    one = _workbook(actors, "eve", "one")
    two = _workbook(actors, "eve", "two")
    assert _v2(actors, "eve", one, KEY).status_code == 200
    runs = _runs(actors)
    reused = "this Idempotency-Key was already used for a different request"
    # Another job, another route for the same job, another body.
    for refused in (
        _v2(actors, "eve", two, KEY),
        _legacy(actors, "eve", one, KEY),
        _sequential(actors, "eve", one, KEY),
    ):
        assert refused.status_code == 422
        assert refused.json()["status"] == "failure"
        assert refused.json()["reason"].startswith(reused)
    assert _sequential(actors, "eve", one, "plan-key").status_code == 200
    other_variables = _sequential(actors, "eve", one, "plan-key", region="south")
    assert other_variables.status_code == 422
    assert _runs(actors) == runs + 1


def test_concurrent_requests_with_one_key_start_one_run(actors: Actors) -> None:
    path = _workbook(actors, "eve", "raced")
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: _v2(actors, "eve", path, KEY), range(16)))
    assert {a.status_code for a in answers} == {200}
    assert len({a.content for a in answers}) == 1
    assert sum("idempotent-replayed" not in a.headers for a in answers) == 1
    assert _runs(actors) == 1


def test_keys_survive_a_restart(actors: Actors) -> None:
    path = _workbook(actors, "eve", "restarted")
    first = _v2(actors, "eve", path, KEY)
    assert first.status_code == 200
    actors.client.close()
    node = open_node(actors.node.settings)
    try:
        with TestClient(create_app(node.settings, node.jobs)) as client:
            again = client.post(
                f"/api/job-execution{path}/trigger", headers=auth("eve") | {"Idempotency-Key": KEY}
            )
    finally:
        node.store.close()
    assert again.status_code == 200 and again.content == first.content
    assert _runs(actors) == 1


def test_keys_are_per_user_and_reveal_nothing(actors: Actors) -> None:
    eves = _workbook(actors, "eve", "eves")
    bobs = _workbook(actors, "bob", "bobs")
    first = _v2(actors, "eve", eves, KEY)
    # Eve's very request, sent by bob with her key: her job is hidden from him,
    # exactly as a job that does not exist; her answer is not his.
    hidden = _v2(actors, "bob", eves, KEY)
    missing = _v2(actors, "bob", "/Analytics/Workbooks/nothing-here.wbk", "unused")
    assert hidden.status_code == missing.status_code == 404
    assert hidden.json() == missing.json()
    # bob's own request with eve's key is his own: his run, no replay and no 422.
    mine = _v2(actors, "bob", bobs, KEY)
    assert mine.status_code == 200 and "idempotent-replayed" not in mine.headers
    assert mine.json()["job-execution-user"] == "bob"
    assert mine.json()["job-execution-id"] != first.json()["job-execution-id"]
    # Now bob's key names his request: for any other (a hidden job or none) it is a
    # 422 about his own key, the same whether eve's job exists or not.
    reused = _v2(actors, "bob", eves, KEY)
    nothing = _v2(actors, "bob", "/Analytics/Workbooks/nothing-here.wbk", KEY)
    assert reused.status_code == nothing.status_code == 422
    assert reused.json() == nothing.json()
    assert _v2(actors, "eve", eves, KEY).content == first.content
    assert _runs(actors) == 2


def test_an_expired_key_starts_a_new_run_and_housekeeping_forgets_it(actors: Actors) -> None:
    path = _workbook(actors, "eve", "expired")
    first = _v2(actors, "eve", path, KEY)
    assert _v2(actors, "eve", path, "kept").status_code == 200
    day_ago = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(hours=24, seconds=5)
    with actors.node.store.db.write() as conn:
        conn.execute(
            sa.update(t.idempotency_keys)
            .where(t.idempotency_keys.c.key == KEY)
            .values(created_at=day_ago)
        )
    again = _v2(actors, "eve", path, KEY)
    assert again.status_code == 200 and "idempotent-replayed" not in again.headers
    assert again.json()["job-execution-id"] != first.json()["job-execution-id"]
    assert _v2(actors, "eve", path, KEY).content == again.content  # renewed for 24 hours
    assert _runs(actors) == 3

    with actors.node.store.db.write() as conn:
        conn.execute(sa.update(t.idempotency_keys).values(created_at=day_ago))
    assert forget_expired_keys(actors.node.store) == 2
    assert _keys(actors) == 0


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("", "the Idempotency-Key is empty"),
        ('""', "the Idempotency-Key is empty"),
        ("k" * 256, "the Idempotency-Key is longer than 255 characters"),
        ("two words", "the Idempotency-Key may hold only letters, digits and . _ : ~ + / = -"),
        ("semi;colon", "the Idempotency-Key may hold only letters, digits and . _ : ~ + / = -"),
    ],
)
@pytest.mark.parametrize("route", ROUTES)
def test_a_bad_key_is_a_400_and_starts_nothing(
    actors: Actors, route: str, key: str, reason: str
) -> None:
    path = _workbook(actors, "eve", "badkey")
    refused = ROUTES[route](actors, "eve", path, key)
    assert refused.status_code == 400
    assert refused.json() == {"status": "failure", "reason": reason}
    assert _runs(actors) == 0 and _keys(actors) == 0


def test_the_longest_key_is_accepted_and_two_keys_are_refused(actors: Actors) -> None:
    path = _workbook(actors, "eve", "longest")
    assert _v2(actors, "eve", path, "k" * 255).status_code == 200
    two = actors.client.post(
        f"/api/job-execution{path}/trigger",
        headers=[*auth("eve").items(), ("Idempotency-Key", "a"), ("Idempotency-Key", "b")],
    )
    assert two.status_code == 400
    assert two.json()["reason"] == "send at most one Idempotency-Key header"
    assert _runs(actors) == 1


def test_a_failed_request_keeps_no_key(actors: Actors) -> None:
    path = _workbook(actors, "eve", "later")
    missing = _v2(actors, "eve", "/Analytics/Workbooks/later-typo.wbk", KEY)
    assert missing.status_code == 404
    assert _keys(actors) == 0
    # The retry with the reference fixed runs: the 404 was not remembered.
    fixed = _v2(actors, "eve", path, KEY)
    assert fixed.status_code == 200 and "idempotent-replayed" not in fixed.headers
    assert _runs(actors) == 1


def test_a_bad_key_without_credentials_is_still_a_401(actors: Actors) -> None:
    path = _workbook(actors, "eve", "anon")
    anonymous = actors.client.post(
        f"/api/job-execution{path}/trigger", headers={"Idempotency-Key": "bad key"}
    )
    assert anonymous.status_code == 401


def test_a_user_created_again_under_a_deleted_name_gets_no_replay(actors: Actors) -> None:
    eves = _workbook(actors, "eve", "before")
    kept = _v2(actors, "eve", eves, KEY)
    assert kept.status_code == 200
    assert actors.call("admin", "DELETE", "/rest/user-management/users/eve").status_code == 200
    assert _keys(actors) == 0
    actors.node.store.users.create("eve", password_hash(PASSWORD))
    again = _workbook(actors, "eve", "after")
    fresh = _v2(actors, "eve", again, KEY)
    assert fresh.status_code == 200 and "idempotent-replayed" not in fresh.headers
    assert fresh.json()["job-execution-id"] != kept.json()["job-execution-id"]


@pytest.mark.parametrize("route", ROUTES)
def test_a_replay_needs_the_role_to_run_jobs_but_not_the_files_flags_again(
    actors: Actors, route: str
) -> None:
    send = ROUTES[route]
    # bob's workbook, which eve may run through a group.
    path = _workbook(actors, "bob", "shared")
    with actors.node.store.db.write() as conn:
        entry = actors.node.store.files.find(conn, path)
        assert entry is not None
        user_rows.insert_group(conn, "runners")
        user_rows.replace_groups(conn, "eve", ["runners"])
        actors.node.store.files.set_group_flags(
            conn, entry.id, "runners", readable=True, writable=False, executable=True
        )
    first = send(actors, "eve", path, KEY)
    assert first.status_code == 200, first.text

    # bob unshares it: the replay still answers the first answer (the flags are
    # not checked again, docs/decisions.md).
    with actors.node.store.db.write() as conn:
        actors.node.store.files.set_group_flags(
            conn, entry.id, "runners", readable=False, writable=False, executable=False
        )
    unshared = send(actors, "eve", path, KEY)
    assert unshared.status_code == 200 and unshared.content == first.content

    # eve loses every role: the replay is the 403 of a trigger without a key.
    eves_roles = actors.call("admin", "PUT", "/rest/user-management/users/eve", {"roles": []})
    assert eves_roles.status_code == 200, eves_roles.text
    runs = _runs(actors)
    replay = send(actors, "eve", path, KEY)
    plain = send(actors, "eve", path, None)
    assert replay.status_code == plain.status_code == 403
    assert replay.json() == plain.json()
    assert replay.json()["reason"].startswith("your roles do not allow you to run or stop jobs")
    assert "idempotent-replayed" not in replay.headers
    assert _runs(actors) == runs

    # The refusal did not burn the key: with her role back, the replay answers again.
    back = actors.call("admin", "PUT", "/rest/user-management/users/eve", {"roles": ["ANALYST"]})
    assert back.status_code == 200, back.text
    again = send(actors, "eve", path, KEY)
    assert again.status_code == 200 and again.content == first.content
    assert again.headers["idempotent-replayed"] == "true"
    assert _runs(actors) == runs
