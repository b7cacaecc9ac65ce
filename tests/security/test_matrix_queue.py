"""Four actors on issue 15's additions: keyed triggers, queue position and expected start.

The matrix world (tests/security/matrix.py): a job of `owner` that `reader`
may only read, `stranger` with no rights on it, and `admin`. Sent with
headers of our own, so the matrix's Call stays as it is.
"""

from __future__ import annotations

import base64
from typing import Any

import httpx
import sqlalchemy as sa

from datamill.domain.status import JobKind
from datamill.store import tables as t
from tests.security.matrix import DEFINITIONS, MISSING_ID, RUN_DENIED, World, run_status
from tests.security.matrix import world as world  # one node per backend for this module


def _send(
    world: World, actor: str, method: str, url: str, key: str | None = None
) -> httpx.Response:
    headers = {"Authorization": "Basic " + base64.b64encode(f"{actor}:pw".encode()).decode()}
    if key is not None:
        headers["Idempotency-Key"] = key
    return world.client.request(method, url, headers=headers)


def _count(world: World, column: sa.Column[Any], value: object) -> int:
    with world.node.store.db.read() as conn:
        query = sa.select(sa.func.count()).select_from(column.table).where(column == value)
        return int(conn.execute(query).scalar_one())


def _runs_of(world: World, config_id: int) -> int:
    return _count(world, t.executions.c.job_configuration_id, config_id)


def _keys_of(world: World, actor: str) -> int:
    return _count(world, t.idempotency_keys.c.user_name, actor)


def test_keyed_trigger_by_four_actors(world: World) -> None:
    job = world.job()
    url = f"/api/job-execution/{job.file_id}/trigger"
    key = world.name("key-")
    answers: dict[str, Any] = {}
    for actor in ("owner", "admin"):
        first = _send(world, actor, "POST", url, key)
        assert first.status_code == 200, first.text
        assert first.json()["job-execution-user"] == actor
        again = _send(world, actor, "POST", url, key)
        assert again.content == first.content and again.headers["idempotent-replayed"] == "true"
        answers[actor] = first.json()["job-execution-id"]
    # One key, two users: two runs, each user's own.
    assert answers["owner"] != answers["admin"]
    assert _runs_of(world, job.config_id) == 2

    # The reader may not run it: the same refusal each time, nothing kept, nothing run.
    for _ in range(2):
        refused = _send(world, "reader", "POST", url, key)
        assert (refused.status_code, refused.json()) == (
            403,
            {"status": "failure", "reason": RUN_DENIED.format(path=job.path)},
        )
    assert _keys_of(world, "reader") == 0
    # The stranger gets what a missing job gets, with or without the owner's key.
    hidden = _send(world, "stranger", "POST", url, key)
    missing = _send(world, "stranger", "POST", f"/api/job-execution/{MISSING_ID}/trigger", key)
    assert hidden.status_code == missing.status_code == 404
    assert hidden.json()["reason"].replace(str(job.file_id), "?") == missing.json()[
        "reason"
    ].replace(str(MISSING_ID), "?")
    assert _keys_of(world, "stranger") == 0
    assert _runs_of(world, job.config_id) == 2


def test_queue_position_by_four_actors(world: World) -> None:
    target = world.queued(world.job())
    run = target.extra["execution"]
    status_url = f"/api/job-execution/{target.file_id}/status"
    positions = []
    for actor in ("owner", "reader", "admin"):
        status = _send(world, actor, "GET", status_url)
        assert status.status_code == 200, status.text
        assert status.json()["job-execution-id"] == run
        positions.append(status.json()["queue-position"])
        listed = {
            item["jobExecutionId"]: item
            for item in _send(world, actor, "GET", "/api/job-execution/list-running").json()
        }
        assert listed[run]["queuePosition"] == status.json()["queue-position"]
    assert len(set(positions)) == 1 and positions[0] >= 1

    hidden = _send(world, "stranger", "GET", status_url)
    missing = _send(world, "stranger", "GET", f"/api/job-execution/{MISSING_ID}/status")
    assert hidden.status_code == missing.status_code == 404
    assert hidden.json()["reason"].replace(str(target.file_id), "?") == missing.json()[
        "reason"
    ].replace(str(MISSING_ID), "?")
    strangers = _send(world, "stranger", "GET", "/api/job-execution/list-running").json()
    assert run not in [item["jobExecutionId"] for item in strangers]

    # The stranger's own run queued behind it counts it (a number), naming nothing.
    own, _ = world.node.jobs.define_job(
        f"/Data/ImportJobs/{world.name('s')}.imp",
        JobKind.IMPORT,
        DEFINITIONS[JobKind.IMPORT](world),
        "stranger",
    )
    queued = _send(world, "stranger", "POST", f"/api/job-execution/{own.id}/trigger")
    assert queued.status_code == 200, queued.text
    mine = _send(world, "stranger", "GET", f"/api/job-execution/{own.id}/status").json()
    assert mine["queue-position"] > positions[0]
    listed = _send(world, "stranger", "GET", "/api/job-execution/list-running").json()
    (own_item,) = [i for i in listed if i["jobExecutionId"] == queued.json()["job-execution-id"]]
    assert own_item["queuePosition"] == mine["queue-position"]
    assert run_status(world, run).value == "QUEUED"
