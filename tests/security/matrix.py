"""The permission matrix: its world and its one check; test_matrix_*.py hold the rows.

One row per route x action. The actors are the target's `owner`, `reader`
(granted READ, and nothing else, through the permission routes), `stranger`
(no rights on the target) and `admin` (the ADMIN role). Each cell asserts what
the client sees:

- OK: 200 and the record the route promises (checked by the row);
- DENIED: 403 and the row's message, naming the target;
- HIDDEN: exactly the answer for a target that does not exist (same status,
  same body but for the reference typed), so unreadable is indistinguishable
  from missing.

One node per backend for the whole module (tests/conftest.py makes one per
test; here each cell builds its own fresh target instead), so the ~400 cells
stay fast. Runs stay QUEUED: no worker runs here.
"""

from __future__ import annotations

import base64
import enum
import itertools
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import make_url

from datamill.api.app import create_app
from datamill.bootstrap import Node, open_node
from datamill.domain.status import JobKind, JobStatus
from datamill.services.sessions import COOKIE_NAME
from datamill.settings import Settings
from datamill.store import executions as ex
from datamill.store.data import newest_data
from datamill.store.queue import Outcome
from tests.conftest import PG_URL, _admin_conninfo, clone_template
from tests.helpers import admin, password_hash

ACTORS = ("owner", "reader", "stranger", "admin")
MISSING_ID = 987654
FILES = "/Connections/matrix.loc"  # a location everyone may read: definitions name it
STEWARD = ["job.read", "job.run", "job.define", "data.read", "location.define", "connection.define"]


class Outcome_(enum.Enum):
    """What one actor gets from one row."""

    OK = "ok"
    DENIED = "denied"
    HIDDEN = "hidden"


OK, DENIED, HIDDEN = Outcome_.OK, Outcome_.DENIED, Outcome_.HIDDEN
# Who gets what, by the right a row needs on its target.
READ = {"owner": OK, "reader": OK, "stranger": HIDDEN, "admin": OK}
CHANGE = {"owner": OK, "reader": DENIED, "stranger": HIDDEN, "admin": OK}
OWNER_CHANGE = {"owner": DENIED, "reader": DENIED, "stranger": HIDDEN, "admin": OK}
ADMIN_ONLY = {"owner": DENIED, "reader": DENIED, "stranger": DENIED, "admin": OK}
EVERYONE = {"owner": OK, "reader": OK, "stranger": OK, "admin": OK}


