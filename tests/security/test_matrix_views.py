"""Permission matrix: Datameer's connections, dependencies and workbook-by-uuid views, the
administration pages, licence routes, the caller's own user, group rename and /metrics
(rows; see matrix.py)."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from datamill.domain.status import JobKind
from tests.helpers import password_hash
from tests.security.matrix import (
    ACTORS,
    ADMIN_DENIED,
    ADMIN_ONLY,
    CHANGE,
    CHANGE_DENIED,
    EVERYONE,
    MISSING_ID,
    READ,
    SEES,
    Call,
    Row,
    Target,
    World,
    admin_get,
    body_of,
    check,
    id_of,
    job_with_queued_run,
    rows_by_name,
    run_cell,
)
from tests.security.matrix import world as world  # one node per backend for this module

# ---------------------------------------------------------------- /rest/connections

SECRET = "s3cret-matrix-pw"
CONNECTIONS = "/rest/connections"
MASK = ["********"]


def _datameer_connection(path: str, user: str = "dbuser") -> dict[str, Any]:
    return {
        "file": {"path": path},
        "typeId": "das.JdbcDataStoreType",
        "properties": {
            "key.connectionUrl": ["jdbc:postgresql://127.0.0.1:5432/warehouse"],
            "user_name": [user],
            "password": [SECRET],
        },
    }


def _connection(world: World) -> Target:
    folder = world.folder()
    path = f"{folder.path}/{world.name('dst')}"
    made = world.call("owner", Call("POST", CONNECTIONS, _datameer_connection(path)))
    assert made.status_code == 200, made.text
    connection_id = made.json()["configuration-id"]
    world.share(connection_id)
    target = Target(connection_id, path + ".dst")
    target.extra["document"] = admin_get(world, f"{CONNECTIONS}/{connection_id}").json()
    return target


def _masked(world: World, connection_id: int) -> dict[str, Any]:
    """The connection as the admin reads it, after checking its password is only masked."""
    read = admin_get(world, f"{CONNECTIONS}/{connection_id}")
    assert read.status_code == 200 and SECRET not in read.text, read.text
    document: dict[str, Any] = read.json()
    assert document["properties"]["password"] == MASK
    return document


def _connection_unchanged(world: World, t: Target) -> None:
    assert _masked(world, t.file_id) == t.extra["document"]


def _connection_created(world: World, t: Target, actor: str, r: httpx.Response) -> None:
    body = body_of(r)
    assert body["status"] == "success"
    document = _masked(world, body["configuration-id"])
    assert document["owner"] == actor and document["file"]["path"] == f"{t.path}/new.dst"
    assert document["properties"]["user_name"] == ["dbuser"]


def _changed(t: Target) -> dict[str, Any]:
    """What a client sends back after a read, another database on the same server.

    The mask keeps the password only while the connection names the same server
    (driver, host, port, user, options: docs/security.md, S1).
    """
    document = t.extra["document"]
    url = ["jdbc:postgresql://127.0.0.1:5432/changed"]
    return {**document, "properties": {**document["properties"], "key.connectionUrl": url}}


def _no_connection_made(world: World, t: Target) -> None:
    listed = admin_get(world, f"/api/filesystem/folders/{t.file_id}/children").json()
    assert listed["_embedded"] == {"folders": [], "files": []}


CONNECTION_ROWS = [
    Row(
        "connections: create in a folder",
        CHANGE,
        lambda w: w.folder(),
        lambda t: Call("POST", CONNECTIONS, _datameer_connection(f"{t.path}/new"), typed=t.path),
        _connection_created,
        missing=lambda t: Call(
            "POST",
            CONNECTIONS,
            _datameer_connection("/Shared/no-such/new"),
            typed="/Shared/no-such",
        ),
        denied=CHANGE_DENIED,
        intact=_no_connection_made,
    ),
    Row(
        "connections: read (password masked)",
        READ,
        _connection,
        lambda t: Call("GET", f"{CONNECTIONS}/{t.file_id}", typed=id_of(t)),
        lambda w, t, a, r: check(
            body_of(r) == t.extra["document"]
            and body_of(r)["properties"]["password"] == MASK
            and SECRET not in r.text
            and body_of(r)["owner"] == "owner"
        ),
        missing=lambda t: Call("GET", f"{CONNECTIONS}/{MISSING_ID}", typed=str(MISSING_ID)),
    ),
    Row(
        "connections: update",
        CHANGE,
        _connection,
        lambda t: Call("PUT", f"{CONNECTIONS}/{t.file_id}", _changed(t), typed=id_of(t)),
        lambda w, t, a, r: check(
            body_of(r) == {"status": "success"}
            and _masked(w, t.file_id)["properties"]["key.connectionUrl"][0].endswith("/changed")
        ),
        missing=lambda t: Call(
            "PUT", f"{CONNECTIONS}/{MISSING_ID}", _changed(t), typed=str(MISSING_ID)
        ),
        denied=CHANGE_DENIED,
        intact=_connection_unchanged,
    ),
    Row(
        "connections: delete",
        CHANGE,
        _connection,
        lambda t: Call("DELETE", f"{CONNECTIONS}/{t.file_id}", typed=id_of(t)),
        lambda w, t, a, r: check(
            body_of(r) == {"status": "success"}
            and admin_get(w, f"{CONNECTIONS}/{t.file_id}").status_code == 404
        ),
        missing=lambda t: Call("DELETE", f"{CONNECTIONS}/{MISSING_ID}", typed=str(MISSING_ID)),
        denied=CHANGE_DENIED,
        intact=_connection_unchanged,
    ),
    Row(
        "connections: list",
        EVERYONE,
        _connection,
        lambda t: Call("GET", CONNECTIONS),
        lambda w, t, a, r: check(
            (t.file_id in [i["id"] for i in body_of(r)]) is SEES[a] and SECRET not in r.text
        ),
    ),
]


# ---------------------------------------------------------------- dependencies, by uuid


def _family(world: World) -> Target:
    """Around a shared import job B: a workbook W reading B and a private import job A, a
    private workbook V reading B, and an export job E of B. Only A and V are not shared."""
    private = world.job(shared=False)
    source = world.job()

    def workbook(*sources: Target) -> dict[str, Any]:
        sheets: list[dict[str, Any]] = [
            {"kind": "data", "name": f"s{i}", "source": {"importJob": s.path}}
            for i, s in enumerate(sources)
        ]
        sheets.append({"kind": "sql", "name": "out", "keep": True, "sql": "SELECT * FROM s0"})
        return {"sheets": sheets}

    family = {
        "A": private,
        "B": source,
        "W": world.job(JobKind.WORKBOOK, workbook(source, private)),
        "V": world.job(JobKind.WORKBOOK, workbook(source), shared=False),
        "E": world.job(
            JobKind.EXPORT,
            {
                "source": {"importJob": source.path},
                "sink": {"kind": "csv", "path": "out.csv", "location": "/Connections/matrix.loc"},
            },
        ),
    }
    return Target(0, "", extra={"family": family})


def _dependencies_row(kind: str, member: str, way: str, seen: str, hidden: str) -> Row:
    """`member`'s dependencies list `seen`, and `hidden` too for who may read those."""

    def ok(world: World, t: Target, actor: str, r: httpx.Response) -> None:
        family = t.extra["family"]
        body = body_of(r)
        assert body["id"] == family[member].config_id and body["path"] == family[member].path
        expected = set(seen) | (set(hidden) if actor != "reader" else set())
        listed = {n["id"] for n in body[way]}
        assert listed == {family[name].config_id for name in expected}, body
        if actor == "reader":  # an unreadable neighbour is never named
            for name in hidden:
                assert family[name].path.rsplit("/", 1)[-1].rsplit(".")[0] not in r.text

    return Row(
        f"{kind} dependencies: {way}",
        READ,
        _family,
        lambda t: Call(
            "GET",
            f"/api/{kind}/{t.extra['family'][member].config_id}/dependencies",
            typed=str(t.extra["family"][member].config_id),
        ),
        ok,
        missing=lambda t: Call(
            "GET", f"/api/{kind}/{MISSING_ID}/dependencies", typed=str(MISSING_ID)
        ),
    )


