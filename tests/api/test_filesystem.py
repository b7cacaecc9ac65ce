"""The file system routes over HTTP: folders, files, HAL links and permissions."""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from datamill.api.app import create_app
from datamill.bootstrap import Node
from datamill.domain.status import JobKind
from datamill.services.graph import upstream_graph
from tests.helpers import password_hash, totals_workbook

FS = "/api/filesystem"
MISSING_REASON = "File doesn't exist or isn't accessible with current permissions"
IMPORT = {"source": {"kind": "csv", "path": "/x.csv"}}


def _auth(name: str) -> dict[str, str]:
    password = "secret" if name == "admin" else "pw"
    return {"Authorization": "Basic " + base64.b64encode(f"{name}:{password}".encode()).decode()}


@dataclass
class Api:
    """The app, its node, and calls made as a named user."""

    node: Node
    client: TestClient

    def call(
        self, method: str, url: str, body: str | None = None, *, user: str = "admin"
    ) -> httpx.Response:
        """One request as `user`; bodies go out form-encoded, as curl -d sends them."""
        headers = _auth(user)
        if body is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        return self.client.request(method, url, content=body, headers=headers)

    def ok(self, method: str, url: str, body: str | None = None, *, user: str = "admin") -> Any:
        """The JSON of a call that must succeed with HTTP 200."""
        response = self.call(method, url, body, user=user)
        assert response.status_code == 200, f"{method} {url}: {response.text}"
        return response.json()

    def mkdir(self, parent: str, name: str, *, user: str = "admin") -> dict[str, Any]:
        """Create a folder through the API."""
        body = f'{{name: "{name}"}}'
        result: dict[str, Any] = self.ok("POST", f"{FS}/folders{parent}", body, user=user)
        return result

    def job(self, path: str, owner: str = "admin") -> int:
        """Define an import job file; returns its file id."""
        entry, _ = self.node.jobs.define_job(path, JobKind.IMPORT, IMPORT, owner)
        return entry.id


@pytest.fixture
def api(node: Node) -> Iterator[Api]:
    """Users alice (group team), bob (group other), carol (no group); ANALYSTs all."""
    users = node.store.users
    users.create("alice", password_hash("pw"), groups=("team",))
    users.create("bob", password_hash("pw"), groups=("other",))
    users.create("carol", password_hash("pw"))
    with TestClient(create_app(node.settings, node.jobs)) as client:
        yield Api(node, client)


def _names(folder: dict[str, Any], kind: str = "folders") -> list[str]:
    return [child["name"] for child in folder["_embedded"][kind]]


def _missing(api: Api, method: str, url_template: str, user: str, body: str | None) -> str:
    """The answer a missing entry gets, for comparison with an invisible one."""
    response = api.call(method, url_template.format(ref=999999), body, user=user)
    assert response.status_code == 404
    assert response.json() == {"status": "failure", "reason": MISSING_REASON}
    return response.text


# ---------------------------------------------------------------- reading


def test_root_folder_shows_the_default_tree(api: Api) -> None:
    root = api.ok("GET", f"{FS}/root-folder")
    assert (root["name"], root["path"], root["type"], root["owner"]) == (
        "/",
        "/",
        "folder",
        "system",
    )
    # /Connections holds the operator roots' locations (docs/security.md).
    assert _names(root) == [".system", "Analytics", "Connections", "Data", "Users"]
    assert root["_embedded"]["files"] == []
    assert root["_links"]["self"] == {"href": f"{FS}/root-folder"}
    assert "parent" not in root["_links"]
    assert dt.datetime.fromisoformat(root["createdAt"]).tzinfo is not None
    assert api.ok("GET", f"{FS}/folders")["id"] == root["id"]
    data = api.ok("GET", f"{FS}/folders/Data")
    assert _names(data) == ["ExportJobs", "ImportJobs"]
    assert data["_links"]["parent"] == {"href": f"{FS}/folders/{root['id']}"}
    workbooks = api.ok("GET", f"{FS}/folders/Analytics/Workbooks")
    assert workbooks["path"] == "/Analytics/Workbooks"


