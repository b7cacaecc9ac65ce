"""The trigger fast path answers exactly as the FastAPI route, and leaves the rest to it."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient

from datamill.api.app import DatamillApp, create_app
from datamill.bootstrap import Node
from datamill.domain.status import JobKind
from tests.helpers import password_hash

WORKBOOK = {
    "kind": "workbook",
    "sheets": [{"kind": "sql", "name": "out", "keep": True, "sql": "SELECT 1 AS one"}],
}


def _auth(name: str, password: str = "pw") -> dict[str, str]:
    token = base64.b64encode(f"{name}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


class Pair:
    """The same node behind the app with the trigger fast path and the app without it."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.job_id = 0
        fast_app = create_app(node.settings, node.jobs)
        assert isinstance(fast_app, DatamillApp)
        self.fast_app = fast_app
        self.fast = TestClient(fast_app)
        self.slow = TestClient(create_app(node.settings, node.jobs, fast_trigger=False))

    def both(self, url: str, headers: dict[str, str], **extra: object) -> tuple[bool, str, int]:
        """POST to both apps; whether the fast path answered, the (common) answer, its code."""
        before = self.fast_app.fast_triggered
        fast = self.fast.post(url, headers=headers, **extra)  # type: ignore[arg-type]
        answered = self.fast_app.fast_triggered > before
        slow = self.slow.post(url, headers=headers, **extra)  # type: ignore[arg-type]
        seen = [_comparable(r) for r in (fast, slow)]
        assert seen[0] == seen[1]
        return answered, seen[0], fast.status_code


def _comparable(response: httpx.Response) -> str:
    # Each trigger queues its own run: its id is the only thing that may differ.
    body = re.sub(r'"job-execution-id": \d+', '"job-execution-id": N', response.text)
    headers = {
        k: v for k, v in response.headers.items() if k not in ("x-request-id", "content-length")
    }
    return f"{response.status_code} {sorted(headers.items())} {body}"


@pytest.fixture
def pair(node: Node) -> Iterator[Pair]:
    """Both apps, started; users ann (the job's owner), rita (may read it), sam (no rights)."""
    users = node.store.users
    for name, groups in (("ann", ()), ("rita", ("readers",)), ("sam", ())):
        users.create(name, password_hash("pw"), groups=groups)
    users.set_password_hash("admin", password_hash("pw"))
    entry, _ = node.jobs.define_job("/w/ann.wbk", JobKind.WORKBOOK, WORKBOOK, "ann")
    made = Pair(node)
    made.job_id = entry.id
    with made.fast, made.slow:
        shared = made.slow.post(
            f"/api/filesystem/files/{entry.id}/permission/groups",
            headers=_auth("ann"),
            json={"name": "readers", "readable": True},
        )
        assert shared.status_code == 200, shared.text
        yield made


def test_owner_and_admin_trigger_on_the_fast_path(pair: Pair, node: Node) -> None:
    for user in ("ann", "admin"):
        for reference in ("w/ann.wbk", str(pair.job_id)):
            answered, seen, code = pair.both(f"/api/job-execution/{reference}/trigger", _auth(user))
            assert answered and code == 200, seen
            assert '"status": "success"' in seen and f'"job-execution-user": "{user}"' in seen


def test_refusals_answer_alike_and_queue_nothing(pair: Pair, node: Node) -> None:
    url = "/api/job-execution/w/ann.wbk/trigger"
    cases = [
        (_auth("rita"), 403),  # may read the job, not run it
        (_auth("sam"), 404),  # may not even see it: as if it did not exist
        (_auth("ann", "wrong"), 401),
        ({}, 401),
    ]
    for headers, status in cases:
        answered, seen, code = pair.both(url, headers)
        assert answered and code == status, seen
        assert '"status": "failure"' in seen
    missing = pair.both("/api/job-execution/w/none.wbk/trigger", _auth("admin"))
    assert missing[0] and missing[2] == 404


def test_requests_it_does_not_recognise_go_to_the_route(pair: Pair) -> None:
    owner = _auth("ann")
    answered, seen, code = pair.both("/api/job-execution/w/ann.wbk/trigger/", owner)
    assert not answered and code == 200 and '"status": "success"' in seen
    answered, seen, code = pair.both(
        "/api/job-execution/w/ann.wbk/trigger", owner, content=b'{"x": 1}'
    )
    assert not answered and code == 200 and '"status": "success"' in seen
