"""Bad input of every kind: a clear failure body and a 4xx, never a 500, no state changed."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from datamill.api.app import create_app
from datamill.bootstrap import Node
from datamill.domain.status import JobKind
from datamill.store import tables as t

AUTH = {"Authorization": "Basic " + base64.b64encode(b"admin:secret").decode()}


@pytest.fixture
def client(node: Node) -> Iterator[TestClient]:
    """The app with one import job at /Data/ImportJobs/a.imp."""
    node.jobs.define_job(
        "/Data/ImportJobs/a.imp", JobKind.IMPORT, {"source": {"kind": "csv", "path": "/x"}}, "admin"
    )
    with TestClient(create_app(node.settings, node.jobs)) as client:
        yield client


def _state(node: Node) -> tuple[int, int]:
    with node.store.db.read() as conn:
        executions = conn.execute(sa.select(sa.func.count()).select_from(t.executions)).scalar()
        files = conn.execute(sa.select(sa.func.count()).select_from(t.files)).scalar()
    return int(executions or 0), int(files or 0)


CASES = [
    ("GET", "/rest/job-execution/job-details/abc", None, 400),
    ("GET", "/rest/job-execution/job-details/-1", None, 400),
    ("GET", "/rest/job-execution/job-details/99999999999999999999", None, 400),
    ("GET", "/rest/job-configuration/job-history/1?start=-1", None, 400),
    ("GET", "/rest/job-configuration/job-history/1?length=abc", None, 400),
    ("GET", "/api/job-execution/99999999999999/status", None, 404),
    ("GET", "/api/job-execution/2147483648/status", None, 404),
    ("POST", "/api/job-execution/Data/ImportJobs/nope.imp/trigger", None, 404),
    ("POST", "/api/job-execution/..%2F..%2Fetc%2Fpasswd/trigger", None, 404),
    ("POST", "/api/job-execution/Data/ImportJobs/trigger", None, 400),
    ("POST", "/rest/job-execution?configuration=abc", None, 400),
    ("POST", "/rest/job-execution", None, 400),
    ("POST", "/rest/job-execution/job-kill/424242", None, 404),
    ("DELETE", "/rest/data/abc", None, 400),
    ("DELETE", "/rest/data/424242", None, 404),
    ("POST", "/api/job-execution/sequential-trigger", b"{fileIds: [1,", 400),
    ("POST", "/api/job-execution/sequential-trigger", b"", 400),
    ("POST", "/api/job-execution/sequential-trigger", b'{"fileIds": "a.imp"}', 400),
    ("POST", "/api/job-execution/sequential-trigger", b'{"fileIds": [true]}', 400),
    ("POST", "/api/job-execution/sequential-trigger", b'{"fileIds": [], "x": 1}', 400),
    ("POST", "/api/job-execution/sequential-trigger", b'{"fileIds": [{"a": 1}]}', 400),
    ("POST", "/api/job-execution/sequential-trigger", b'{"fileIds": [1], "variables": [1]}', 400),
    ("POST", "/api/job-execution/sequential-trigger", b'{"fileIds": [424242]}', 404),
    ("POST", "/api/job-execution/sequential-trigger", b"\xff\xfe{fileIds: [1]}", 400),
    ("POST", "/api/job-execution/sequential-trigger", b"[" * 5000, 400),
    ("POST", "/api/job-execution/sequential-trigger", b"[" + b"1," * 600_000 + b"1]", 413),
    ("DELETE", "/api/job-execution/1/status", None, 405),
    ("PUT", "/api/job-execution/1/trigger", None, 405),
    ("GET", "/api/job-execution/1/trigger", None, 405),
    ("GET", "/no/such/route", None, 404),
]


@pytest.mark.parametrize(("method", "url", "body", "expected"), CASES)
def test_bad_input_gets_a_clear_4xx_and_changes_nothing(
    node: Node, client: TestClient, method: str, url: str, body: bytes | None, expected: int
) -> None:
    before = _state(node)
    response = client.request(method, url, content=body, headers=AUTH)
    assert response.status_code == expected, response.text
    payload = response.json()
    assert payload["status"] == "failure"
    assert isinstance(payload["reason"], str) and payload["reason"]
    assert _state(node) == before


def test_unauthenticated_bad_input_is_401_first(client: TestClient) -> None:
    response = client.post("/api/job-execution/sequential-trigger", content=b"{")
    assert response.status_code == 401


@pytest.mark.parametrize(
    "header",
    [
        "Basic",
        "Basic !!!",
        "Bearer abc",
        "Basic " + base64.b64encode(b"nocolon").decode(),
        "Basic " + base64.b64encode(b"\xff\xfe:x").decode(),
    ],
)
def test_malformed_credentials_are_401(client: TestClient, header: str) -> None:
    response = client.get("/api/job-execution/1/status", headers={"Authorization": header})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Basic realm="datamill"'