def test_every_reference_form_names_the_same_folder(api: Api) -> None:
    made = api.mkdir("/Data", "My Team")
    refs = [
        str(made["id"]),
        made["uuid"],
        made["uuid"].upper(),
        "Data/My Team",
        "/Data/My Team",
        "%2FData%2FMy%20Team",
        "Data/My+Team",
        "Data/My%20Team/",
    ]
    for ref in refs:
        assert api.ok("GET", f"{FS}/folders/{ref}")["id"] == made["id"], ref
    # A real '+' in a name wins over the space reading.
    plus = api.mkdir("/Data", "a+b")
    space = api.mkdir("/Data", "a b")
    assert api.ok("GET", f"{FS}/folders/Data/a+b")["id"] == plus["id"]
    assert api.ok("GET", f"{FS}/folders/Data/a%20b")["id"] == space["id"]


def test_job_files_are_read_by_id_uuid_or_path(api: Api) -> None:
    file_id = api.job("/Data/ImportJobs/my orders.imp")
    config = api.node.store.jobs
    with api.node.store.db.read() as conn:
        config_id = config.for_file(conn, file_id).id  # type: ignore[union-attr]
    body = api.ok("GET", f"{FS}/files/{file_id}")
    assert body["path"] == "/Data/ImportJobs/my orders.imp"
    assert (body["name"], body["type"], body["owner"]) == ("my orders.imp", "import", "admin")
    assert body["jobConfigurationId"] == config_id
    assert api.ok("GET", f"{FS}/files/{body['uuid']}")["id"] == file_id
    assert api.ok("GET", f"{FS}/files/Data/ImportJobs/my+orders.imp")["id"] == file_id
    listing = api.ok("GET", f"{FS}/folders/Data/ImportJobs")
    assert [(f["name"], f["id"]) for f in listing["_embedded"]["files"]] == [
        ("my orders.imp", file_id)
    ]
    # Each kind has its own route; the other one says what the entry is.
    assert "is a file" in api.call("GET", f"{FS}/folders/{file_id}").json()["reason"]
    folder = api.call("GET", f"{FS}/files/Data")
    assert folder.status_code == 404 and "is a folder" in folder.json()["reason"]


def test_hal_links_lead_to_working_urls(api: Api) -> None:
    file_id = api.job("/Data/Team/orders.imp")
    team = api.ok("GET", f"{FS}/folders/Data/Team")
    api.ok("POST", f"{FS}/files/{file_id}/permission/groups", "{name=team,flags:{readable:true}}")
    answers = [
        api.ok("GET", f"{FS}/root-folder"),
        team,
        api.ok("GET", f"{FS}/files/{file_id}"),
        api.ok("GET", f"{FS}/files/{file_id}/permission"),
        api.ok("GET", f"{FS}/folders/{team['id']}/permission"),
        api.ok("GET", f"{FS}/files/{file_id}/permission/groups"),
    ]
    hrefs: set[str] = set()

    def collect(value: Any) -> None:
        if isinstance(value, dict):
            if set(value) == {"href"}:
                hrefs.add(value["href"])
            for item in value.values():
                collect(item)
        elif isinstance(value, list):
            for item in value:
                collect(item)

    collect(answers)
    assert len(hrefs) > 20
    for href in sorted(hrefs):
        api.ok("GET", href)
    assert api.ok("GET", team["_links"]["self"]["href"])["path"] == "/Data/Team"
    assert api.ok("GET", team["_links"]["parent"]["href"])["path"] == "/Data"
    children = api.ok("GET", team["_links"]["children"]["href"])
    assert [f["id"] for f in children["_embedded"]["files"]] == [file_id]
    file_links = answers[2]["_links"]
    assert api.ok("GET", file_links["parent"]["href"])["id"] == team["id"]
    assert api.ok("GET", file_links["permission"]["href"])["owner"] == "admin"


