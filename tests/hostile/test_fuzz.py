"""Fuzzing every route, and file references of every shape.

1. schemathesis generates valid and invalid requests (positive and negative
   modes) for every operation of the app's own /openapi.json, as admin: no
   answer may be a 5xx, every 4xx must be a JSON failure body, and a refused
   call must change nothing in the store or the data root. It runs on SQLite,
   NUL bytes included; a PostgreSQL run without NUL (which section 3 covers
   there) found nothing more, at twice the time.
2. hypothesis builds file references (ids, uuids, raw and %2F paths, '+' and
   spaces, unicode, '..', very long) for the status and trigger routes, on both
   backends: every encoding of a real job reaches it, a folder is a 400, what
   names nothing is a 404, and only an accepted trigger creates an execution.
3. Fixed cases, on both backends: NUL in a looked-up name (was a 500 on
   PostgreSQL), control characters in a job path (were accepted).

DATAMILL_FUZZ_EXAMPLES sets the schemathesis examples per route and mode.
"""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
import sqlalchemy as sa
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.python import asgi
from sqlalchemy.engine import make_url

from datamill.api.app import create_app
from datamill.bootstrap import Node, open_node
from datamill.settings import Settings
from datamill.store import tables as t
from datamill.worker.worker import Worker
from tests.helpers import (
    admin,
    define,
    orders_import,
    password_hash,
    totals_workbook,
    wait_terminal,
    write_orders_csv,
)
from tests.hostile.conftest import fail_setup

AUTH = {"Authorization": "Basic " + base64.b64encode(b"admin:secret").decode()}
FUZZ_EXAMPLES = int(os.environ.get("DATAMILL_FUZZ_EXAMPLES", "15"))  # per route and mode

IMPORT = "/Data/ImportJobs/orders.imp"
WORKBOOK = "/Analytics/Workbooks/totals.wbk"
# Names that test the reference rules: a space, a literal '+', both, and unicode.
SPACED = "/Data/ImportJobs/my orders.imp"
PLUS = "/Data/ImportJobs/a+b.imp"
PLUS_AS_SPACE = "/Data/ImportJobs/a b.imp"
MIXED = "/Data/ImportJobs/x y+z.imp"
UNICODE = "/Data/ImportJobs/Bestellungen ä€😀.imp"
JOBS = (IMPORT, SPACED, PLUS, PLUS_AS_SPACE, MIXED, UNICODE)
FOLDERS = ("/Data", "/Data/ImportJobs", "/Analytics/Workbooks")


def _populate(node: Node, files_root: Path) -> None:
    """A few jobs, one completed run of an import and a workbook (so data and details exist)."""
    source = write_orders_csv(files_root / "in", rows=10)
    for path in JOBS:
        define(node, path, orders_import(source))
    define(node, WORKBOOK, totals_workbook(IMPORT))
    worker = Worker(node.store, node.settings, node.wakeup)
    worker.start()
    try:
        for path in (IMPORT, WORKBOOK):
            assert wait_terminal(node, node.jobs.trigger(path, admin(node)).id).status.is_success
    finally:
        worker.shutdown(grace_seconds=1.0)


def _snapshot(node: Node) -> tuple[Any, ...]:
    """Every row of every table, and the names in the data root."""
    with node.store.db.read() as conn:
        tables = tuple(
            tuple(sorted(map(tuple, conn.execute(sa.select(table)).all()), key=repr))
            for table in t.metadata.sorted_tables
        )
    return (*tables, tuple(sorted(os.listdir(node.settings.resolved_data_root))))


def _execution_count(node: Node) -> int:
    with node.store.db.read() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(t.executions)).scalar_one())


def _header(headers: Any, name: str) -> str:
    """A header from httpx's headers or schemathesis' {name: [values]}."""
    value = headers.get(name) or headers.get(name.title()) or ""
    return str(value[0] if isinstance(value, list) else value)


def _assert_failure_body(status: int, headers: Any, body: bytes, what: str) -> None:
    assert _header(headers, "content-type").startswith("application/json"), (what, headers)
    document = json.loads(body)
    assert isinstance(document, dict) and document.get("status") == "failure", (what, document)
    assert isinstance(document.get("reason"), str) and document["reason"].strip(), (what, document)
    if status == 401:
        assert _header(headers, "www-authenticate") == 'Basic realm="datamill"', (what, headers)