def _uuid_of(world: World, file_id: int) -> str:
    with world.node.store.db.read() as conn:
        return world.node.store.files.get(conn, file_id).uuid


def _workbook_by_uuid(world: World) -> Target:
    target = world.job(JobKind.WORKBOOK)
    target.extra["uuid"] = _uuid_of(world, target.file_id)
    target.extra["document"] = admin_get(world, f"/rest/workbook/{target.config_id}").json()
    return target


VIEW_ROWS = [
    _dependencies_row("import-job", "B", "downstream", "WE", "V"),
    _dependencies_row("workbook", "W", "upstream", "B", "A"),
    _dependencies_row("export-job", "E", "upstream", "B", ""),
    Row(
        "workbook by uuid",
        READ,
        _workbook_by_uuid,
        lambda t: Call(
            "GET", f"/api/filesystem/workbooks/{t.extra['uuid']}", typed=t.extra["uuid"]
        ),
        lambda w, t, a, r: check(
            body_of(r) == {"path": t.path, **t.extra["document"]} and body_of(r)["path"] == t.path
        ),
        missing=lambda t: Call(
            "GET",
            "/api/filesystem/workbooks/00000000-0000-4000-8000-000000000000",
            typed="00000000-0000-4000-8000-000000000000",
        ),
    ),
]