# ---------------------------------------------------------------- shaping


def test_create_folder_owned_by_its_creator(api: Api) -> None:
    data_id = api.ok("GET", f"{FS}/folders/Data")["id"]
    api.ok("PUT", f"{FS}/folders/{data_id}/permission/others", "{writable: true}")
    made = api.ok("POST", f"{FS}/folders/Data", '{name="Reports"}', user="alice")
    assert (made["path"], made["owner"], made["type"]) == ("/Data/Reports", "alice", "folder")
    assert made["_embedded"] == {"folders": [], "files": []}
    assert "Reports" in _names(api.ok("GET", f"{FS}/folders/Data"))
    nested = api.ok("POST", f"{FS}/folders/{made['uuid']}", "{'name': 'Q1',}", user="alice")
    assert nested["path"] == "/Data/Reports/Q1"
    top = api.ok("POST", f"{FS}/folders", '{"name": "Projects"}')
    assert top["path"] == "/Projects"
    assert "Projects" in _names(api.ok("GET", f"{FS}/root-folder"))


def test_duplicate_names_are_409_already_exists(api: Api) -> None:
    api.mkdir("/Data", "Team")
    api.job("/Data/ImportJobs/orders.imp")
    for parent, name in [("/Data", "Team"), ("/Data/ImportJobs", "orders.imp"), ("/", "Data")]:
        response = api.call("POST", f"{FS}/folders{parent}", f'{{name: "{name}"}}')
        assert response.status_code == 409, response.text
        assert "already exists" in response.json()["reason"]
    api.mkdir("/Data", "Other")
    clash = api.call("PUT", f"{FS}/folders/Data/Other", '{name: "Team"}')
    assert clash.status_code == 409 and "already exists" in clash.json()["reason"]


def test_rename_and_move_carry_every_path_below(api: Api) -> None:
    team = api.mkdir("/Data", "T_am")
    api.mkdir("/Data/T_am", "Sub")
    deep = api.mkdir("/Data/T_am/Sub", "Deep 50%")
    job = api.job("/Data/T_am/Sub/orders.imp")
    # A sibling that LIKE 'T_am/%' would also match must stay where it is.
    lookalike = api.job("/Data/Team/other.imp")

    moved = api.ok("PUT", f"{FS}/folders/Data/T_am", '{name: "Crew", parent: "/Analytics"}')
    assert moved["id"] == team["id"] and moved["path"] == "/Analytics/Crew"
    assert api.ok("GET", f"{FS}/folders/{deep['id']}")["path"] == "/Analytics/Crew/Sub/Deep 50%"
    assert api.ok("GET", f"{FS}/files/{job}")["path"] == "/Analytics/Crew/Sub/orders.imp"
    assert api.ok("GET", f"{FS}/files/{lookalike}")["path"] == "/Data/Team/other.imp"
    assert api.call("GET", f"{FS}/folders/Data/T_am/Sub").status_code == 404
    assert "Crew" in _names(api.ok("GET", f"{FS}/folders/Analytics"))
    assert "T_am" not in _names(api.ok("GET", f"{FS}/folders/Data"))
    status = api.call("GET", "/api/job-execution/Analytics/Crew/Sub/orders.imp/status")
    assert status.status_code == 200 and status.json()["job-status"] == "_NONE"

    renamed = api.ok("PUT", f"{FS}/folders/{team['id']}", "{name: Crew2}")
    assert renamed["path"] == "/Analytics/Crew2"
    data_id = api.ok("GET", f"{FS}/folders/Data")["id"]
    back = api.ok("PUT", f"{FS}/folders/{team['uuid']}", f"{{parent: {data_id}}}")
    assert back["path"] == "/Data/Crew2"
    assert api.ok("GET", f"{FS}/files/{job}")["path"] == "/Data/Crew2/Sub/orders.imp"