# ---------------------------------------------------------------- schemathesis, every route


@pytest.fixture(scope="module")
def fuzz_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    """One SQLite node for every fuzzed operation; the admin is restored after each call."""
    home = tmp_path_factory.mktemp("fuzz")
    node = open_node(
        Settings(
            home=home / "home",
            database_url=f"sqlite:///{home / 'meta.db'}",
            heartbeat_seconds=0.2,
            poll_seconds=0.2,
            stop_wait_seconds=2.0,
            engine_memory_limit="256MB",
        )
    )
    node.store.users.create("admin", password_hash("secret"), roles=("ADMIN",))
    files_root = Path(node.settings.resolved_source_roots[0])
    files_root.mkdir(parents=True, exist_ok=True)
    _populate(node, files_root)
    yield node
    node.store.close()


def _admin_rows(node: Node) -> tuple[Any, Any]:
    with node.store.db.read() as conn:
        user = conn.execute(sa.select(t.users).where(t.users.c.name == "admin")).first()
        roles = conn.execute(
            sa.select(t.user_roles).where(t.user_roles.c.user_name == "admin")
        ).all()
    return user, sorted(roles)


def _restore_admin(node: Node, original: tuple[Any, Any]) -> None:
    """Undo what an accepted call did to the fuzzer's own account (a new password, say)."""
    if original[0] is None or _admin_rows(node) == original:
        return
    user, roles = original
    with node.store.db.write() as conn:
        conn.execute(sa.delete(t.user_roles).where(t.user_roles.c.user_name == "admin"))
        conn.execute(sa.delete(t.users).where(t.users.c.name == "admin"))
        conn.execute(sa.insert(t.users).values(**user._asdict()))
        for role in roles:
            conn.execute(sa.insert(t.user_roles).values(**role._asdict()))


class StoreWatch:
    """Tells whether anything was committed to the SQLite store since the last look.

    PRAGMA data_version changes when another connection commits, so the full
    snapshot (and the admin's rows) are read only after a call changed the store.
    """

    def __init__(self, node: Node) -> None:
        self._node = node
        database = make_url(node.store.db.url).database
        assert database
        self._conn = sqlite3.connect(database)
        self._version = -1
        self.snapshot: tuple[Any, ...] = ()
        self.admin: tuple[Any, Any] = (None, None)

    def _data_version(self) -> int:
        return int(self._conn.execute("PRAGMA data_version").fetchone()[0])

    def look(self) -> None:
        """Remember the store as it is now."""
        version = self._data_version()
        if version != self._version:
            self.snapshot, self.admin, self._version = (
                _snapshot(self._node),
                _admin_rows(self._node),
                version,
            )

    def changed(self) -> bool:
        """Whether the store differs from what `look` saw."""
        return self._data_version() != self._version and _snapshot(self._node) != self.snapshot

    def close(self) -> None:
        """Close the watching connection."""
        self._conn.close()


def _fuzz_operation(
    watch: StoreWatch, node: Node, client: Any, operation: Any, mode: GenerationMode
) -> str | None:
    """Run one operation's generated cases; the first violation found, or None."""

    @settings(
        max_examples=FUZZ_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        watch.look()
        response = case.call(headers=AUTH, session=client)
        what = (
            f"{case.method} {case.formatted_path} query={case.query} body={case.body!r:.200} "
            f"-> {response.status_code}: {response.text[:300]}"
        )
        assert response.status_code < 500, what
        if 400 <= response.status_code < 500:
            _assert_failure_body(response.status_code, response.headers, response.content, what)
            assert not watch.changed(), f"a refused call changed the store: {what}"
        else:
            _restore_admin(node, watch.admin)

    try:
        run()
    except AssertionError as error:
        return f"{operation.label} ({mode.value}): {error}"
    return None


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
def test_every_route_refuses_bad_input_cleanly(fuzz_node: Node, mode: GenerationMode) -> None:
    app = create_app(fuzz_node.settings, fuzz_node.jobs)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, headers=AUTH)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 50, "the app's /openapi.json lost its routes"
    watch = StoreWatch(fuzz_node)
    try:
        with asgi.get_client(app) as client:
            found = [_fuzz_operation(watch, fuzz_node, client, op, mode) for op in operations]
    finally:
        watch.close()
    assert not any(found), "\n\n".join(f for f in found if f)