# ---------------------------------------------------------------- the server, the caller


def _overview_ok(world: World, t: Target, actor: str, r: httpx.Response) -> None:
    body = body_of(r)
    [item] = [i for i in body["queuedJobs"] if i["jobExecutionId"] == t.extra["execution"]]
    assert item["fileId"] == t.file_id and item["user"] == "admin"
    assert item["jobType"] == "import" and item["progress"] is None


def _licence_ok(world: World, t: Target, actor: str, r: httpx.Response) -> None:
    body = body_of(r)
    assert body["LicenseExpirationDate"] == "Dec 31, 9999 11:59:59 PM"
    assert body["ProductId"] == admin_get(world, "/license/product-id").text
    assert body["LicenseType"].startswith("Open Source (")


def _product_id_ok(world: World, t: Target, actor: str, r: httpx.Response) -> None:
    assert str(uuid.UUID(r.text)) == r.text == admin_get(world, "/license/product-id").text


def _group(world: World) -> Target:
    name = world.name("grp")
    made = world.call("admin", Call("POST", "/rest/user-management/groups", {"name": name}))
    assert made.status_code == 200, made.text
    return Target(0, "", extra={"name": name, "new": world.name("renamed")})


def _group_renamed(world: World, t: Target, actor: str, r: httpx.Response) -> None:
    assert body_of(r) == {"status": "success"}
    groups = "/rest/user-management/groups"
    assert admin_get(world, f"{groups}/{t.extra['new']}").json()["name"] == t.extra["new"]
    assert admin_get(world, f"{groups}/{t.extra['name']}").status_code == 404


def _group_kept(world: World, t: Target) -> None:
    groups = "/rest/user-management/groups"
    assert admin_get(world, f"{groups}/{t.extra['name']}").status_code == 200
    assert admin_get(world, f"{groups}/{t.extra['new']}").status_code == 404


NOTHING = lambda w: Target(0, "")  # noqa: E731
METRICS_DENIED = (
    "your roles do not allow you to read the server's metrics"
    " (this needs the capability metrics.read)"
)