def test_impossible_moves_are_refused(api: Api) -> None:
    api.mkdir("/Data", "Team")
    api.mkdir("/Data/Team", "Sub")
    job = api.job("/Data/ImportJobs/orders.imp")
    into_self = api.call("PUT", f"{FS}/folders/Data/Team", '{parent: "/Data/Team/Sub"}')
    assert into_self.status_code == 400 and "into itself" in into_self.json()["reason"]
    into_file = api.call("PUT", f"{FS}/folders/Data/Team", f"{{parent: {job}}}")
    assert into_file.status_code == 404 and "is a file" in into_file.json()["reason"]
    nowhere = api.call("PUT", f"{FS}/folders/Data/Team", '{parent: "/Nowhere"}')
    assert nowhere.status_code == 404
    assert api.ok("GET", f"{FS}/folders/Data/Team/Sub")["path"] == "/Data/Team/Sub"


def test_moving_jobs_that_others_name_by_path_is_refused(api: Api) -> None:
    api.job("/Data/Team/orders.imp")
    api.node.jobs.define_job(
        "/Analytics/Workbooks/totals.wbk",
        JobKind.WORKBOOK,
        totals_workbook("/Data/Team/orders.imp"),
        "admin",
    )
    refused = api.call("PUT", f"{FS}/folders/Data/Team", "{name: Crew}")
    assert refused.status_code == 409
    assert "/Analytics/Workbooks/totals.wbk" in refused.json()["reason"]
    assert api.ok("GET", f"{FS}/folders/Data/Team")["path"] == "/Data/Team"
    # Named by id, the source survives a move.
    by_id = api.job("/Data/Other/orders.imp")
    api.node.jobs.define_job(
        "/Analytics/Workbooks/other.wbk", JobKind.WORKBOOK, totals_workbook(str(by_id)), "admin"
    )
    assert api.ok("PUT", f"{FS}/folders/Data/Other", "{name: Moved}")["path"] == "/Data/Moved"
    # A path that named nothing names the job once its folder moves there.
    later, _ = api.node.jobs.define_job(
        "/Analytics/Workbooks/later.wbk",
        JobKind.WORKBOOK,
        totals_workbook("/Data/Later/orders.imp"),
        "admin",
    )
    api.ok("PUT", f"{FS}/folders/Data/Moved", "{name: Later}")
    with api.node.store.db.read() as conn:
        graph = upstream_graph(conn, api.node.store)
        later_config = api.node.store.jobs.for_file(conn, later.id)
        source_config = api.node.store.jobs.for_file(conn, by_id)
    assert later_config is not None and source_config is not None
    assert graph[later_config.id] == {source_config.id}


def test_delete_only_empty_folders(api: Api) -> None:
    team = api.mkdir("/Data", "Team")
    api.job("/Data/Team/orders.imp")  # private to admin: alice cannot see it
    api.ok(
        "POST",
        f"{FS}/folders/{team['id']}/permission/groups",
        "{name: team, flags: {readable: true, writable: true}}",
    )
    assert api.ok("GET", f"{FS}/folders/Data/Team", user="alice")["_embedded"]["files"] == []
    for user in ("alice", "admin"):
        full = api.call("DELETE", f"{FS}/folders/Data/Team", user=user)
        assert full.status_code == 409, full.text
        assert "not empty" in full.json()["reason"]
    empty = api.mkdir("/Data/Team", "Empty")
    assert api.ok("DELETE", f"{FS}/folders/{empty['id']}") == {"status": "success"}
    assert api.call("GET", f"{FS}/folders/Data/Team/Empty").status_code == 404
    assert "Empty" not in _names(api.ok("GET", f"{FS}/folders/Data/Team"))