# ---------------------------------------------------------------- file references


@pytest.fixture
def references(node: Node, files_root: Path) -> Iterator[tuple[Node, TestClient]]:
    """The jobs of JOBS and the app (no worker: triggered runs stay QUEUED)."""
    source = write_orders_csv(files_root / "in", rows=3)
    for path in JOBS:
        define(node, path, orders_import(source))
    app = create_app(node.settings, node.jobs)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield node, client


def _encodings(path: str) -> st.SearchStrategy[str]:
    """The ways a client may write a path after /api/job-execution (spec §1)."""
    # '+' for a space is ambiguous when the name has a real '+', or when the '+'
    # spelling is another file's name: a literal '+' wins (spec §1).
    plus_spelling_taken = "+" in path or path.replace(" ", "+") in JOBS
    spaces = st.just("%20") if plus_spelling_taken else st.sampled_from(["%20", "+"])
    pluses = st.sampled_from(["+", "%2B"]) if " " not in path else st.just("%2B")
    slashes = st.sampled_from(["/", "%2F", "%2f"])

    @st.composite
    def encode(draw: st.DrawFn) -> str:
        parts = []
        for char in path:
            if char == "/":
                parts.append(draw(slashes))
            elif char == " ":
                parts.append(draw(spaces))
            elif char == "+":
                parts.append(draw(pluses))
            else:
                parts.append(urllib.parse.quote(char, safe=""))
        encoded = "".join(parts)
        lead = draw(st.sampled_from(["/", "//", "%2F"]))
        return lead + encoded.removeprefix("/").removeprefix("%2F").removeprefix("%2f")

    return encode()


# Text that can never be a stored file: the first folder 'zz…' does not exist,
# and '.', '..' or over-long names make no valid path at all. NUL has its own
# test below (it is a known 500 on PostgreSQL).
_JUNK_CHARS = st.sampled_from(
    [*"abcXYZ019 +-_.~!$&'()*,;=:@", "%2F", "%2f", "%20", "%09", "%FF", "%C3%A4", "ä", "😀"]
)
_junk_segment = st.lists(_JUNK_CHARS, min_size=1, max_size=12).map("".join)


@st.composite
def _unknown_reference(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["id", "uuid", "path", "dots", "long"]))
    if kind == "id":
        return str(draw(st.one_of(st.integers(10**6, 2**31 - 1), st.integers(2**31, 10**30))))
    if kind == "uuid":
        value = str(draw(st.uuids()))
        return value.upper() if draw(st.booleans()) else value
    if kind == "dots":
        real = draw(st.sampled_from(JOBS))
        # Raw '/../' never reaches a server: clients (httpx, curl) remove dot segments.
        dots = draw(st.sampled_from(["%2F..", "%2F..%2F..", "%2F.%2F..", "%2F%2E%2E"]))
        return "/zz" + dots + real.replace("/", draw(st.sampled_from(["/", "%2F"])))
    segments = draw(st.lists(_junk_segment, min_size=1, max_size=4))
    if kind == "long":
        segments.append("z" * draw(st.integers(300, 6000)))
    return "/zz" + "/".join(segments)


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_every_encoding_of_a_real_job_reaches_it(
    references: tuple[Node, TestClient], data: st.DataObject
) -> None:
    node, client = references
    path = data.draw(st.sampled_from(JOBS), label="job")
    url = data.draw(_encodings(path), label="encoded")
    before = _execution_count(node)
    status = client.get(f"/api/job-execution{url}/status", headers=AUTH)
    assert status.status_code == 200, (url, status.text)
    trigger = client.post(f"/api/job-execution{url}/trigger", headers=AUTH)
    assert trigger.status_code == 200, (url, trigger.text)
    assert _execution_count(node) == before + 1
    newest = client.get(f"/api/job-execution{url}/status", headers=AUTH).json()
    assert newest["job-execution-id"] == trigger.json()["job-execution-id"]
    with node.store.db.read() as conn:
        file_id = node.store.files.find(conn, path)
    assert file_id is not None and newest["file-id"] == file_id.id


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(reference=_unknown_reference(), route=st.sampled_from(["status", "trigger"]))
def test_references_to_nothing_are_404_and_trigger_nothing(
    references: tuple[Node, TestClient], reference: str, route: str
) -> None:
    node, client = references
    before = _execution_count(node)
    url = "/api/job-execution/" + reference.lstrip("/") + f"/{route}"
    call = client.get if route == "status" else client.post
    response = call(url, headers=AUTH)
    assert response.status_code == 404, (url, response.status_code, response.text[:300])
    _assert_failure_body(404, response.headers, response.content, url)
    assert _execution_count(node) == before


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    folder=st.sampled_from(FOLDERS),
    by=st.sampled_from(["path", "id", "uuid"]),
    route=st.sampled_from(["status", "trigger"]),
)
def test_a_folder_is_no_job_and_triggers_nothing(
    references: tuple[Node, TestClient], folder: str, by: str, route: str
) -> None:
    node, client = references
    with node.store.db.read() as conn:
        entry = node.store.files.find(conn, folder)
    assert entry is not None
    reference = {"path": folder, "id": str(entry.id), "uuid": entry.uuid}[by]
    before = _execution_count(node)
    url = "/api/job-execution/" + reference.lstrip("/") + f"/{route}"
    response = (client.get if route == "status" else client.post)(url, headers=AUTH)
    assert response.status_code == 400, (url, response.text)
    _assert_failure_body(400, response.headers, response.content, url)
    assert _execution_count(node) == before


