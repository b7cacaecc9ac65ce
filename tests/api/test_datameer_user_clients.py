"""User management as Datameer's Ruby clients send it (issue 11, items 2 to 5).

Each request is replayed as the public Ruby client library (HTTParty) sends
it: Basic credentials, JSON bodies with Content-Type application/json, names
escaped with URI.escape (a space is %20), and the password as a raw body
that Net::HTTP labels form-encoded. The asserts read what such a client reads.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import httpx
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from datamill.api.app import create_app
from datamill.bootstrap import Node
from datamill.domain.definitions import JobKind
from datamill.errors import Forbidden
from datamill.services import users as user_service
from datamill.store import tables as t
from tests.helpers import password_hash

BASE = "/rest/user-management"
JSON = {"Content-Type": "application/json"}
NET_HTTP_DEFAULT = {"Content-Type": "application/x-www-form-urlencoded"}


def basic(name: str, password: str) -> dict[str, str]:
    """HTTParty's basic_auth: {username:, password:}."""
    token = base64.b64encode(f"{name}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


ADMIN = basic("admin", "secret")
BOB = basic("bob", "pw")
EVE = basic("eve", "pw")


@pytest.fixture
def client(node: Node) -> Iterator[TestClient]:
    """The real app; ANALYSTs bob and eve (password 'pw') besides admin ('secret')."""
    node.store.users.create("bob", password_hash("pw"))
    node.store.users.create("eve", password_hash("pw"))
    with TestClient(create_app(node.settings, node.jobs)) as client:
        yield client


def failure(response: httpx.Response, status: int, *fragments: str) -> None:
    """A failure body with this status whose reason says each fragment."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body["status"] == "failure", body
    for fragment in fragments:
        assert fragment in body["reason"], body["reason"]


# --- item 2: a user created without a password -----------------------------------------------


def test_a_user_created_without_a_password_exists_but_cannot_log_in_until_one_is_set(
    client: TestClient, node: Node
) -> None:
    assert client.post(f"{BASE}/groups", headers={**ADMIN, **JSON}, json={"name": "sales"})
    # DatameerClient#create_user: the body has no password ...
    created = client.post(
        f"{BASE}/users",
        headers={**ADMIN, **JSON},
        content=json.dumps(
            {
                "username": "ann lee",
                "email": "ann@example.com",
                "groups": ["sales"],
                "roles": ["ANALYST"],
            }
        ),
    )
    assert created.status_code == 200, created.text
    assert created.json() == {"status": "success", "username": "ann lee"}

    # ... and an ADMIN reads and lists the user as any other.
    element = {
        "username": "ann lee",
        "email": "ann@example.com",
        "groups": ["sales"],
        "roles": ["ANALYST"],
    }
    assert client.get(f"{BASE}/users/ann%20lee", headers=ADMIN).json() == element
    listed = client.get(f"{BASE}/users?maxResults=1000", headers=ADMIN).json()["elements"]
    assert element in listed
    assert "argon2" not in client.get(f"{BASE}/users?maxResults=1000", headers=ADMIN).text

    # Nobody logs in as the user by any route, whatever password they try
    # (8 attempts: within the 10 failed sign-ins a name may have in a burst).
    for password in ("", "ANN LEE"):
        for method, url in (
            ("GET", f"{BASE}/logged-in-user?pretty"),
            ("GET", f"{BASE}/users/ann%20lee"),
            ("GET", "/api/job-execution/1/status"),
            ("GET", "/browser"),
        ):
            refused = client.request(method, url, headers=basic("ann lee", password))
            failure(refused, 401, "wrong user name or password")
            assert "set-cookie" not in refused.headers
    assert client.cookies.get("JSESSIONID") is None

    # ... then sets the password with the raw body, as its next call does.
    changed = client.put(
        f"{BASE}/password/ann%20lee", headers={**ADMIN, **NET_HTTP_DEFAULT}, content="s3cret"
    )
    assert changed.json() == {"status": "success"}
    me = client.get(f"{BASE}/logged-in-user", headers=basic("ann lee", "s3cret"))
    assert me.json() == element
    with node.store.db.read() as conn:
        home = conn.execute(sa.select(t.files.c.owner).where(t.files.c.path == "/Users/ann lee"))
        assert home.scalar() == "ann lee"


def test_a_password_when_given_is_still_checked(client: TestClient) -> None:
    for body, fragment in (
        ({"username": "kim", "password": ""}, "must not be empty"),
        ({"username": "kim", "password": 1234}, "password must be a string"),
    ):
        failure(client.post(f"{BASE}/users", headers={**ADMIN, **JSON}, json=body), 400, fragment)
    failure(client.get(f"{BASE}/users/kim", headers=ADMIN), 404, "kim")


# --- item 3: renaming a group ----------------------------------------------------------------


def _shared_folder(client: TestClient, node: Node) -> int:
    """A folder of admin's that the group 'sales team' may read (bob is a member, eve not)."""
    client.post(f"{BASE}/groups", headers={**ADMIN, **JSON}, json={"name": "sales team"})
    client.put(f"{BASE}/users/bob", headers={**ADMIN, **JSON}, json={"groups": ["sales team"]})
    with node.store.db.write() as conn:
        folder_id = node.store.files.ensure_folder(conn, "/Shared", "admin")
        node.store.files.set_others_flags(
            conn, folder_id, readable=False, writable=False, executable=False
        )
    granted = client.post(
        f"/api/filesystem/folders/{folder_id}/permission/groups",
        headers={**ADMIN, **JSON},
        json={"name": "sales team", "flags": {"readable": True}},
    )
    assert granted.status_code == 200, granted.text
    return folder_id


def test_renaming_a_group_takes_its_members_and_file_rights_along(
    client: TestClient, node: Node
) -> None:
    folder_id = _shared_folder(client, node)
    assert client.get(f"/api/filesystem/folders/{folder_id}", headers=BOB).status_code == 200

    # DatameerClient#update_group(name, new_name)
    renamed = client.put(
        f"{BASE}/groups/sales%20team", headers={**ADMIN, **JSON}, json={"name": "marketing"}
    )
    assert renamed.status_code == 200, renamed.text
    assert renamed.json() == {"status": "success"}

    assert client.get(f"{BASE}/groups/marketing", headers=ADMIN).json() == {
        "name": "marketing",
        "members": ["bob"],
    }
    failure(client.get(f"{BASE}/groups/sales%20team", headers=ADMIN), 404, "sales team")
    assert client.get(f"{BASE}/users/bob", headers=BOB).json()["groups"] == ["marketing"]
    permission = f"/api/filesystem/folders/{folder_id}/permission/groups"
    marketing = client.get(f"{permission}/marketing", headers=ADMIN)
    assert marketing.status_code == 200, marketing.text
    assert marketing.json()["name"] == "marketing"
    assert marketing.json()["flags"]["readable"] is True
    failure(client.get(f"{permission}/sales%20team", headers=ADMIN), 404)
    # The right still works for the member, and still not for anyone else.
    assert client.get(f"/api/filesystem/folders/{folder_id}", headers=BOB).status_code == 200
    failure(client.get(f"/api/filesystem/folders/{folder_id}", headers=EVE), 404)
    # A new group of the old name inherits nothing.
    client.post(f"{BASE}/groups", headers={**ADMIN, **JSON}, json={"name": "sales team"})
    assert client.get(f"{BASE}/groups/sales%20team", headers=ADMIN).json()["members"] == []
    failure(client.get(f"{permission}/sales%20team", headers=ADMIN), 404)


def test_a_group_sent_back_under_its_own_name_changes_nothing(client: TestClient) -> None:
    client.post(f"{BASE}/groups", headers={**ADMIN, **JSON}, json={"name": "ops"})
    same = client.put(f"{BASE}/groups/ops", headers={**ADMIN, **JSON}, json={"name": "ops"})
    assert same.json() == {"status": "success"}
    failure(client.put(f"{BASE}/groups/ghost", headers={**ADMIN, **JSON}, json={"name": "ghost"}),
            404, "ghost")  # fmt: skip


def test_bad_group_renames_are_clear_client_errors(client: TestClient, node: Node) -> None:
    _shared_folder(client, node)
    client.post(f"{BASE}/groups", headers={**ADMIN, **JSON}, json={"name": "ops"})
    url = f"{BASE}/groups/sales%20team"
    cases: list[tuple[object, int, str]] = [
        ({"name": "ops"}, 409, "'ops' already exists"),
        ({"name": "a/b"}, 400, "'/'"),
        ({"name": ""}, 400, "must not be empty"),
        ({"name": " pad"}, 400, "space"),
        ({"name": "x" * 129}, 400, "longer than 128"),
        ({"name": 7}, 400, "name must be a string"),
        ({}, 400, "name is required"),
        ({"name": "new", "members": ["bob"]}, 400, "members are set on each user"),
        ({"name": "new", "nmae": "x"}, 400, "unknown field(s): nmae"),
        (["new"], 400, "must be a JSON object"),
    ]
    for body, status, fragment in cases:
        failure(client.put(url, headers={**ADMIN, **JSON}, json=body), status, fragment)
    failure(client.put(url, headers=ADMIN, content="{name: "), 400, "JSON")
    failure(
        client.put(f"{BASE}/groups/ghost", headers={**ADMIN, **JSON}, json={"name": "n"}),
        404,
        "ghost",
    )
    # Nothing changed.
    assert client.get(url, headers=ADMIN).json() == {"name": "sales team", "members": ["bob"]}


def test_only_an_admin_renames_a_group(client: TestClient, node: Node) -> None:
    _shared_folder(client, node)
    url = f"{BASE}/groups/sales%20team"
    # A member, a non-member, and a name that does not exist: the same 403, body unread.
    for who in (BOB, EVE):
        for target in (url, f"{BASE}/groups/ghost"):
            failure(
                client.put(target, headers={**who, **JSON}, json={"name": "mine"}),
                403,
                "only a user with the ADMIN role",
            )
        failure(client.put(url, headers={**who, **JSON}, content="{bad"), 403)
    failure(client.put(url, headers=JSON, json={"name": "mine"}), 401)
    assert client.get(url, headers=ADMIN).json() == {"name": "sales team", "members": ["bob"]}


# --- item 4: Datameer's capability names -----------------------------------------------------

# What a Datameer role export holds (the Ruby client's DatameerRoleCapabilities list).
DATAMEER_CAPABILITIES = [
    "DATALINK_EDIT", "SHARE_WITH_FOREIGN_GROUPS_ACCESS", "USER_CAN_EDIT_EVERYTHING",
    "ACCESS_TOKEN_CREATE", "WORKBOOK_EDIT", "WORKBOOK_ACCESS", "DATABASE_DRIVERS_ACCESS",
    "JOB_HISTORY_ACCESS", "UNRESTRICTED", "INFOGRAPHICS_SHARE_SOCIAL",
    "SHARE_WITH_OTHERS_ACCESS", "MAIL_SERVER_ACCESS", "USER_MANAGEMENT_ACCESS",
    "HADOOP_CLUSTER_ACCESS", "APP_MARKET_ACCESS", "CONNECTION_ACCESS", "FILEUPLOAD_ACCESS",
    "CLUSTER_HEALTH_ACCESS", "FILE_BROWSER_ACCESS", "LICENSE_INFORMATION_ACCESS",
    "ADMINISTRATION_ACCESS", "LICENSE_ACCESS", "INFOGRAPHICS_ACCESS", "JOB_DETAILS_ACCESS",
    "IMPORTJOB_ACCESS", "HADOOP_PROPERTIES_EDIT", "EMAIL_NOTIFICATION_SETUP",
    "INFOGRAPHICS_EDIT", "LICENSE_BUY_OR_ACTIVATE", "CONNECTION_EDIT", "IMPORTJOB_EXECUTE",
    "SYSTEM_DASHBOARD_ACCESS", "IMPORTJOB_DOWNLOAD", "FILEUPLOAD_EDIT", "WORKBOOK_DOWNLOAD",
    "EXPORTJOB_EDIT", "USERS_ACCESS", "LICENSE_UPLOAD", "WORKBOOK_EXECUTE", "GROUPS_ACCESS",
    "USER_CAN_ACCESS_EVERYTHING", "FOLDER_CREATE_IN_HOME", "FOLDER_CREATE", "IMPORTJOB_EDIT",
    "PLUGINS_ACCESS", "DATALINK_ACCESS", "EXPORTJOB_EXECUTE", "EXPORTJOB_ACCESS",
    "INFOGRAPHICS_SHARE_PUBLIC", "ROLES_ACCESS",
]  # fmt: skip


def test_a_datameer_role_export_is_accepted_and_round_trips_byte_for_byte(
    client: TestClient,
) -> None:
    # DatameerClient#create_role(name) sends every capability it knows.
    created = client.post(
        f"{BASE}/roles",
        headers={**ADMIN, **JSON},
        content=json.dumps({"name": "Datameer Analyst", "capabilities": DATAMEER_CAPABILITIES}),
    )
    assert created.json() == {"status": "success", "name": "Datameer Analyst"}
    first = client.get(f"{BASE}/roles/Datameer%20Analyst", headers=ADMIN)
    assert first.json()["capabilities"] == DATAMEER_CAPABILITIES  # kept, in order, none refused

    # A backup tool sends the role back exactly as it read it ...
    restored = client.put(
        f"{BASE}/roles/Datameer%20Analyst", headers={**ADMIN, **JSON}, content=first.content
    )
    assert restored.json() == {"status": "success"}
    # ... and reads the very same bytes again; mixed with Datamill's own names too.
    assert client.get(f"{BASE}/roles/Datameer%20Analyst", headers=ADMIN).content == first.content
    mixed = ["job.read", "WORKBOOK_EXECUTE", "SOME_FUTURE_CAPABILITY"]
    client.put(
        f"{BASE}/roles/Datameer%20Analyst", headers={**ADMIN, **JSON}, json={"capabilities": mixed}
    )
    again = client.get(f"{BASE}/roles/Datameer%20Analyst", headers=ADMIN)
    assert again.json()["capabilities"] == mixed
    assert client.put(
        f"{BASE}/roles/Datameer%20Analyst", headers={**ADMIN, **JSON}, content=again.content
    ).json() == {"status": "success"}
    assert client.get(f"{BASE}/roles/Datameer%20Analyst", headers=ADMIN).content == again.content


def test_names_that_are_neither_datamill_nor_datameer_words_are_still_refused(
    client: TestClient,
) -> None:
    for bad in ("Job Read", "workbook_Execute", "_LEADING", "A" * 65, "*"):
        failure(
            client.post(
                f"{BASE}/roles",
                headers={**ADMIN, **JSON},
                json={"name": "r", "capabilities": [bad]},
            ),
            400,
        )


def _job_everybody_may_use(node: Node) -> int:
    entry, _ = node.jobs.define_job(
        "/Data/ImportJobs/open.imp", JobKind.IMPORT, {"source": {"kind": "csv", "path": "/x.csv"}},
        "admin",
    )  # fmt: skip
    with node.store.db.write() as conn:
        open_folder = node.store.files.ensure_folder(conn, "/Open", "admin")
        for file_id in (entry.id, open_folder):
            node.store.files.set_others_flags(
                conn, file_id, readable=True, writable=True, executable=True
            )
    return entry.id


@pytest.mark.parametrize(
    ("capabilities", "may_read", "may_run", "may_define"),
    [
        (["WORKBOOK_ACCESS", "WORKBOOK_EXECUTE"], True, True, False),
        (["JOB_HISTORY_ACCESS"], True, False, False),
        (["IMPORTJOB_ACCESS", "IMPORTJOB_EDIT"], True, False, True),
        (["FILE_BROWSER_ACCESS", "DATALINK_EDIT"], True, True, True),
        # Names with no meaning here grant nothing, whatever they meant in Datameer.
        (["USER_CAN_ACCESS_EVERYTHING", "UNRESTRICTED", "MAIL_SERVER_ACCESS"], False, False, False),
    ],
)
def test_datameer_capabilities_grant_what_they_map_to(
    client: TestClient,
    node: Node,
    capabilities: list[str],
    may_read: bool,
    may_run: bool,
    may_define: bool,
) -> None:
    file_id = _job_everybody_may_use(node)
    client.post(
        f"{BASE}/roles",
        headers={**ADMIN, **JSON},
        json={"name": "dm", "capabilities": capabilities},
    )
    client.post(
        f"{BASE}/users", headers={**ADMIN, **JSON}, json={"username": "rita", "roles": ["dm"]}
    )
    client.put(f"{BASE}/password/rita", headers=ADMIN, content="pw")
    rita = basic("rita", "pw")
    checks = [
        ("job.read", may_read, client.get(f"/api/job-execution/{file_id}/status", headers=rita)),
        ("job.run", may_run, client.post(f"/api/job-execution/{file_id}/trigger", headers=rita)),
        (
            "job.define",
            may_define,
            client.post(
                "/api/filesystem/folders/Open",
                headers={**rita, **JSON},
                json={"name": f"by-rita-{len(capabilities)}"},
            ),
        ),
    ]
    for capability, allowed, response in checks:
        if allowed:
            assert response.status_code == 200, (capability, response.text)
        else:
            failure(response, 403, f"needs the capability {capability}")


# --- item 5: the logged-in user ----------------------------------------------------------------


@pytest.mark.parametrize("query", ["", "?pretty"])
def test_the_logged_in_user_is_the_callers_element(client: TestClient, query: str) -> None:
    client.post(f"{BASE}/groups", headers={**ADMIN, **JSON}, json={"name": "sales"})
    client.put(
        f"{BASE}/users/bob",
        headers={**ADMIN, **JSON},
        json={"groups": ["sales"], "email": "bob@example.com"},
    )
    # DatameerClient#get_user_info
    for who, name in ((BOB, "bob"), (EVE, "eve"), (ADMIN, "admin")):
        answer = client.get(f"{BASE}/logged-in-user{query}", headers=who)
        assert answer.status_code == 200, answer.text
        assert answer.json() == client.get(f"{BASE}/users/{name}", headers=ADMIN).json()
    assert client.get(f"{BASE}/logged-in-user{query}", headers=BOB).json() == {
        "username": "bob",
        "email": "bob@example.com",
        "groups": ["sales"],
        "roles": ["ANALYST"],
    }
    assert client.get(f"{BASE}/logged-in-user{query}", headers=BOB).text.startswith("{\n  ")
    failure(client.get(f"{BASE}/logged-in-user{query}"), 401)
    failure(client.get(f"{BASE}/logged-in-user{query}", headers=basic("bob", "nope")), 401)


def test_the_rename_service_itself_refuses_non_admins(client: TestClient, node: Node) -> None:
    # The route checks first; the service checks again for every other caller (CLI, UI).
    client.post(f"{BASE}/groups", headers={**ADMIN, **JSON}, json={"name": "ops"})
    with node.store.db.read() as conn:
        bob = node.store.users.get(conn, "bob")
    assert bob is not None
    with pytest.raises(Forbidden):
        user_service.rename_group(node.store, bob, "ops", "mine")
    assert client.get(f"{BASE}/groups/ops", headers=ADMIN).json()["name"] == "ops"