def test_default_folders_cannot_be_deleted_renamed_or_moved(api: Api) -> None:
    defaults = ["/", "/Data", "/Data/ImportJobs", "/Data/ExportJobs", "/Analytics"]
    defaults += ["/Analytics/Workbooks", "/.system", "/Users"]
    for path in defaults:
        url = f"{FS}/folders{path}"
        for method, body in [("DELETE", None), ("PUT", "{name: x}"), ("PUT", "{parent: /Users}")]:
            response = api.call(method, url, body)
            assert response.status_code == 403, (path, method, response.text)
            assert "default folder" in response.json()["reason"]
        assert api.ok("GET", url)["path"] == path


# ---------------------------------------------------------------- permissions


def test_permission_answer_and_changes_of_owner_group_and_others(api: Api) -> None:
    file_id = api.job("/Data/ImportJobs/orders.imp")
    base = f"{FS}/files/{file_id}/permission"
    assert api.ok("GET", base) == {
        "owner": "admin",
        "groups": [],
        "others": {"readable": False, "writable": False, "executable": False},
        "_links": {
            "self": {"href": base},
            "file": {"href": f"{FS}/files/{file_id}"},
            "owner": {"href": f"{base}/owner"},
            "groups": {"href": f"{base}/groups"},
            "others": {"href": f"{base}/others"},
        },
    }
    assert api.ok("PUT", f"{base}/owner", "{owner:alice}")["owner"] == "alice"
    assert api.ok("GET", f"{FS}/files/{file_id}")["owner"] == "alice"
    after = api.ok(
        "POST", f"{base}/groups", '{name="other",flags:{readable:true,executable:"true"}}'
    )
    assert after["groups"][0]["name"] == "other"
    assert after["groups"][0]["flags"] == {"readable": True, "writable": False, "executable": True}
    # Flags left out keep their value.
    api.ok("PUT", f"{base}/groups/other", "{writable: true}")
    assert api.ok("GET", f"{base}/groups/other")["flags"] == {
        "readable": True,
        "writable": True,
        "executable": True,
    }
    assert [g["name"] for g in api.ok("GET", f"{base}/groups")["_embedded"]["groups"]] == ["other"]
    others = api.ok("PUT", f"{base}/others", "{flags: {readable: true}}")["others"]
    assert others == {"readable": True, "writable": False, "executable": False}
    assert api.ok("GET", f"{base}/others")["readable"] is True
    assert api.ok("DELETE", f"{base}/groups/other")["groups"] == []
    assert api.call("GET", f"{base}/groups/other").status_code == 404
    assert api.call("DELETE", f"{base}/groups/other").status_code == 404


def test_group_flags_decide_who_sees_a_file(api: Api) -> None:
    file_id = api.job("/Data/ImportJobs/orders.imp")
    url = f"{FS}/files/{file_id}"
    missing = _missing(api, "GET", FS + "/files/{ref}", "alice", None)
    hidden = api.call("GET", url, user="alice")
    assert (hidden.status_code, hidden.text) == (404, missing)
    assert _names(api.ok("GET", f"{FS}/folders/Data/ImportJobs", user="alice"), "files") == []

    api.ok("POST", f"{url}/permission/groups", "{name=team,flags:{readable:true}}")
    assert api.ok("GET", url, user="alice")["id"] == file_id
    listed = api.ok("GET", f"{FS}/folders/Data/ImportJobs", user="alice")
    assert _names(listed, "files") == ["orders.imp"]
    assert api.ok("GET", f"{url}/permission", user="alice")["groups"][0]["name"] == "team"
    # bob's group holds nothing: for him the file still does not exist.
    assert api.call("GET", url, user="bob").text == _missing(
        api, "GET", FS + "/files/{ref}", "bob", None
    )
    assert _names(api.ok("GET", f"{FS}/folders/Data/ImportJobs", user="bob"), "files") == []

    api.ok("PUT", f"{url}/permission/others", "{readable: true}")
    assert api.ok("GET", url, user="carol")["id"] == file_id