# ---------------------------------------------------------------- NUL and control characters

# A file reference that names nothing is a 404 (spec 4.1); for other names a 400
# (bad input) is as right as a 404.
NUL_CALLS = [
    ("GET", "/api/job-execution/a%00b/status", None, {404}),
    ("POST", "/api/job-execution/Data%2Fa%00.imp/trigger", None, {404}),
    ("POST", "/api/job-execution/a%00b/stop", None, {404}),
    ("POST", "/api/job-execution/sequential-trigger", '{"fileIds": ["a\\u0000b"]}', {404}),
    ("GET", "/api/filesystem/files/a%00b", None, {404}),
    ("GET", "/api/filesystem/folders/a%00b", None, {404}),
    ("GET", "/rest/user-management/users/a%00b", None, {400, 404}),
    ("PUT", "/rest/user-management/password/a%00b", "new-password", {400, 404}),
    ("GET", "/rest/user-management/groups/a%00b", None, {400, 404}),
    ("GET", "/rest/user-management/roles/a%00b", None, {400, 404}),
]


@pytest.mark.parametrize(("method", "url", "body", "expected"), NUL_CALLS)
def test_a_nul_in_a_name_is_refused_not_a_500(
    references: tuple[Node, TestClient],
    method: str,
    url: str,
    body: str | None,
    expected: set[int],
) -> None:
    node, client = references
    before = _snapshot(node)
    response = client.request(method, url, content=body, headers=AUTH)
    assert response.status_code in expected, (url, response.status_code, response.text)
    _assert_failure_body(response.status_code, response.headers, response.content, url)
    assert _snapshot(node) == before


@pytest.mark.parametrize(
    "name", ["tab\there.imp", "new\nline.imp", "bell\u0007.imp"], ids=["tab", "newline", "bell"]
)
def test_a_job_name_with_a_control_character_is_refused_like_a_folder_name(
    references: tuple[Node, TestClient], name: str
) -> None:
    node, client = references
    with fail_setup("the folders API's rule"):
        folder = client.post(
            "/api/filesystem/folders/%2FData",
            content=json.dumps({"name": name.removesuffix(".imp")}),
            headers=AUTH,
        )
        assert folder.status_code == 400, folder.text
    before = _snapshot(node)
    body = {"path": f"/Data/ImportJobs/{name}", "source": {"kind": "csv", "path": "/x.csv"}}
    response = client.post("/rest/import-job", content=json.dumps(body), headers=AUTH)
    assert response.status_code == 400, response.text
    assert _snapshot(node) == before