SERVER_ROWS = [
    Row(
        "system overview: running jobs",
        ADMIN_ONLY,
        job_with_queued_run,
        lambda t: Call("GET", "/admin/system-overview/runningJobs"),
        _overview_ok,
        denied="only a user with the ADMIN role may read the system overview",
    ),
    Row(
        "licence details",
        ADMIN_ONLY,
        NOTHING,
        lambda t: Call("GET", "/rest/license-details"),
        _licence_ok,
        denied="only a user with the ADMIN role may read the licence details",
    ),
    Row(
        "licence product id",
        EVERYONE,
        NOTHING,
        lambda t: Call("GET", "/license/product-id"),
        _product_id_ok,
    ),
    Row(
        "dashboards (none)",
        EVERYONE,
        NOTHING,
        lambda t: Call("GET", "/rest/dashboard"),
        lambda w, t, a, r: check(body_of(r) == []),
    ),
    Row(
        "infographics (none)",
        EVERYONE,
        NOTHING,
        lambda t: Call("GET", "/rest/infographics"),
        lambda w, t, a, r: check(body_of(r) == []),
    ),
    Row(
        "logged-in user",
        EVERYONE,
        NOTHING,
        lambda t: Call("GET", "/rest/user-management/logged-in-user"),
        lambda w, t, a, r: check(
            body_of(r)["username"] == a
            and body_of(r)["groups"] == (["readers"] if a == "reader" else [])
            and "password" not in r.text
        ),
    ),
    Row(
        "groups: rename",
        ADMIN_ONLY,
        _group,
        lambda t: Call(
            "PUT", f"/rest/user-management/groups/{t.extra['name']}", {"name": t.extra["new"]}
        ),
        _group_renamed,
        denied=ADMIN_DENIED,
        intact=_group_kept,
    ),
    Row(
        "metrics",
        ADMIN_ONLY,
        NOTHING,
        lambda t: Call("GET", "/metrics"),
        lambda w, t, a, r: check(
            r.headers["content-type"].startswith("text/plain") and "# HELP " in r.text
        ),
        denied=METRICS_DENIED,
    ),
]


ROWS = rows_by_name([*CONNECTION_ROWS, *VIEW_ROWS, *SERVER_ROWS])


@pytest.mark.parametrize("actor", ACTORS)
@pytest.mark.parametrize("row_name", list(ROWS))
def test_matrix(world: World, row_name: str, actor: str) -> None:
    run_cell(world, ROWS[row_name], actor)


def test_metrics_need_metrics_read_not_admin(world: World) -> None:
    """A role holding metrics.read, and nothing else, reads /metrics; the roles above do not."""
    role = {"name": "WATCHER", "capabilities": ["metrics.read"]}
    made = world.call("admin", Call("POST", "/rest/user-management/roles", role))
    assert made.status_code == 200, made.text
    world.node.store.users.create("watcher", password_hash("pw"), roles=("WATCHER",))
    scraped = world.call("watcher", Call("GET", "/metrics"))
    assert scraped.status_code == 200 and "# HELP " in scraped.text, scraped.text
    refused = world.call("watcher", Call("GET", "/rest/license-details"))
    assert refused.json() == {
        "status": "failure",
        "reason": "only a user with the ADMIN role may read the licence details",
    }


def test_group_rename_refuses_a_non_admin_before_reading_the_body(world: World) -> None:
    """A non-admin learns nothing from a rename, not even that the body was wrong."""
    target = _group(world)
    url = f"/rest/user-management/groups/{target.extra['name']}"
    for actor in ("owner", "reader", "stranger"):
        refused = world.call(actor, Call("PUT", url, {"nom": "x"}))
        assert (refused.status_code, refused.json()) == (
            403,
            {"status": "failure", "reason": ADMIN_DENIED},
        ), refused.text
    bad = world.call("admin", Call("PUT", url, {"nom": "x"}))
    assert bad.status_code == 400, bad.text