def test_who_may_change_permissions(api: Api) -> None:
    file_id = api.job("/Data/ImportJobs/orders.imp", owner="carol")
    url = FS + "/files/{ref}/permission"
    api.ok(
        "POST",
        url.format(ref=file_id) + "/groups",
        "{name=team,flags:{readable:true}}",
        user="carol",
    )
    changes = [
        ("PUT", "/owner", "{owner: bob}"),
        ("POST", "/groups", "{name: other, flags: {readable: true}}"),
        ("PUT", "/groups/team", "{writable: true}"),
        ("DELETE", "/groups/team", None),
        ("PUT", "/others", "{readable: true}"),
    ]
    for method, suffix, body in changes:
        template = url + suffix
        real = template.format(ref=file_id)
        readable_only = api.call(method, real, body, user="alice")
        assert readable_only.status_code == 403, (suffix, readable_only.text)
        invisible = api.call(method, real, body, user="bob")
        assert invisible.text == _missing(api, method, template, "bob", body), suffix
    assert api.ok("GET", url.format(ref=file_id))["owner"] == "carol"
    # A group given writable may change flags; the owner always may. Only an
    # ADMIN changes the owner (a job runs with its owner's rights).
    api.ok("PUT", url.format(ref=file_id) + "/groups/team", "{writable: true}", user="carol")
    api.ok("PUT", url.format(ref=file_id) + "/others", "{executable: true}", user="alice")
    for who in ("alice", "carol"):
        refused = api.call("PUT", url.format(ref=file_id) + "/owner", "{owner: bob}", user=who)
        assert refused.status_code == 403, refused.text
    assert api.ok("PUT", url.format(ref=file_id) + "/owner", "{owner: bob}")["owner"] == "bob"


def test_folder_permissions_govern_creating_and_seeing(api: Api) -> None:
    private = api.mkdir("/Data", "Private")
    base = f"{FS}/folders/{private['id']}"
    api.ok("PUT", f"{base}/permission/others", "{readable: false}")
    api.ok("POST", f"{base}/permission/groups", "{name: team, flags: {readable: true}}")
    assert "Private" not in _names(api.ok("GET", f"{FS}/folders/Data", user="bob"))
    assert "Private" in _names(api.ok("GET", f"{FS}/folders/Data", user="alice"))
    create = "{name: Mine}"
    refused = api.call("POST", f"{FS}/folders/Data/Private", create, user="alice")
    assert refused.status_code == 403
    hidden = api.call("POST", f"{FS}/folders/Data/Private", create, user="bob")
    assert hidden.text == _missing(api, "POST", FS + "/folders/{ref}", "bob", create)
    api.ok("PUT", f"{base}/permission/groups/team", "{writable: true}")
    made = api.ok("POST", f"{FS}/folders/Data/Private", create, user="alice")
    assert made["owner"] == "alice"


def test_unreadable_folders_answer_like_missing_ones_on_every_route(api: Api) -> None:
    private = api.mkdir("/Data", "Private")
    api.ok("PUT", f"{FS}/folders/{private['id']}/permission/others", "{readable: false}")
    routes = [
        ("GET", "", None),
        ("GET", "/children", None),
        ("POST", "", "{name: x}"),
        ("PUT", "", "{name: y}"),
        ("DELETE", "", None),
        ("GET", "/permission", None),
        ("GET", "/permission/owner", None),
        ("PUT", "/permission/owner", "{owner: carol}"),
        ("GET", "/permission/groups", None),
        ("POST", "/permission/groups", "{name: other, flags: {readable: true}}"),
        ("GET", "/permission/groups/team", None),
        ("GET", "/permission/others", None),
        ("PUT", "/permission/others", "{readable: true}"),
    ]
    for method, suffix, body in routes:
        template = FS + "/folders/{ref}" + suffix
        for ref in (private["id"], private["uuid"]):
            response = api.call(method, template.format(ref=ref), body, user="carol")
            assert response.text == _missing(api, method, template, "carol", body), (method, suffix)
    assert api.ok("GET", f"{FS}/folders/{private['id']}")["path"] == "/Data/Private"


# ---------------------------------------------------------------- bad input


