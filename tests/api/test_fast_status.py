"""The status fast path answers exactly as the FastAPI route, and only when it may."""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from datamill.api.app import STATUS_ROUTE, DatamillApp, create_app
from datamill.api.fast_status import FastStatus
from datamill.bootstrap import Node
from datamill.domain.status import JobKind, JobStatus
from datamill.store import users as user_rows
from datamill.store.queue import Outcome
from tests.helpers import admin, password_hash

WORKBOOK = {
    "kind": "workbook",
    "sheets": [{"kind": "sql", "name": "out", "keep": True, "sql": "SELECT 1 AS one"}],
}


def _auth(name: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{name}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


ADMIN = _auth("admin", "secret")


class Pair:
    """The same node behind the app with the fast path and the app without it."""

    def __init__(self, node: Node) -> None:
        self.node = node
        fast_app = create_app(node.settings, node.jobs)
        assert isinstance(fast_app, DatamillApp) and fast_app.fast_status is not None
        self.fast_status: FastStatus = fast_app.fast_status
        self.fast = TestClient(fast_app)
        self.slow = TestClient(create_app(node.settings, node.jobs, fast_status=False))

    def both(self, path: str, headers: dict[str, str]) -> tuple[bool, tuple[int, str, str, str]]:
        """Ask both apps twice (the first call logs in); whether the fast path answered."""
        self.fast.get(path, headers=headers)
        before = self.fast_status.answered
        fast = self.fast.get(path, headers=headers)
        answered = self.fast_status.answered > before
        slow = self.slow.get(path, headers=headers)
        seen = [
            (r.status_code, r.headers["content-type"], r.headers["content-length"], r.text)
            for r in (fast, slow)
        ]
        assert seen[0] == seen[1]
        # The same headers in the same order (the request id's value differs).
        names = [[name for name, _ in r.headers.raw] for r in (fast, slow)]
        assert names[0] == names[1]
        return answered, seen[0]


@pytest.fixture
def pair(node: Node) -> Iterator[Pair]:
    """Both apps, started."""
    made = Pair(node)
    with made.fast, made.slow:
        yield made


def _job(node: Node, path: str = "/w/job.wbk", owner: str = "admin") -> int:
    entry, _ = node.jobs.define_job(path, JobKind.WORKBOOK, WORKBOOK, owner)
    return entry.id


def freeze_clock(monkeypatch: pytest.MonkeyPatch, frozen: dt.datetime) -> None:
    """Fix the clock both paths estimate with at `frozen` (naive UTC, as the store keeps it)."""
    monkeypatch.setattr("datamill.services.jobs.utcnow", lambda: frozen)
    # The fast path reads the POSIX clock.
    posix = frozen.replace(tzinfo=dt.UTC).timestamp()
    monkeypatch.setattr("datamill.api.fast_status.posix_now", lambda: posix)


def _status(file_id: int) -> str:
    return f"/api/job-execution/{file_id}/status"


def test_every_state_is_answered_fast_and_identically(pair: Pair, node: Node) -> None:
    file_id = _job(node)
    answered, (code, _, _, text) = pair.both(_status(file_id), ADMIN)
    assert answered and code == 200 and '"job-status": "_NONE"' in text

    user = admin(node)
    queued = node.jobs.trigger(str(file_id), user)
    answered, (_, _, _, text) = pair.both(_status(file_id), ADMIN)
    # A run not started yet is the route's: it adds the queue position (issue 15).
    assert not answered and '"job-status": "QUEUED"' in text and '"start-time": null' in text
    assert '"queue-position": 1' in text

    running = node.store.queue.claim_next_execution("w1")
    assert running is not None and running.id == queued.id
    answered, (code, _, _, text) = pair.both(_status(file_id), ADMIN)
    # RUNNING carries an estimate, computed alike on both paths.
    assert answered and code == 200 and '"job-progress": "0"' in text

    node.store.queue.finish(running, "w1", Outcome(JobStatus.COMPLETED, success_count=1))
    answered, (_, _, _, text) = pair.both(_status(file_id), ADMIN)
    assert answered and '"job-status": "COMPLETED"' in text and '"stop-time": "' in text

    failed = node.jobs.trigger(str(file_id), user)
    claimed = node.store.queue.claim_next_execution("w1")
    assert claimed is not None and claimed.id == failed.id
    node.store.queue.finish(claimed, "w1", Outcome(JobStatus.ERROR, error_message="boom"))
    answered, (_, _, _, text) = pair.both(_status(file_id), ADMIN)
    assert answered and '"job-status": "ERROR"' in text

    node.jobs.trigger(str(file_id), user)
    node.jobs.stop(str(file_id), user)
    answered, (_, _, _, text) = pair.both(_status(file_id), ADMIN)
    assert answered and '"job-status": "CANCELED"' in text and '"start-time": null' in text


def test_tolerated_path_forms_take_the_fast_path(pair: Pair, node: Node) -> None:
    file_id = _job(node)
    plain = pair.both(_status(file_id), ADMIN)[1]
    doubled = f"http://testserver//api/job-execution/{file_id}/status"
    for path in (doubled, f"{_status(file_id)}/"):
        answered, seen = pair.both(path, ADMIN)
        assert answered and seen == plain


def test_refusals_are_left_to_the_route_and_look_the_same(pair: Pair, node: Node) -> None:
    node.store.users.create("ann", password_hash("pw-ann"))
    mine = _job(node, "/w/ann.wbk", owner="ann")
    private = _job(node, "/w/private.wbk")
    missing = private + 1000
    cases = [
        (_status(private), _auth("admin", "wrong"), 401),
        (_status(private), _auth("nobody", "x"), 401),
        (_status(private), {}, 401),
        (_status(private), _auth("ann", "pw-ann"), 404),
        (_status(missing), _auth("ann", "pw-ann"), 404),
        (_status(missing), ADMIN, 404),
    ]
    bodies = {}
    for path, headers, code in cases:
        answered, seen = pair.both(path, headers)
        assert not answered and seen[0] == code
        bodies[(path, code)] = seen[3]
    # Someone else's private job and a missing one are indistinguishable.
    assert bodies[(_status(private), 404)] == bodies[(_status(missing), 404)]
    answered, seen = pair.both(_status(mine), _auth("ann", "pw-ann"))
    assert answered and seen[0] == 200


def test_sharing_through_others_or_a_group_is_honoured(pair: Pair, node: Node) -> None:
    node.store.users.create("bob", password_hash("pw-bob"), groups=("sales",))
    shared = _job(node, "/w/shared.wbk")
    bob = _auth("bob", "pw-bob")
    assert pair.both(_status(shared), bob)[1][0] == 404
    with node.store.db.write() as conn:
        node.store.files.set_group_flags(
            conn, shared, "sales", readable=True, writable=False, executable=False
        )
    answered, seen = pair.both(_status(shared), bob)
    assert answered and seen[0] == 200
    with node.store.db.write() as conn:
        user_rows.replace_groups(conn, "bob", [])
    assert pair.both(_status(shared), bob)[1][0] == 404
    with node.store.db.write() as conn:
        node.store.files.set_others_flags(
            conn, shared, readable=True, writable=False, executable=False
        )
    answered, seen = pair.both(_status(shared), bob)
    assert answered and seen[0] == 200


def test_changes_to_a_user_take_effect_on_the_next_request(pair: Pair, node: Node) -> None:
    node.store.users.create("cid", password_hash("old"), roles=("ADMIN",))
    file_id = _job(node)
    old = _auth("cid", "old")
    assert pair.both(_status(file_id), old)[0]  # cached and answered fast
    # Losing ADMIN hides a job cid does not own, at once.
    with node.store.db.write() as conn:
        user_rows.replace_roles(conn, "cid", ["ANALYST"])
    assert pair.fast.get(_status(file_id), headers=old).status_code == 404
    with node.store.db.write() as conn:
        user_rows.replace_roles(conn, "cid", ["ADMIN"])
    assert pair.fast.get(_status(file_id), headers=old).status_code == 200
    # A new password: the old one is refused on the very next request.
    node.store.users.set_password_hash("cid", password_hash("new"))
    assert pair.fast.get(_status(file_id), headers=old).status_code == 401
    assert pair.fast.get(_status(file_id), headers=_auth("cid", "new")).status_code == 200
    # A deleted user is refused at once, though their password was cached.
    with node.store.db.write() as conn:
        user_rows.delete_user(conn, "cid")
    assert pair.fast.get(_status(file_id), headers=_auth("cid", "new")).status_code == 401


def test_a_fast_answer_carries_a_request_id_and_is_counted(pair: Pair, node: Node) -> None:
    path = _status(_job(node))
    pair.fast.get(path, headers=ADMIN)  # the first login takes the route
    registry = node.store.metrics.registry
    labels = {"method": "GET", "route": STATUS_ROUTE, "status": "200"}

    def counted() -> tuple[float, float]:
        requests = registry.get_sample_value("datamill_http_requests_total", labels)
        timed = registry.get_sample_value(
            "datamill_http_request_duration_seconds_count", {"route": STATUS_ROUTE}
        )
        return requests or 0.0, timed or 0.0

    before, answered = counted(), pair.fast_status.answered
    given = pair.fast.get(path, headers={**ADMIN, "X-Request-Id": "poll-7.a"})
    insane = pair.fast.get(path, headers={**ADMIN, "X-Request-Id": "has space"})
    made = [pair.fast.get(path, headers=ADMIN) for _ in range(2)]
    assert pair.fast_status.answered == answered + 4
    assert all(r.status_code == 200 and '"job-status": "_NONE"' in r.text for r in made)
    assert given.headers["x-request-id"] == "poll-7.a"
    ids = [r.headers["x-request-id"] for r in (insane, *made)]
    assert len(set(ids)) == 3 and all(len(i) == 32 and i.isalnum() for i in ids)
    # Each answer counted once, under the route's template, and timed.
    assert counted() == (before[0] + 4, before[1] + 4)