def _auth(name: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{name}:pw".encode()).decode()}


@dataclass
class Target:
    """What a row acts on: a file (job, folder, location ...) owned by `owner`."""

    file_id: int
    path: str
    config_id: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Call:
    """One request; `typed` is the reference the caller typed (ignored when comparing)."""

    method: str
    url: str
    body: Any = None
    typed: str = ""
    cookie: bool = False  # sent with a fresh session cookie of the actor instead of Basic


@dataclass
class World:
    """One node and client per backend, shared by every cell of the module."""

    node: Node
    client: TestClient
    files: Path
    names: Iterator[int] = field(default_factory=itertools.count)
    last_cookie: str = ""

    def call(self, actor: str, call: Call) -> httpx.Response:
        """Send `call` as `actor`: Basic credentials, or only a session cookie of theirs."""
        if not call.cookie:
            return self.client.request(call.method, call.url, headers=_auth(actor), json=call.body)
        self.last_cookie = self.login(actor)
        cookie = {"Cookie": f"{COOKIE_NAME}={self.last_cookie}"}
        return self.client.request(call.method, call.url, headers=cookie, json=call.body)

    def login(self, actor: str) -> str:
        """A fresh session cookie for `actor` (GET /browser), kept out of the client's jar."""
        answer = self.client.get("/browser", headers=_auth(actor))
        assert answer.status_code == 200, answer.text
        cookie = answer.cookies[COOKIE_NAME]
        self.client.cookies.clear()
        return cookie

    def name(self, stem: str) -> str:
        """A name no other cell uses."""
        return f"{stem}{next(self.names)}"

    def share(self, file_id: int, **flags: bool) -> None:
        """The owner grants the group `readers` flags, through the permission route."""
        url = f"/api/filesystem/files/{file_id}/permission/groups"
        body = {"name": "readers", "readable": True, **flags}
        granted = self.call("owner", Call("POST", url, body))
        assert granted.status_code == 200, granted.text

    def job(
        self,
        kind: JobKind = JobKind.IMPORT,
        definition: dict[str, Any] | None = None,
        shared: bool = True,
    ) -> Target:
        """A fresh job owned by `owner` that `reader` may read (unless not `shared`)."""
        folder = {JobKind.IMPORT: "/Data/ImportJobs", JobKind.WORKBOOK: "/Analytics/Workbooks"}
        path = f"{folder.get(kind, '/Data/ExportJobs')}/{self.name('m')}{kind.extension}"
        entry, config = self.node.jobs.define_job(
            path, kind, definition or DEFINITIONS[kind](self), "owner"
        )
        if shared:
            self.share(entry.id)
        return Target(entry.id, path, config.id)

    def queued(self, target: Target) -> Target:
        """The target with a QUEUED run (extra['execution'])."""
        execution = self.node.jobs.trigger(target.path, admin(self.node))
        target.extra["execution"] = execution.id
        return target

    def with_data(self, target: Target, sheet: str) -> Target:
        """The target with one published result holding `sheet` (extra['data'])."""

        def published(staging: Path) -> Outcome:
            pq.write_table(pa.table({"n": [1, 2, 3]}), staging / f"{sheet}.parquet")
            return Outcome(JobStatus.COMPLETED, sheets={sheet: 3}, staging_dir=str(staging))

        self.ended(target, published)
        with self.node.store.db.read() as conn:
            result = newest_data(conn, target.config_id)
        assert result is not None
        target.extra["data"] = result.id
        return target

    def ended(self, target: Target, outcome: Callable[[Path], Outcome]) -> Target:
        """The target with a run (extra['execution']) claimed and ended as `outcome` says."""
        self._cancel_active()  # the queue claims the oldest run: make it ours
        execution = self.node.jobs.trigger(target.path, admin(self.node)).id
        queue = self.node.store.queue
        worker = self.name("w")
        queue.register_worker(worker, "matrix", os.getpid())
        claimed = queue.claim_next_execution(worker)
        assert claimed is not None and claimed.id == execution
        staging = self.node.settings.staging_root / str(execution)
        staging.mkdir(parents=True)
        assert queue.finish(claimed, worker, outcome(staging))
        target.extra["execution"] = execution
        return target

    def _cancel_active(self) -> None:
        with self.node.store.db.read() as conn:
            active = [e.id for e in ex.active_executions(conn)]
        for execution in active:
            # Canceling a plan's first run cancels the runs waiting on it too.
            if not run_status(self, execution).is_terminal:
                self.node.jobs.stop_execution(execution, admin(self.node))

    def folder(self, inside: Target | None = None) -> Target:
        """A fresh folder /Shared/<name> (or inside one) owned by `owner` that `reader` may read."""
        parent = inside.path if inside else "/Shared"
        path = f"{parent}/{self.name('f')}"
        made = self.call(
            "admin",
            Call("POST", f"/api/filesystem/folders{parent}", {"name": path.rsplit("/")[-1]}),
        )
        assert made.status_code == 200, made.text
        folder_id = made.json()["id"]
        owner_url = f"/api/filesystem/folders/{folder_id}/permission/owner"
        handed = self.call("admin", Call("PUT", owner_url, {"owner": "owner"}))
        assert handed.status_code == 200, handed.text
        private = f"/api/filesystem/folders/{folder_id}/permission/others"
        closed = self.call("owner", Call("PUT", private, {"readable": False}))
        assert closed.status_code == 200, closed.text
        self.share(folder_id)
        return Target(folder_id, path)

    def resource(self, kind: str) -> Target:
        """A fresh location or connection owned by `owner` that `reader` may read."""
        path = f"{self.folder().path}/{self.name(kind[:3])}"
        made = self.call(
            "owner", Call("POST", f"/rest/{kind}", {"path": path, **resource_document(self, kind)})
        )
        assert made.status_code == 200, made.text
        self.share(made.json()["id"])
        suffix = ".loc" if kind == "location" else ".dst"
        return Target(made.json()["id"], path + suffix)


def resource_document(world: World, kind: str) -> dict[str, str]:
    if kind == "location":
        # A folder of its own: a location on another actor's location's folder
        # is refused to whoever may not read that one (check_given_folder).
        return {"folder": str(world.files / world.name("loc"))}
    return {"url": f"sqlite:///{world.files / 'conn.db'}"}


DEFINITIONS: dict[JobKind, Callable[[World], dict[str, Any]]] = {
    JobKind.IMPORT: lambda w: {"source": {"kind": "csv", "path": "in.csv", "location": FILES}},
    JobKind.WORKBOOK: lambda w: {
        "sheets": [
            {"kind": "data", "name": "src", "source": {"importJob": w.job().path}},
            {"kind": "sql", "name": "totals", "keep": True, "sql": "SELECT * FROM src"},
        ]
    },
    JobKind.EXPORT: lambda w: {
        "source": {"importJob": w.job().path},
        "sink": {"kind": "csv", "path": "out.csv", "location": FILES},
    },
}


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    """admin, owner, reader (group `readers`) and stranger on one node per backend."""
    home = tmp_path_factory.mktemp("matrix")
    database = None
    if request.param == "sqlite":
        url = f"sqlite:///{home / 'meta.db'}"
    else:
        template = request.getfixturevalue("postgres_template")
        database = f"datamill_m_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(_admin_conninfo(), autocommit=True) as conn:
            clone_template(conn, database, template)
        url = make_url(PG_URL).set(database=database).render_as_string(hide_password=False)
    settings = Settings(home=home / "home", database_url=url, engine_memory_limit="512MB")
    node = open_node(settings)
    users = node.store.users
    users.create("admin", password_hash("pw"), roles=("ADMIN",))
    files = Path(settings.resolved_source_roots[0])
    files.mkdir(parents=True, exist_ok=True)
    with TestClient(create_app(settings, node.jobs)) as client:
        world = World(node, client, files)
        role = {"name": "STEWARD", "capabilities": STEWARD}
        assert (
            world.call("admin", Call("POST", "/rest/user-management/roles", role)).status_code
            == 200
        )
        for name, groups in (("owner", ()), ("reader", ("readers",)), ("stranger", ())):
            users.create(name, password_hash("pw"), roles=("STEWARD",), groups=groups)
        shared = world.call("admin", Call("POST", "/api/filesystem/folders", {"name": "Shared"}))
        assert shared.status_code == 200, shared.text
        others = Call(
            "PUT",
            f"/api/filesystem/folders/{shared.json()['id']}/permission/others",
            {"readable": True},
        )
        assert world.call("admin", others).status_code == 200
        location = {"path": FILES[:-4], "folder": str(files)}
        made = world.call("admin", Call("POST", "/rest/location", location))
        assert made.status_code == 200, made.text
        everyone = f"/api/filesystem/files/{made.json()['id']}/permission/others"
        opened = world.call("admin", Call("PUT", everyone, {"readable": True, "writable": True}))
        assert opened.status_code == 200, opened.text
        yield world
    node.store.close()
    if database is not None:
        with psycopg.connect(_admin_conninfo(), autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")


# ---------------------------------------------------------------- the rows


@dataclass(frozen=True)
class Row:
    """One route x action: who gets what, and what OK and DENIED look like."""

    name: str
    rule: dict[str, Outcome_]
    target: Callable[[World], Target]
    call: Callable[[Target], Call]
    ok: Callable[[World, Target, str, httpx.Response], None]
    missing: Callable[[Target], Call] | None = None  # the same request on nothing
    denied: str = ""  # the 403 reason; {path} is the target's path
    intact: Callable[[World, Target], None] | None = None  # after a refusal


def body_of(response: httpx.Response) -> Any:
    return response.json()


def run_status(world: World, execution_id: int) -> JobStatus:
    with world.node.store.db.read() as conn:
        return ex.get_execution(conn, execution_id).status


def admin_get(world: World, url: str) -> httpx.Response:
    return world.call("admin", Call("GET", url))


def job_with_queued_run(world: World) -> Target:
    return world.queued(world.job())


def id_of(t: Target) -> str:
    return str(t.file_id)


RUN_DENIED = "you are not allowed to run {path}"
CHANGE_DENIED = "you are not allowed to change {path}"
ADMIN_DENIED = "only a user with the ADMIN role may manage users, groups and roles"
SEES = {"owner": True, "reader": True, "stranger": False, "admin": True}


def check(condition: bool) -> None:
    assert condition


# ---------------------------------------------------------------- one cell


def _answer(response: httpx.Response, typed: str) -> tuple[int, str]:
    """What the client sees, with the reference it typed taken out."""
    return response.status_code, response.text.replace(typed, "<typed>") if typed else response.text


def run_cell(world: World, row: Row, actor: str) -> None:
    """Send one row's request as `actor` and check what the row's rule promises."""
    target = row.target(world)
    target.extra["actor"] = actor
    call = row.call(target)
    response = world.call(actor, call)
    where = f"{actor} {call.method} {call.url}: {response.status_code} {response.text}"
    expected = row.rule[actor]
    if expected is OK:
        assert response.status_code == 200, where
        try:
            row.ok(world, target, actor, response)
        except AssertionError as error:
            raise AssertionError(f"{where}: {error}") from error
        return
    if expected is DENIED:
        reason = row.denied.format(path=target.path)
        assert (response.status_code, body_of(response)) == (
            403,
            {"status": "failure", "reason": reason},
        ), where
    else:
        assert row.missing is not None, row.name
        nothing = row.missing(target)
        answer = world.call(actor, nothing)
        assert response.status_code in (403, 404), where
        assert _answer(response, call.typed) == _answer(answer, nothing.typed), where
    if row.intact is not None:
        row.intact(world, target)


def rows_by_name(rows: list[Row]) -> dict[str, Row]:
    """The rows of a test module by name (the test ids), each name once."""
    named = {row.name: row for row in rows}
    assert len(named) == len(rows)
    return named