def test_bad_input_gets_a_clear_4xx_and_changes_nothing(api: Api) -> None:
    team = api.mkdir("/Data", "Team")
    file_id = api.job("/Data/ImportJobs/orders.imp")
    perm = f"{FS}/files/{file_id}/permission"
    cases: list[tuple[str, str, str | None, int]] = [
        ("POST", f"{FS}/folders/Data", None, 400),
        ("POST", f"{FS}/folders/Data", "", 400),
        ("POST", f"{FS}/folders/Data", "{name: ", 400),
        ("POST", f"{FS}/folders/Data", "[1]", 400),
        ("POST", f"{FS}/folders/Data", "{}", 400),
        ("POST", f"{FS}/folders/Data", "{name: 5}", 400),
        ("POST", f"{FS}/folders/Data", '{name: ""}', 400),
        ("POST", f"{FS}/folders/Data", '{name: "a/b"}', 400),
        ("POST", f"{FS}/folders/Data", '{name: ".."}', 400),
        ("POST", f"{FS}/folders/Data", '{name: " x"}', 400),
        ("POST", f"{FS}/folders/Data", '{name: "a\\u0000b"}', 400),
        ("POST", f"{FS}/folders/Data", '{name: "' + "n" * 256 + '"}', 400),
        ("POST", f"{FS}/folders/Data", "{name: x, nmae: y}", 400),
        ("POST", f"{FS}/folders/Nowhere", "{name: x}", 404),
        ("POST", f"{FS}/folders/{file_id}", "{name: x}", 404),
        ("PUT", f"{FS}/folders/{team['id']}", "{}", 400),
        ("PUT", f"{FS}/folders/{team['id']}", "{parent: true}", 400),
        ("PUT", f"{FS}/folders/{team['id']}", '{parent: ""}', 400),
        ("PUT", f"{FS}/folders/{team['id']}", "{name: [1]}", 400),
        ("PUT", f"{perm}/owner", "{owner: nobody}", 400),
        ("PUT", f"{perm}/owner", "{owner: 5}", 400),
        ("PUT", f"{perm}/owner", "{}", 400),
        ("POST", f"{perm}/groups", "{name: nogroup, flags: {readable: true}}", 400),
        ("POST", f"{perm}/groups", "{flags: {readable: true}}", 400),
        ("POST", f"{perm}/groups", "{name: team, flags: {readable: maybe}}", 400),
        ("POST", f"{perm}/groups", "{name: team, flags: {readible: true}}", 400),
        ("POST", f"{perm}/groups", "{name: team, flags: [true]}", 400),
        ("POST", f"{perm}/groups", "{name: team, flags: {}, readable: true}", 400),
        ("PUT", f"{perm}/others", "{readable: 1}", 400),
        ("PUT", f"{perm}/others", "{everyone: true}", 400),
        ("GET", f"{FS}/folders/..%2F..%2Fetc", None, 404),
        ("GET", f"{FS}/folders/99999999999999999999", None, 404),
        ("GET", f"{FS}/folders/%C2%B2", None, 404),
        ("GET", f"{FS}/files/{file_id}/permission/nothing", None, 404),
        ("DELETE", f"{perm}", None, 405),
        ("PATCH", f"{FS}/folders/Data", None, 405),
    ]
    before = api.ok("GET", f"{FS}/folders/Data")
    permissions = api.ok("GET", perm)
    for method, url, body, expected in cases:
        response = api.call(method, url, body)
        assert response.status_code == expected, (method, url, body, response.text)
        payload = response.json()
        assert payload["status"] == "failure" and payload["reason"], (method, url, body)
    assert api.ok("GET", f"{FS}/folders/Data") == before
    assert api.ok("GET", perm) == permissions


def test_every_route_needs_credentials(api: Api) -> None:
    for url in (f"{FS}/root-folder", f"{FS}/folders/Data", f"{FS}/folders/1/permission"):
        response = api.client.get(url)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == 'Basic realm="datamill"'
