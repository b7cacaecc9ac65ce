"""Bad input of every kind: a clear failure body and a 4xx, never a 500, no state changed."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from datamill.api.app import create_app
from datamill.api.bodies import OFF_LOOP_BYTES
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
        b"Basic \xe9\xe9",  # F14: bytes base64 cannot hold were a 500
        b"Basic \xe9\xe9==",
        b"Basic YWRtaW46c2VjcmV0\xff",
        "Basic " + base64.b64encode(b"admin\x00:secret").decode(),
        "Basic " + base64.b64encode(b":secret").decode(),
        "Basic " + base64.b64encode(b"admin:" + b"x" * 5000).decode(),
        "Basic " + "A" * 100_000,
        "Basic  ",
        "basic",
    ],
)
def test_malformed_credentials_are_401(client: TestClient, header: str | bytes) -> None:
    response = client.get("/api/job-execution/1/status", headers={"Authorization": header})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Basic realm="datamill"'


BODY_CASES = [
    (b'{"fileIds": ' + b"[" * 70 + b"1" + b"]" * 70 + b"}", 400, "nested deeper"),
    (b'{"fileIds": [1e400]}', 404, ""),  # a bare word to the lenient reader, as NaN
    (b'{"fileIds": [' + b"9" * 5000 + b"]}", 400, "fileIds[0]"),
    (b'{"fileIds": ["\\ud800"]}', 400, "surrogate"),
    (b'{"fileIds": [1], "variables": {"\\udfff": 1}}', 400, "surrogate"),
    (b'{"fileIds": [NaN]}', 404, ""),
    (b"\xef\xbb\xbf{fileIds: [424242]}", 404, ""),
    (b'{"fileIds": [424242]}\x00', 400, "JSON"),
    (b"\x00", 400, "body"),
    (b'{"fileIds": [424242], "fileIds": [1]}', 400, ""),
    (b"[" + b"1," * 10_000 + b"1]", 400, "fileIds: at most"),
    (b'{"fileIds": ["/' + b"a" * 5000 + b'"]}', 400, "fileIds[0]"),
    (b'{"fileIds": [1], "variables": {"v": 9223372036854775808}}', 400, "variables.v"),
    (b'{"fileIds": [1], "variables": {"v": "' + b"x" * 10_001 + b'"}}', 400, "variables.v"),
    (b'{"fileIds": [1], "variables": {"' + b"v" * 129 + b'": 1}}', 400, "variables"),
]


@pytest.mark.parametrize(("body", "expected", "reason"), BODY_CASES)
@pytest.mark.parametrize(
    "content_type",
    ["application/json", "text/plain", "application/x-www-form-urlencoded", "image/png", None],
)
def test_odd_json_bodies_are_a_clear_4xx_whatever_the_content_type(
    node: Node,
    client: TestClient,
    body: bytes,
    expected: int,
    reason: str,
    content_type: str | None,
) -> None:
    headers = dict(AUTH)
    if content_type is not None:
        headers["Content-Type"] = content_type
    before = _state(node)
    response = client.post("/api/job-execution/sequential-trigger", content=body, headers=headers)
    assert response.status_code == expected, response.text
    assert reason in response.json()["reason"]
    assert _state(node) == before


def test_a_declared_length_past_the_limit_is_refused_before_reading(client: TestClient) -> None:
    headers = {**AUTH, "Content-Length": str(10**12)}
    response = client.post("/api/job-execution/sequential-trigger", content=b"[1]", headers=headers)
    assert response.status_code == 413


def test_the_body_limit_is_a_setting(node: Node) -> None:
    settings = node.settings.model_copy(update={"max_body_bytes": 2048})
    with TestClient(create_app(settings, node.jobs)) as small:
        url = "/api/job-execution/sequential-trigger"
        big = small.post(url, content=b"[" + b"1," * 1100 + b"1]", headers=AUTH)
        assert big.status_code == 413 and "2048" in big.json()["reason"]
        fits = small.post(url, content=b"[" + b"424242," * 200 + b"1]", headers=AUTH)
        assert fits.status_code == 404


def test_strict_and_lenient_bodies_read_alike_on_and_off_the_event_loop(
    client: TestClient,
) -> None:
    # Past the size parsed in a worker thread, both readers give the same answer.
    url = "/api/job-execution/sequential-trigger"
    for count in (1, 4_000):
        ids = b", ".join([b"424242"] * count)
        strict = b'{"fileIds": [' + ids + b'], "variables": {"p": "x"}}'
        lenient = b"{fileIds: [" + ids + b",], variables: {p: 'x'}}"
        assert count == 1 or len(strict) > OFF_LOOP_BYTES
        for body in (strict, lenient):
            response = client.post(url, content=body, headers=AUTH)
            assert response.status_code == 404, response.text
