"""The permission matrix: every route that reads or changes anything, four actors.

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
from datamill.settings import Settings
from datamill.store import executions as ex
from datamill.store.data import newest_data
from datamill.store.queue import Outcome
from tests.conftest import PG_URL, _admin_conninfo
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


@dataclass
class World:
    """One node and client per backend, shared by every cell of the module."""

    node: Node
    client: TestClient
    files: Path
    names: Iterator[int] = field(default_factory=itertools.count)

    def call(self, actor: str, call: Call) -> httpx.Response:
        """Send `call` as `actor`."""
        return self.client.request(call.method, call.url, headers=_auth(actor), json=call.body)

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
        self, kind: JobKind = JobKind.IMPORT, definition: dict[str, Any] | None = None
    ) -> Target:
        """A fresh job owned by `owner` that `reader` may read."""
        folder = {JobKind.IMPORT: "/Data/ImportJobs", JobKind.WORKBOOK: "/Analytics/Workbooks"}
        path = f"{folder.get(kind, '/Data/ExportJobs')}/{self.name('m')}{kind.extension}"
        entry, config = self.node.jobs.define_job(
            path, kind, definition or _DEFINITIONS[kind](self), "owner"
        )
        self.share(entry.id)
        return Target(entry.id, path, config.id)

    def queued(self, target: Target) -> Target:
        """The target with a QUEUED run (extra['execution'])."""
        execution = self.node.jobs.trigger(target.path, admin(self.node))
        target.extra["execution"] = execution.id
        return target

    def with_data(self, target: Target, sheet: str) -> Target:
        """The target with one published result holding `sheet` (extra['data'])."""
        self._cancel_active()  # the queue claims the oldest run: make it ours
        execution = self.node.jobs.trigger(target.path, admin(self.node)).id
        queue = self.node.store.queue
        worker = self.name("w")
        queue.register_worker(worker, "matrix", os.getpid())
        claimed = queue.claim_next_execution(worker)
        assert claimed is not None and claimed.id == execution
        staging = self.node.settings.staging_root / str(execution)
        staging.mkdir(parents=True)
        pq.write_table(pa.table({"n": [1, 2, 3]}), staging / f"{sheet}.parquet")
        outcome = Outcome(JobStatus.COMPLETED, sheets={sheet: 3}, staging_dir=str(staging))
        assert queue.finish(claimed, worker, outcome)
        with self.node.store.db.read() as conn:
            result = newest_data(conn, target.config_id)
        assert result is not None
        target.extra["data"] = result.id
        return target

    def _cancel_active(self) -> None:
        with self.node.store.db.read() as conn:
            active = [e.id for e in ex.active_executions(conn)]
        for execution in active:
            # Canceling a plan's first run cancels the runs waiting on it too.
            if not _run(self, execution).is_terminal:
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
            "owner", Call("POST", f"/rest/{kind}", {"path": path, **_resource(self, kind)})
        )
        assert made.status_code == 200, made.text
        self.share(made.json()["id"])
        suffix = ".loc" if kind == "location" else ".dst"
        return Target(made.json()["id"], path + suffix)


def _resource(world: World, kind: str) -> dict[str, str]:
    if kind == "location":
        return {"folder": str(world.files / "loc")}
    return {"url": f"sqlite:///{world.files / 'conn.db'}"}


_DEFINITIONS: dict[JobKind, Callable[[World], dict[str, Any]]] = {
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
            conn.execute(f"CREATE DATABASE {database} TEMPLATE {template}")
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


def _body(response: httpx.Response) -> Any:
    return response.json()


def _run(world: World, execution_id: int) -> JobStatus:
    with world.node.store.db.read() as conn:
        return ex.get_execution(conn, execution_id).status


def _still_queued(world: World, target: Target) -> None:
    assert _run(world, target.extra["execution"]) is JobStatus.QUEUED


def _no_new_run(world: World, target: Target) -> None:
    with world.node.store.db.read() as conn:
        assert ex.active_execution_for_config(conn, target.config_id) is None


def _admin_get(world: World, url: str) -> httpx.Response:
    return world.call("admin", Call("GET", url))


def _job_with_queued_run(world: World) -> Target:
    return world.queued(world.job())


def _id_of(t: Target) -> str:
    return str(t.file_id)


RUN_DENIED = "you are not allowed to run {path}"
CHANGE_DENIED = "you are not allowed to change {path}"
ADMIN_DENIED = "only a user with the ADMIN role may manage users, groups and roles"
SEES = {"owner": True, "reader": True, "stranger": False, "admin": True}


def _status_ok(world: World, t: Target, actor: str, r: httpx.Response) -> None:
    assert _body(r) == {
        "status": "success",
        "file-id": t.file_id,
        "job-execution-id": t.extra["execution"],
        "job-status": "QUEUED",
        "start-time": None,
    }


def _triggered(world: World, t: Target, actor: str, r: httpx.Response) -> None:
    body = _body(r)
    assert body["status"] == "success" and body["job-execution-user"] == actor
    assert _run(world, body["job-execution-id"]) is JobStatus.QUEUED


def _canceled(world: World, t: Target, actor: str, r: httpx.Response) -> None:
    assert r.text in ("", '{\n  "status": "success"\n}'), r.text
    assert _run(world, t.extra["execution"]) is JobStatus.CANCELED


def _running_list(world: World, t: Target, actor: str, r: httpx.Response) -> None:
    seen = [item["jobExecutionId"] for item in _body(r)]
    assert (t.extra["execution"] in seen) is SEES[actor], seen


def _sequential_target(world: World) -> Target:
    upstream = world.job()
    others = f"/api/filesystem/files/{upstream.file_id}/permission/others"
    opened = world.call("owner", Call("PUT", others, {"readable": True, "executable": True}))
    assert opened.status_code == 200, opened.text
    downstream = world.job(
        JobKind.WORKBOOK,
        {
            "triggering": {"mode": "DATA_DRIVEN"},
            "sheets": [
                {"kind": "data", "name": "src", "source": {"importJob": upstream.path}},
                {"kind": "sql", "name": "out", "keep": True, "sql": "SELECT * FROM src"},
            ],
        },
    )
    upstream.extra["downstream"] = downstream.config_id
    return upstream


def _plan(world: World, t: Target, actor: str, r: httpx.Response) -> None:
    body = _body(r)
    assert body["status"] == "success"
    planned = [m["job-configuration-id"] for m in body["execution-plan"]]
    # Only who may read AND run the data-driven workbook downstream gets it planned.
    runs_downstream = actor in ("owner", "admin")
    assert planned == [t.config_id, t.extra["downstream"]][: 2 if runs_downstream else 1]
    assert all(m["trigger"] for m in body["execution-plan"])


def _plan_of_one(world: World, t: Target, actor: str, r: httpx.Response) -> None:
    [member] = _body(r)["execution-plan"]
    assert member["job-configuration-id"] == t.config_id and member["trigger"] is True
    assert _run(world, member["job-execution-id"]) is JobStatus.QUEUED


JOB_ROWS = [
    Row(
        "v2 status by id",
        READ,
        _job_with_queued_run,
        lambda t: Call("GET", f"/api/job-execution/{t.file_id}/status", typed=_id_of(t)),
        _status_ok,
        missing=lambda t: Call(
            "GET", f"/api/job-execution/{MISSING_ID}/status", typed=str(MISSING_ID)
        ),
    ),
    Row(
        "v2 status by path",
        READ,
        _job_with_queued_run,
        lambda t: Call("GET", f"/api/job-execution{t.path}/status", typed=t.path),
        _status_ok,
        missing=lambda t: Call(
            "GET",
            "/api/job-execution/Data/ImportJobs/no.imp/status",
            typed="/Data/ImportJobs/no.imp",
        ),
    ),
    Row(
        "v2 schedule",
        READ,
        lambda w: w.job(),
        lambda t: Call("GET", f"/api/job-execution/{t.file_id}/schedule", typed=_id_of(t)),
        lambda w, t, a, r: _check(
            _body(r)["file-id"] == t.file_id and _body(r)["mode"] == "MANUAL"
        ),
        missing=lambda t: Call(
            "GET", f"/api/job-execution/{MISSING_ID}/schedule", typed=str(MISSING_ID)
        ),
    ),
    Row(
        "v2 trigger",
        CHANGE,
        lambda w: w.job(),
        lambda t: Call("POST", f"/api/job-execution/{t.file_id}/trigger", typed=_id_of(t)),
        _triggered,
        missing=lambda t: Call(
            "POST", f"/api/job-execution/{MISSING_ID}/trigger", typed=str(MISSING_ID)
        ),
        denied=RUN_DENIED,
        intact=_no_new_run,
    ),
    Row(
        "v2 stop",
        CHANGE,
        _job_with_queued_run,
        lambda t: Call("POST", f"/api/job-execution/{t.file_id}/stop", typed=_id_of(t)),
        _canceled,
        missing=lambda t: Call(
            "POST", f"/api/job-execution/{MISSING_ID}/stop", typed=str(MISSING_ID)
        ),
        denied=RUN_DENIED,
        intact=_still_queued,
    ),
    Row(
        "job details",
        READ,
        _job_with_queued_run,
        lambda t: Call(
            "GET",
            f"/rest/job-execution/job-details/{t.extra['execution']}",
            typed=str(t.extra["execution"]),
        ),
        lambda w, t, a, r: _check(
            _body(r)["jobStatus"] == "QUEUED" and _body(r)["file"]["id"] == t.file_id
        ),
        missing=lambda t: Call(
            "GET", f"/rest/job-execution/job-details/{MISSING_ID}", typed=str(MISSING_ID)
        ),
    ),
    Row(
        "job history",
        READ,
        _job_with_queued_run,
        lambda t: Call(
            "GET", f"/rest/job-configuration/job-history/{t.config_id}", typed=str(t.config_id)
        ),
        lambda w, t, a, r: _check(
            _body(r) == [{"id": t.extra["execution"], "jobStatus": "QUEUED"}]
        ),
        missing=lambda t: Call(
            "GET", f"/rest/job-configuration/job-history/{MISSING_ID}", typed=str(MISSING_ID)
        ),
    ),
    Row(
        "legacy status",
        READ,
        _job_with_queued_run,
        lambda t: Call(
            "GET", f"/rest/job-configuration/job-status/{t.config_id}", typed=str(t.config_id)
        ),
        lambda w, t, a, r: _check(_body(r) == {"id": t.extra["execution"], "jobStatus": "QUEUED"}),
        missing=lambda t: Call(
            "GET", f"/rest/job-configuration/job-status/{MISSING_ID}", typed=str(MISSING_ID)
        ),
    ),
    Row(
        "legacy trigger",
        CHANGE,
        lambda w: w.job(),
        lambda t: Call(
            "POST", f"/rest/job-execution?configuration={t.config_id}", typed=str(t.config_id)
        ),
        lambda w, t, a, r: _check(
            _run(w, _body(r)["id"]) is JobStatus.QUEUED and _body(r)["jobStatus"] == "QUEUED"
        ),
        missing=lambda t: Call(
            "POST", f"/rest/job-execution?configuration={MISSING_ID}", typed=str(MISSING_ID)
        ),
        denied=RUN_DENIED,
        intact=_no_new_run,
    ),
    Row(
        "legacy job-kill",
        CHANGE,
        _job_with_queued_run,
        lambda t: Call(
            "POST",
            f"/rest/job-execution/job-kill/{t.extra['execution']}",
            typed=str(t.extra["execution"]),
        ),
        _canceled,
        missing=lambda t: Call(
            "POST", f"/rest/job-execution/job-kill/{MISSING_ID}", typed=str(MISSING_ID)
        ),
        denied=RUN_DENIED,
        intact=_still_queued,
    ),
    Row(
        "volume report",
        READ,
        lambda w: w.with_data(w.job(), "data"),
        lambda t: Call(
            "GET", f"/rest/job-configuration/volume-report/{t.config_id}", typed=str(t.config_id)
        ),
        lambda w, t, a, r: _check([i["jobStatus"] for i in _body(r)] == ["COMPLETED"]),
        missing=lambda t: Call(
            "GET", f"/rest/job-configuration/volume-report/{MISSING_ID}", typed=str(MISSING_ID)
        ),
    ),
    Row(
        "list running (v2)",
        EVERYONE,
        _job_with_queued_run,
        lambda t: Call("GET", "/api/job-execution/list-running"),
        _running_list,
    ),
    Row(
        "list running (rest)",
        EVERYONE,
        _job_with_queued_run,
        lambda t: Call("GET", "/rest/jobs/list-running"),
        _running_list,
    ),
    Row(
        "sequential trigger",
        CHANGE,
        lambda w: w.job(),
        lambda t: Call(
            "POST",
            "/api/job-execution/sequential-trigger",
            {"fileIds": [t.file_id]},
            typed=_id_of(t),
        ),
        _plan_of_one,
        missing=lambda t: Call(
            "POST",
            "/api/job-execution/sequential-trigger",
            {"fileIds": [MISSING_ID]},
            typed=str(MISSING_ID),
        ),
        denied=RUN_DENIED,
        intact=_no_new_run,
    ),
    Row(
        "sequential trigger: downstream member",
        EVERYONE,
        _sequential_target,
        lambda t: Call("POST", "/api/job-execution/sequential-trigger", {"fileIds": [t.file_id]}),
        _plan,
    ),
]


def _check(condition: bool) -> None:
    assert condition


# ---------------------------------------------------------------- job documents

KIND_OF = {"import-job": JobKind.IMPORT, "workbook": JobKind.WORKBOOK, "export-job": JobKind.EXPORT}


def _document_target(kind: str) -> Callable[[World], Target]:
    def make(world: World) -> Target:
        target = world.job(KIND_OF[kind])
        read = _admin_get(world, f"/rest/{kind}/{target.config_id}")
        target.extra["document"] = read.json()
        return target

    return make


def _changed_document(t: Target) -> dict[str, Any]:
    return {**t.extra["document"], "description": "changed by the matrix"}


def _document_unchanged(kind: str) -> Callable[[World, Target], None]:
    def intact(world: World, t: Target) -> None:
        assert _admin_get(world, f"/rest/{kind}/{t.config_id}").json() == t.extra["document"]

    return intact


def _creation_folder(world: World) -> Target:
    folder = world.folder()
    folder.extra["name"] = world.name("new")
    return folder


def _document_rows(kind: str) -> list[Row]:
    base = f"/rest/{kind}"
    job_kind = KIND_OF[kind]

    def new_document(t: Target) -> dict[str, Any]:
        return {"path": f"{t.path}/{t.extra['name']}{job_kind.extension}", **t.extra["definition"]}

    def creation_target(world: World) -> Target:
        target = _creation_folder(world)
        target.extra["definition"] = _DEFINITIONS[job_kind](world)
        return target

    def created(world: World, t: Target, actor: str, r: httpx.Response) -> None:
        body = _body(r)
        assert body["status"] == "success"
        document = _admin_get(world, f"{base}/{body['configuration-id']}").json()
        assert document["path"] == new_document(t)["path"]
        listed = world.call(actor, Call("GET", base)).json()
        assert [i["owner"] for i in listed if i["id"] == body["configuration-id"]] == [actor]

    def not_created(world: World, t: Target) -> None:
        listed = _admin_get(world, base).json()
        assert new_document(t)["path"] not in [i["path"] for i in listed]

    return [
        Row(
            f"{kind}: create in a folder",
            CHANGE,
            creation_target,
            lambda t: Call("POST", base, new_document(t)),
            created,
            missing=lambda t: Call(
                "POST", base, {**new_document(t), "path": f"/Shared/no-such/x{job_kind.extension}"}
            ),
            denied="you are not allowed to create anything in the folder {path}",
            intact=not_created,
        ),
        Row(
            f"{kind}: read",
            READ,
            _document_target(kind),
            lambda t: Call("GET", f"{base}/{t.config_id}", typed=str(t.config_id)),
            lambda w, t, a, r: _check(
                _body(r) == t.extra["document"] and _body(r)["path"] == t.path
            ),
            missing=lambda t: Call("GET", f"{base}/{MISSING_ID}", typed=str(MISSING_ID)),
        ),
        Row(
            f"{kind}: update",
            CHANGE,
            _document_target(kind),
            lambda t: Call(
                "PUT", f"{base}/{t.config_id}", _changed_document(t), typed=str(t.config_id)
            ),
            lambda w, t, a, r: _check(
                _body(r) == {"status": "success"}
                and _admin_get(w, f"{base}/{t.config_id}").json() == _changed_document(t)
            ),
            missing=lambda t: Call(
                "PUT", f"{base}/{MISSING_ID}", _changed_document(t), typed=str(MISSING_ID)
            ),
            denied=CHANGE_DENIED,
            intact=_document_unchanged(kind),
        ),
        Row(
            f"{kind}: delete",
            CHANGE,
            _document_target(kind),
            lambda t: Call("DELETE", f"{base}/{t.config_id}", typed=str(t.config_id)),
            lambda w, t, a, r: _check(
                _body(r) == {"status": "success"}
                and _admin_get(w, f"{base}/{t.config_id}").status_code == 404
            ),
            missing=lambda t: Call("DELETE", f"{base}/{MISSING_ID}", typed=str(MISSING_ID)),
            denied=CHANGE_DENIED,
            intact=_document_unchanged(kind),
        ),
        Row(
            f"{kind}: list",
            EVERYONE,
            _document_target(kind),
            lambda t: Call("GET", base),
            lambda w, t, a, r: _check((t.config_id in [i["id"] for i in _body(r)]) is SEES[a]),
        ),
    ]


ARTIFACT_ROWS = [row for kind in KIND_OF for row in _document_rows(kind)]


# ---------------------------------------------------------------- data


def _with_import_data(world: World) -> Target:
    return world.with_data(world.job(), "data")


def _with_sheet_data(world: World) -> Target:
    return world.with_data(world.job(JobKind.WORKBOOK), "totals")


def _listing_ok(world: World, t: Target, actor: str, r: httpx.Response) -> None:
    [output] = _body(r)
    assert output["path"].startswith(t.path) and output["record-count"] == 3
    assert [d["id"] for d in output["datas"]] == [t.extra["data"]]


def _csv_ok(world: World, t: Target, actor: str, r: httpx.Response) -> None:
    assert r.headers["content-type"].startswith("text/csv")
    assert r.text.splitlines() == ['"n"', "1", "2", "3"]


def _data_still_listed(world: World, t: Target) -> None:
    listing = _admin_get(world, f"/rest/data/import-job/{t.config_id}").json()
    assert [d["id"] for d in listing[0]["datas"]] == [t.extra["data"]]


DATA_ROWS = [
    Row(
        "data listing: import job",
        READ,
        _with_import_data,
        lambda t: Call("GET", f"/rest/data/import-job/{t.config_id}", typed=str(t.config_id)),
        _listing_ok,
        missing=lambda t: Call("GET", f"/rest/data/import-job/{MISSING_ID}", typed=str(MISSING_ID)),
    ),
    Row(
        "data listing: workbook",
        READ,
        _with_sheet_data,
        lambda t: Call("GET", f"/rest/data/workbook/{t.config_id}", typed=str(t.config_id)),
        _listing_ok,
        missing=lambda t: Call("GET", f"/rest/data/workbook/{MISSING_ID}", typed=str(MISSING_ID)),
    ),
    Row(
        "data download: import job",
        READ,
        _with_import_data,
        lambda t: Call(
            "GET", f"/rest/data/import-job/{t.config_id}/download", typed=str(t.config_id)
        ),
        _csv_ok,
        missing=lambda t: Call(
            "GET", f"/rest/data/import-job/{MISSING_ID}/download", typed=str(MISSING_ID)
        ),
    ),
    Row(
        "data download: workbook sheet",
        READ,
        _with_sheet_data,
        lambda t: Call(
            "GET", f"/rest/data/workbook/{t.config_id}/totals/download", typed=str(t.config_id)
        ),
        _csv_ok,
        missing=lambda t: Call(
            "GET", f"/rest/data/workbook/{MISSING_ID}/totals/download", typed=str(MISSING_ID)
        ),
    ),
    Row(
        "data deletion",
        CHANGE,
        _with_import_data,
        lambda t: Call("DELETE", f"/rest/data/{t.extra['data']}", typed=str(t.extra["data"])),
        lambda w, t, a, r: _check(
            _body(r) == {"status": True}
            and _admin_get(w, f"/rest/data/import-job/{t.config_id}").json()[0]["datas"] == []
        ),
        missing=lambda t: Call("DELETE", f"/rest/data/{MISSING_ID}", typed=str(MISSING_ID)),
        denied=CHANGE_DENIED,
        intact=_data_still_listed,
    ),
]


# ---------------------------------------------------------------- file system and permissions


def _folder_ok(world: World, t: Target, actor: str, r: httpx.Response) -> None:
    assert _body(r)["id"] == t.file_id and _body(r)["path"] == t.path


def _file_ok(world: World, t: Target, actor: str, r: httpx.Response) -> None:
    assert _body(r)["id"] == t.file_id and _body(r)["path"] == t.path


def _permission_of(world: World, t: Target) -> dict[str, Any]:
    kind = "folders" if t.config_id == 0 else "files"
    body: dict[str, Any] = _admin_get(
        world, f"/api/filesystem/{kind}/{t.file_id}/permission"
    ).json()
    return body


def _permission_is(**expected: Any) -> Callable[[World, Target, str, httpx.Response], None]:
    def ok(world: World, t: Target, actor: str, r: httpx.Response) -> None:
        body = _body(r)
        for key, value in expected.items():
            assert _simple(body[key]) == value, (key, body)
        assert _simple(_permission_of(world, t)[key]) == value

    return ok


def _simple(value: Any) -> Any:
    # The flags without their links, so the rows read as the grants they check.
    if isinstance(value, list):
        return [_simple(v) for v in value]
    if isinstance(value, dict):
        return {k: _simple(v) for k, v in value.items() if k != "_links"}
    return value


def _flags(readable: bool = False, writable: bool = False, executable: bool = False) -> Any:
    return {"readable": readable, "writable": writable, "executable": executable}


READERS_R = {"name": "readers", "flags": _flags(readable=True)}


def _permissions_unchanged(world: World, t: Target) -> None:
    body = _permission_of(world, t)
    assert body["owner"] == "owner" and _simple(body["groups"]) == [READERS_R]
    assert _simple(body["others"]) == _flags()


def _folder_exists(world: World, t: Target) -> None:
    assert _admin_get(world, f"/api/filesystem/folders/{t.file_id}").json()["path"] == t.path


def _permission_rows(what: str, make: Callable[[World], Target]) -> list[Row]:
    kind = "folders" if what == "folder" else "files"

    def url(t: Target, tail: str) -> str:
        return f"/api/filesystem/{kind}/{t.file_id}/permission{tail}"

    def on(method: str, tail: str, body: Any = None) -> Callable[[Target], Call]:
        return lambda t: Call(method, url(t, tail), body, typed=_id_of(t))

    def on_missing(method: str, tail: str, body: Any = None) -> Callable[[Target], Call]:
        return lambda t: Call(
            method,
            f"/api/filesystem/{kind}/{MISSING_ID}/permission{tail}",
            body,
            typed=str(MISSING_ID),
        )

    def read_row(name: str, tail: str, ok: Callable[[Any], bool]) -> Row:
        return Row(
            f"{what} {name}",
            READ,
            make,
            on("GET", tail),
            lambda w, t, a, r: _check(ok(_simple(_body(r)))),
            missing=on_missing("GET", tail),
        )

    def change_row(
        name: str,
        method: str,
        tail: str,
        body: Any,
        rule: dict[str, Outcome_],
        ok: Callable[[World, Target, str, httpx.Response], None],
        denied: str,
    ) -> Row:
        return Row(
            f"{what} {name}",
            rule,
            make,
            on(method, tail, body),
            ok,
            missing=on_missing(method, tail, body),
            denied=denied,
            intact=_permissions_unchanged,
        )

    return [
        read_row(
            "permission: read", "", lambda b: b["owner"] == "owner" and b["groups"] == [READERS_R]
        ),
        read_row("owner: read", "/owner", lambda b: b == {"owner": "owner"}),
        read_row(
            "groups: read", "/groups", lambda b: _simple(b["_embedded"]["groups"]) == [READERS_R]
        ),
        read_row("group: read", "/groups/readers", lambda b: b == READERS_R),
        read_row("others: read", "/others", lambda b: b == _flags()),
        change_row(
            "owner: change",
            "PUT",
            "/owner",
            {"owner": "admin"},
            OWNER_CHANGE,
            _permission_is(owner="admin"),
            "only an ADMIN may change the owner of a file or folder",
        ),
        change_row(
            "groups: add",
            "POST",
            "/groups",
            {"name": "readers", "writable": True},
            CHANGE,
            _permission_is(groups=[{"name": "readers", "flags": _flags(True, True)}]),
            CHANGE_DENIED,
        ),
        change_row(
            "group: change",
            "PUT",
            "/groups/readers",
            {"writable": True},
            CHANGE,
            _permission_is(groups=[{"name": "readers", "flags": _flags(True, True)}]),
            CHANGE_DENIED,
        ),
        change_row(
            "group: remove",
            "DELETE",
            "/groups/readers",
            None,
            CHANGE,
            _permission_is(groups=[]),
            CHANGE_DENIED,
        ),
        change_row(
            "others: change",
            "PUT",
            "/others",
            {"readable": True},
            CHANGE,
            _permission_is(others=_flags(readable=True)),
            CHANGE_DENIED,
        ),
    ]


def _folder_call(method: str, tail: str = "", body: Any = None) -> Callable[[Target], Call]:
    return lambda t: Call(
        method, f"/api/filesystem/folders/{t.file_id}{tail}", body, typed=_id_of(t)
    )


def _no_folder(method: str, tail: str = "", body: Any = None) -> Callable[[Target], Call]:
    return lambda t: Call(
        method, f"/api/filesystem/folders/{MISSING_ID}{tail}", body, typed=str(MISSING_ID)
    )


FILESYSTEM_ROWS = [
    Row(
        "folder: read by id",
        READ,
        lambda w: w.folder(),
        _folder_call("GET"),
        _folder_ok,
        missing=_no_folder("GET"),
    ),
    Row(
        "folder: read by path",
        READ,
        lambda w: w.folder(),
        lambda t: Call("GET", f"/api/filesystem/folders{t.path}", typed=t.path),
        _folder_ok,
        missing=lambda t: Call(
            "GET", "/api/filesystem/folders/Shared/no-such", typed="/Shared/no-such"
        ),
    ),
    Row(
        "folder: children",
        READ,
        lambda w: w.folder(),
        _folder_call("GET", "/children"),
        lambda w, t, a, r: _check(_body(r)["_embedded"] == {"folders": [], "files": []}),
        missing=_no_folder("GET", "/children"),
    ),
    Row(
        "folder: create inside",
        CHANGE,
        lambda w: w.folder(),
        _folder_call("POST", "", {"name": "sub"}),
        lambda w, t, a, r: _check(_body(r)["path"] == f"{t.path}/sub"),
        missing=_no_folder("POST", "", {"name": "sub"}),
        denied="you are not allowed to create anything in the folder {path}",
        intact=lambda w, t: _check(
            _admin_get(w, f"/api/filesystem/folders{t.path}/sub").status_code == 404
        ),
    ),
    Row(
        "folder: rename",
        CHANGE,
        lambda w: w.folder(inside=w.folder()),
        _folder_call("PUT", "", {"name": "renamed"}),
        lambda w, t, a, r: _check(
            _admin_get(w, f"/api/filesystem/folders/{t.file_id}").json()["name"] == "renamed"
        ),
        missing=_no_folder("PUT", "", {"name": "renamed"}),
        denied=CHANGE_DENIED,
        intact=_folder_exists,
    ),
    Row(
        "folder: delete",
        CHANGE,
        lambda w: w.folder(),
        _folder_call("DELETE"),
        lambda w, t, a, r: _check(
            _admin_get(w, f"/api/filesystem/folders/{t.file_id}").status_code == 404
        ),
        missing=_no_folder("DELETE"),
        denied=CHANGE_DENIED,
        intact=_folder_exists,
    ),
    Row(
        "file: read by id",
        READ,
        lambda w: w.job(),
        lambda t: Call("GET", f"/api/filesystem/files/{t.file_id}", typed=_id_of(t)),
        _file_ok,
        missing=lambda t: Call("GET", f"/api/filesystem/files/{MISSING_ID}", typed=str(MISSING_ID)),
    ),
    Row(
        "file: read by path",
        READ,
        lambda w: w.job(),
        lambda t: Call("GET", f"/api/filesystem/files{t.path}", typed=t.path),
        _file_ok,
        missing=lambda t: Call(
            "GET", "/api/filesystem/files/Data/ImportJobs/no.imp", typed="/Data/ImportJobs/no.imp"
        ),
    ),
    *_permission_rows("file", lambda w: w.job()),
    *_permission_rows("folder", lambda w: w.folder()),
]


# ---------------------------------------------------------------- locations and connections


def _resource_rows(kind: str) -> list[Row]:
    base = f"/rest/{kind}"

    def make(world: World) -> Target:
        target = world.resource(kind)
        target.extra["document"] = _admin_get(world, f"{base}/{target.file_id}").json()
        target.extra["change"] = _resource(world, kind)
        return target

    def unchanged(world: World, t: Target) -> None:
        assert _admin_get(world, f"{base}/{t.file_id}").json() == t.extra["document"]

    def created(world: World, t: Target, actor: str, r: httpx.Response) -> None:
        document = _admin_get(world, f"{base}/{_body(r)['id']}").json()
        assert document["owner"] == actor and _body(r)["status"] == "success"
        assert document["path"].startswith(f"{t.path}/new")

    def in_folder(world: World) -> Target:
        target = world.folder()
        target.extra["change"] = _resource(world, kind)
        return target

    def not_created(world: World, t: Target) -> None:
        assert _admin_get(world, f"/api/filesystem/folders/{t.file_id}/children").json()[
            "_embedded"
        ] == {"folders": [], "files": []}

    return [
        Row(
            f"{kind}: create in a folder",
            CHANGE,
            in_folder,
            lambda t: Call(
                "POST", base, {"path": f"{t.path}/new", **t.extra["change"]}, typed=t.path
            ),
            created,
            missing=lambda t: Call(
                "POST",
                base,
                {"path": "/Shared/no-such/new", **t.extra["change"]},
                typed="/Shared/no-such",
            ),
            denied=CHANGE_DENIED,
            intact=not_created,
        ),
        Row(
            f"{kind}: read",
            READ,
            make,
            lambda t: Call("GET", f"{base}/{t.file_id}", typed=_id_of(t)),
            lambda w, t, a, r: _check(
                _body(r) == t.extra["document"] and _body(r)["owner"] == "owner"
            ),
            missing=lambda t: Call("GET", f"{base}/{MISSING_ID}", typed=str(MISSING_ID)),
        ),
        Row(
            f"{kind}: update",
            CHANGE,
            make,
            lambda t: Call("PUT", f"{base}/{t.file_id}", t.extra["change"], typed=_id_of(t)),
            lambda w, t, a, r: _check(_body(r) == {"status": "success"}),
            missing=lambda t: Call(
                "PUT", f"{base}/{MISSING_ID}", t.extra["change"], typed=str(MISSING_ID)
            ),
            denied=CHANGE_DENIED,
            intact=unchanged,
        ),
        Row(
            f"{kind}: delete",
            CHANGE,
            make,
            lambda t: Call("DELETE", f"{base}/{t.file_id}", typed=_id_of(t)),
            lambda w, t, a, r: _check(
                _body(r) == {"status": "success"}
                and _admin_get(w, f"{base}/{t.file_id}").status_code == 404
            ),
            missing=lambda t: Call("DELETE", f"{base}/{MISSING_ID}", typed=str(MISSING_ID)),
            denied=CHANGE_DENIED,
            intact=unchanged,
        ),
        Row(
            f"{kind}: list",
            EVERYONE,
            make,
            lambda t: Call("GET", base),
            lambda w, t, a, r: _check((t.file_id in [i["id"] for i in _body(r)]) is SEES[a]),
        ),
    ]


RESOURCE_ROWS = [*_resource_rows("location"), *_resource_rows("connection")]


# ---------------------------------------------------------------- users, groups, roles

UM = "/rest/user-management"


def _named(stem: str) -> Callable[[World], Target]:
    """A fresh user, group or role made by the admin; its name in extra['name']."""

    def make(world: World) -> Target:
        name = world.name(stem)
        bodies = {
            "users": {"name": name, "password": "a long enough password"},
            "groups": {"name": name},
            "roles": {"name": name, "capabilities": ["job.read"]},
        }
        made = world.call("admin", Call("POST", f"{UM}/{stem}", bodies[stem]))
        assert made.status_code == 200, made.text
        return Target(0, "", extra={"name": name, "new": world.name(stem)})

    return make


def _exists(stem: str) -> Callable[[World, Target], None]:
    def intact(world: World, t: Target) -> None:
        assert _admin_get(world, f"{UM}/{stem}/{t.extra['name']}").status_code == 200

    return intact


def _success(world: World, t: Target, actor: str, r: httpx.Response) -> None:
    assert _body(r)["status"] == "success", r.text


def _gone(stem: str) -> Callable[[World, Target, str, httpx.Response], None]:
    def ok(world: World, t: Target, actor: str, r: httpx.Response) -> None:
        assert _body(r) == {"status": "success"}
        assert _admin_get(world, f"{UM}/{stem}/{t.extra['name']}").status_code == 404

    return ok


def _lists(stem: str) -> Callable[[World, Target, str, httpx.Response], None]:
    def ok(world: World, t: Target, actor: str, r: httpx.Response) -> None:
        assert t.extra["name"] in r.text

    return ok


def _user_rows(stem: str) -> list[Row]:
    one = lambda t: f"{UM}/{stem}/{t.extra['name']}"  # noqa: E731
    rows = [
        Row(
            f"{stem}: list",
            ADMIN_ONLY,
            _named(stem),
            lambda t: Call("GET", f"{UM}/{stem}"),
            _lists(stem),
            denied=ADMIN_DENIED,
        ),
        Row(
            f"{stem}: read one",
            ADMIN_ONLY,
            _named(stem),
            lambda t: Call("GET", one(t)),
            lambda w, t, a, r: _check(
                _body(r)["username" if stem == "users" else "name"] == t.extra["name"]
            ),
            denied=ADMIN_DENIED,
        ),
        Row(
            f"{stem}: create",
            ADMIN_ONLY,
            _named(stem),
            lambda t: Call(
                "POST",
                f"{UM}/{stem}",
                {"name": t.extra["new"], "password": "a long enough password"}
                if stem == "users"
                else {"name": t.extra["new"]},
            ),
            _success,
            denied=ADMIN_DENIED,
            intact=lambda w, t: _check(
                _admin_get(w, f"{UM}/{stem}/{t.extra['new']}").status_code == 404
            ),
        ),
        Row(
            f"{stem}: delete",
            ADMIN_ONLY,
            _named(stem),
            lambda t: Call("DELETE", one(t)),
            _gone(stem),
            denied=ADMIN_DENIED,
            intact=_exists(stem),
        ),
    ]
    if stem == "users":
        rows.append(
            Row(
                "users: change",
                ADMIN_ONLY,
                _named(stem),
                lambda t: Call("PUT", one(t), {"email": "x@example.org"}),
                lambda w, t, a, r: _check(_admin_get(w, one(t)).json()["email"] == "x@example.org"),
                denied=ADMIN_DENIED,
            )
        )
        rows.append(
            Row(
                "users: someone else's password",
                ADMIN_ONLY,
                _named(stem),
                lambda t: Call("PUT", f"{UM}/password/{t.extra['name']}", "another long password"),
                _success,
                denied="you may change only your own password",
            )
        )
    if stem == "roles":
        rows.append(
            Row(
                "roles: change",
                ADMIN_ONLY,
                _named(stem),
                lambda t: Call("PUT", one(t), {"capabilities": ["job.run"]}),
                lambda w, t, a, r: _check(
                    _admin_get(w, one(t)).json()["capabilities"] == ["job.run"]
                ),
                denied=ADMIN_DENIED,
            )
        )
    return rows


USER_ROWS = [row for stem in ("users", "groups", "roles") for row in _user_rows(stem)]
USER_ROWS.append(
    Row(
        "users: read oneself",
        EVERYONE,
        lambda w: Target(0, ""),
        lambda t: Call("GET", f"{UM}/users/{t.extra['actor']}"),
        lambda w, t, a, r: _check(_body(r)["username"] == a),
    )
)

ROWS = {
    row.name: row
    for row in [*JOB_ROWS, *ARTIFACT_ROWS, *DATA_ROWS, *FILESYSTEM_ROWS, *RESOURCE_ROWS, *USER_ROWS]
}


# ---------------------------------------------------------------- the test


def _answer(response: httpx.Response, typed: str) -> tuple[int, str]:
    """What the client sees, with the reference it typed taken out."""
    return response.status_code, response.text.replace(typed, "<typed>") if typed else response.text


@pytest.mark.parametrize("actor", ACTORS)
@pytest.mark.parametrize("row_name", list(ROWS))
def test_matrix(world: World, row_name: str, actor: str) -> None:
    row = ROWS[row_name]
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
        assert (response.status_code, _body(response)) == (
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
