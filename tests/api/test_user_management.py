"""User management over HTTP (spec §7): users, groups, roles, passwords, who may do what."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from datamill.api.app import create_app
from datamill.bootstrap import Node
from datamill.store import tables as t
from tests.helpers import password_hash

BASE = "/rest/user-management"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}  # what curl -d sends


def auth(name: str, password: str) -> dict[str, str]:
    """Basic credentials, as curl -u sends them."""
    return {"Authorization": "Basic " + base64.b64encode(f"{name}:{password}".encode()).decode()}


ADMIN = auth("admin", "secret")
BOB = auth("bob", "pw")


@pytest.fixture
def client(node: Node) -> Iterator[TestClient]:
    """The real app in-process, with an ANALYST 'bob' (password 'pw') besides 'admin'."""
    node.store.users.create("bob", password_hash("pw"), roles=("ANALYST",))
    with TestClient(create_app(node.settings, node.jobs)) as client:
        yield client


def add_user(node: Node, name: str, *, roles: tuple[str, ...] = ("ANALYST",)) -> None:
    """A user made directly in the store, with password 'pw' at a cheap hash cost."""
    node.store.users.create(name, password_hash("pw"), roles=roles)


def user_names(node: Node) -> list[str]:
    """Every stored user name."""
    with node.store.db.read() as conn:
        return sorted(conn.execute(sa.select(t.users.c.name)).scalars())


def folder(node: Node, path: str) -> Any:
    """The files row at `path`, or None."""
    with node.store.db.read() as conn:
        return conn.execute(sa.select(t.files).where(t.files.c.path == path)).first()


def assert_failure(response: Any, status: int, *fragments: str) -> None:
    """A failure body with this status whose reason says each fragment."""
    assert response.status_code == status, response.text
    body = response.json()
    assert list(body) == ["status", "reason"]
    assert body["status"] == "failure"
    for fragment in fragments:
        assert fragment in body["reason"], body["reason"]


# --- users -----------------------------------------------------------------------------------


def test_admin_creates_reads_updates_and_deletes_a_user(client: TestClient) -> None:
    assert client.post(f"{BASE}/groups", headers=ADMIN, content='{"name": "sales"}').json() == {
        "status": "success",
        "name": "sales",
    }
    created = client.post(
        f"{BASE}/users",
        headers={**ADMIN, **FORM},
        content='{"username": "carol", "email": "carol@example.com", "password": "c4rol",'
        ' "groups": ["sales"], "roles": ["ANALYST"]}',
    )
    assert created.status_code == 200, created.text
    assert created.text == '{\n  "status": "success",\n  "username": "carol"\n}'
    carol = auth("carol", "c4rol")
    expected = {
        "username": "carol",
        "email": "carol@example.com",
        "groups": ["sales"],
        "roles": ["ANALYST"],
    }
    assert client.get(f"{BASE}/users/carol", headers=ADMIN).json() == expected
    assert client.get(f"{BASE}/users/carol", headers=carol).json() == expected

    updated = client.put(
        f"{BASE}/users/carol",
        headers=ADMIN,
        content='{"email": "c@example.org", "groups": [], "roles": ["ADMIN", "ANALYST"]}',
    )
    assert updated.json() == {"status": "success"}
    assert client.get(f"{BASE}/users/carol", headers=ADMIN).json() == {
        "username": "carol",
        "email": "c@example.org",
        "groups": [],
        "roles": ["ADMIN", "ANALYST"],
    }
    # The new role counts at once: carol may now manage users.
    assert client.get(f"{BASE}/users", headers=carol).status_code == 200
    # A partial update leaves the rest alone; the GET answer can be sent back as is.
    client.put(f"{BASE}/users/carol", headers=ADMIN, content="{email: null}")
    again = client.get(f"{BASE}/users/carol", headers=ADMIN).json()
    assert again["email"] is None and again["roles"] == ["ADMIN", "ANALYST"]
    assert client.put(f"{BASE}/users/carol", headers=ADMIN, json=again).status_code == 200

    assert client.delete(f"{BASE}/users/carol", headers=ADMIN).json() == {"status": "success"}
    assert_failure(client.get(f"{BASE}/users/carol", headers=ADMIN), 404, "carol")
    assert client.get(f"{BASE}/users/carol", headers=carol).status_code == 401
    assert_failure(client.delete(f"{BASE}/users/carol", headers=ADMIN), 404, "carol")


def test_lenient_json_with_default_roles(client: TestClient) -> None:
    # Datameer users write bodies like this with curl -d.
    response = client.post(
        f"{BASE}/users", headers={**ADMIN, **FORM}, content="{name: dave, password = 'x y',}"
    )
    assert response.status_code == 200, response.text
    dave = client.get(f"{BASE}/users/dave", headers=auth("dave", "x y")).json()
    assert dave == {"username": "dave", "email": None, "groups": [], "roles": ["ANALYST"]}


def test_a_new_user_gets_a_private_home_folder(client: TestClient, node: Node) -> None:
    assert folder(node, "/Users/erin") is None
    response = client.post(f"{BASE}/users", headers=ADMIN, json={"name": "erin", "password": "x"})
    assert response.status_code == 200, response.text
    home = folder(node, "/Users/erin")
    assert home is not None and home.is_folder
    assert home.owner == "erin"
    assert (home.others_readable, home.others_writable, home.others_executable) == (
        False,
        False,
        False,
    )
    assert folder(node, "/Users").owner == "system"  # not the first user who happened along


def test_a_refused_create_leaves_nothing_behind(client: TestClient, node: Node) -> None:
    response = client.post(
        f"{BASE}/users", headers=ADMIN, json={"name": "gil", "password": "x", "groups": ["nope"]}
    )
    assert_failure(response, 400, "'nope'")
    assert "gil" not in user_names(node)
    assert folder(node, "/Users/gil") is None


def test_user_list_pages_in_name_order(client: TestClient, node: Node) -> None:
    for i in range(1, 12):
        add_user(node, f"u{i:02d}")
    names = ["admin", "bob", *[f"u{i:02d}" for i in range(1, 12)]]

    first = client.get(f"{BASE}/users", headers=ADMIN)
    assert first.status_code == 200
    assert first.text.startswith('{\n  "maxResults": 10,\n  "total": 13,\n  "elements": [')
    body = first.json()
    assert list(body) == ["maxResults", "total", "elements"]
    assert [e["username"] for e in body["elements"]] == names[:10]

    last = client.get(f"{BASE}/users?maxResults=5&startIndex=10", headers=ADMIN).json()
    assert last["maxResults"] == 5 and last["total"] == 13
    assert [e["username"] for e in last["elements"]] == names[10:]
    # firstResult is Datameer's own name for the offset.
    datameer = client.get(f"{BASE}/users?maxResults=2&firstResult=1", headers=ADMIN).json()
    assert [e["username"] for e in datameer["elements"]] == ["bob", "u01"]
    assert client.get(f"{BASE}/users?maxResults=0", headers=ADMIN).json() == {
        "maxResults": 0,
        "total": 13,
        "elements": [],
    }
    beyond = client.get(f"{BASE}/users?startIndex=50", headers=ADMIN).json()
    assert beyond["total"] == 13 and beyond["elements"] == []
    capped = client.get(f"{BASE}/users?maxResults=999999", headers=ADMIN).json()
    assert capped["maxResults"] == 1000 and len(capped["elements"]) == 13
    # Doubled and trailing slashes are tolerated, as on every route.
    assert client.get(f"http://testserver//{BASE}/users/", headers=ADMIN).json() == body
    for query in ("maxResults=-1", "maxResults=ten", "startIndex=-5", "firstResult=x"):
        assert_failure(client.get(f"{BASE}/users?{query}", headers=ADMIN), 400)


def test_bad_user_bodies_are_refused(client: TestClient, node: Node) -> None:
    before = user_names(node)
    cases: list[tuple[bytes | str, str]] = [
        ('{"name": "", "password": "x"}', "must not be empty"),
        ('{"name": "a/b", "password": "x"}', "'/'"),
        ('{"name": "' + "x" * 129 + '", "password": "x"}', "longer than 128"),
        # 128 characters, 256 bytes: too long for the name of the user's folder.
        ('{"name": "' + "é" * 128 + '", "password": "x"}', "longer than 255 bytes in UTF-8"),
        ('{"name": " pad", "password": "x"}', "space"),
        ('{"name": "a:b", "password": "x"}', "':'"),
        ('{"name": "..", "password": "x"}', "not a valid user name"),
        # Deleted users' private folders are set aside in `.deleted-...` folders.
        ('{"name": ".deleted-x1", "password": "x"}', "must not start with '.'"),
        ('{"name": "tab\\there", "password": "x"}', "control characters"),
        ('{"name": "system", "password": "x"}', "reserved"),
        ('{"name": 7, "password": "x"}', "name must be a string"),
        ('{"password": "x"}', "name (or username) is required"),
        ('{"name": "a", "username": "b", "password": "x"}', "differ"),
        ('{"name": "kim", "password": ""}', "password must not be empty"),
        ('{"name": "kim", "password": 1234}', "password must be a string"),
        ('{"name": "kim", "password": "' + "p" * 1025 + '"}', "longer than 1024"),
        ('{"name": "kim", "password": "x", "groups": ["ghost", "phantom"]}', "'ghost', 'phantom'"),
        ('{"name": "kim", "password": "x", "roles": ["ANALYST", "WIZARD"]}', "'WIZARD'"),
        ('{"name": "kim", "password": "x", "groups": "sales"}', "groups must be a list"),
        ('{"name": "kim", "password": "x", "roles": [1]}', "roles[0] must be a string"),
        ('{"name": "kim", "password": "x", "email": "not-an-address"}', "e-mail"),
        ('{"name": "kim", "password": "x", "admin": true}', "unknown field(s): admin"),
        ('{"name": "kim", "password": ', "malformed JSON"),
        ("", "empty"),
        ('["kim", "x"]', "must be a JSON object"),
        (b'{"name": "k\xe9m", "password": "x"}', "not UTF-8"),
    ]
    for body, fragment in cases:
        response = client.post(f"{BASE}/users", headers={**ADMIN, **FORM}, content=body)
        assert_failure(response, 400, fragment)
    assert user_names(node) == before


def test_a_user_name_of_255_bytes_gets_its_private_folder(client: TestClient) -> None:
    name = "é" * 127 + "x"  # 255 bytes in UTF-8
    created = client.post(f"{BASE}/users", headers=ADMIN, json={"name": name, "password": "x"})
    assert created.status_code == 200, created.text
    listed = client.get(f"/api/filesystem/folders/Users/{name}", headers=ADMIN)
    assert listed.status_code == 200, listed.text


def test_a_duplicate_user_is_a_conflict(client: TestClient) -> None:
    response = client.post(f"{BASE}/users", headers=ADMIN, json={"name": "bob", "password": "x"})
    assert_failure(response, 409, "already exists")


def test_bad_updates_are_refused(client: TestClient) -> None:
    put = client.put
    assert_failure(put(f"{BASE}/users/nobody", headers=ADMIN, json={"roles": []}), 404, "nobody")
    assert_failure(
        put(f"{BASE}/users/bob", headers=ADMIN, json={"password": "x"}), 400, "/password/bob"
    )
    assert_failure(put(f"{BASE}/users/bob", headers=ADMIN, json={"name": "robert"}), 400, "renam")
    assert_failure(
        put(f"{BASE}/users/bob", headers=ADMIN, json={"roles": ["ANALYST", "X"]}), 400, "'X'"
    )
    assert_failure(put(f"{BASE}/users/bob", headers=ADMIN, json={"email": "@"}), 400, "e-mail")
    assert_failure(put(f"{BASE}/users/bob", headers=ADMIN, content="{roles: [}"), 400, "JSON")
    # Nothing was half applied.
    assert client.get(f"{BASE}/users/bob", headers=ADMIN).json()["roles"] == ["ANALYST"]


def test_no_answer_contains_a_password_hash(client: TestClient, node: Node) -> None:
    node.store.users.create("hal", password_hash("pw"), groups=("ops",))
    texts = [
        client.post(f"{BASE}/users", headers=ADMIN, json={"name": "ivy", "password": "x"}).text,
        client.get(f"{BASE}/users", headers=ADMIN).text,
        client.get(f"{BASE}/users/hal", headers=ADMIN).text,
        client.get(f"{BASE}/users/bob", headers=BOB).text,
        client.get(f"{BASE}/groups", headers=ADMIN).text,
        client.put(f"{BASE}/password/bob", headers=BOB, content="pw").text,
    ]
    for text in texts:
        assert "argon2" not in text and "password" not in text.lower(), text


# --- passwords -------------------------------------------------------------------------------


def test_users_change_their_own_password_with_a_raw_body(client: TestClient) -> None:
    # Form-encoded by curl -d, but taken as is: no JSON, no URL decoding, only the newline goes.
    new = "n3w Pass&x=1+2%41\n"
    response = client.put(f"{BASE}/password/bob", headers={**BOB, **FORM}, content=new)
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "success"}
    assert client.get(f"{BASE}/users/bob", headers=BOB).status_code == 401
    assert client.get(f"{BASE}/users/bob", headers=auth("bob", new[:-1])).status_code == 200


def test_an_admin_changes_anyones_password_and_others_may_not(
    client: TestClient, node: Node
) -> None:
    add_user(node, "jo")
    # bob may not change jo's password, nor learn whether a user exists.
    assert_failure(client.put(f"{BASE}/password/jo", headers=BOB, content="x"), 403, "own")
    assert_failure(client.put(f"{BASE}/password/ghost", headers=BOB, content="x"), 403)
    assert client.get(f"{BASE}/users/jo", headers=auth("jo", "pw")).status_code == 200

    response = client.put(f"{BASE}/password/jo", headers=ADMIN, content=b"s3cret\r\n")
    assert response.json() == {"status": "success"}
    assert client.get(f"{BASE}/users/jo", headers=auth("jo", "pw")).status_code == 401
    assert client.get(f"{BASE}/users/jo", headers=auth("jo", "s3cret")).status_code == 200

    assert_failure(client.put(f"{BASE}/password/ghost", headers=ADMIN, content="x"), 404, "ghost")
    assert_failure(client.put(f"{BASE}/password/jo", headers=ADMIN, content=""), 400, "empty")
    assert_failure(client.put(f"{BASE}/password/jo", headers=ADMIN, content="\n"), 400, "empty")
    assert_failure(
        client.put(f"{BASE}/password/jo", headers=ADMIN, content=b"caf\xe9"), 400, "UTF-8"
    )
    assert client.get(f"{BASE}/users/jo", headers=auth("jo", "s3cret")).status_code == 200


# --- who may manage --------------------------------------------------------------------------


def test_only_an_admin_manages_but_everyone_reads_themself(client: TestClient) -> None:
    assert client.get(f"{BASE}/users/bob", headers=BOB).json()["username"] == "bob"
    refused = [
        client.get(f"{BASE}/users", headers=BOB),
        client.get(f"{BASE}/users/admin", headers=BOB),
        client.get(f"{BASE}/users/ghost", headers=BOB),
        client.post(f"{BASE}/users", headers=BOB, json={"name": "x", "password": "x"}),
        client.post(f"{BASE}/users", headers=BOB, content="not json at all {"),
        client.put(f"{BASE}/users/bob", headers=BOB, json={"roles": ["ADMIN"]}),
        client.delete(f"{BASE}/users/admin", headers=BOB),
        client.get(f"{BASE}/groups", headers=BOB),
        client.post(f"{BASE}/groups", headers=BOB, json={"name": "g"}),
        client.get(f"{BASE}/roles", headers=BOB),
        client.get(f"{BASE}/roles/ANALYST", headers=BOB),
        client.post(f"{BASE}/roles", headers=BOB, json={"name": "r"}),
        client.put(f"{BASE}/roles/ANALYST", headers=BOB, json={"capabilities": []}),
        client.delete(f"{BASE}/roles/ANALYST", headers=BOB),
    ]
    for response in refused:
        assert_failure(response, 403, "ADMIN")
    assert client.get(f"{BASE}/users/bob", headers=ADMIN).json()["roles"] == ["ANALYST"]
    no_credentials = client.get(f"{BASE}/users")
    assert_failure(no_credentials, 401)
    assert no_credentials.headers["www-authenticate"] == 'Basic realm="datamill"'


def test_the_last_admin_can_neither_be_deleted_nor_demoted(client: TestClient, node: Node) -> None:
    demote = client.put(f"{BASE}/users/admin", headers=ADMIN, json={"roles": ["ANALYST"]})
    assert_failure(demote, 409, "last user with the ADMIN role")
    assert_failure(client.delete(f"{BASE}/users/admin", headers=ADMIN), 409, "last")
    assert client.get(f"{BASE}/users/admin", headers=ADMIN).json()["roles"] == ["ADMIN"]

    add_user(node, "root", roles=("ADMIN",))
    root = auth("root", "pw")
    assert_failure(client.delete(f"{BASE}/users/root", headers=root), 409, "yourself")
    assert client.put(f"{BASE}/users/admin", headers=root, json={"roles": []}).status_code == 200
    assert_failure(client.get(f"{BASE}/users", headers=ADMIN), 403)  # no longer an admin
    assert_failure(client.put(f"{BASE}/users/root", headers=root, json={"roles": []}), 409, "last")
    assert client.delete(f"{BASE}/users/admin", headers=root).status_code == 200


def test_a_deleted_users_files_go_to_the_admin_who_deleted_them(
    client: TestClient, node: Node
) -> None:
    client.post(f"{BASE}/users", headers=ADMIN, json={"name": "kai", "password": "x"})
    assert folder(node, "/Users/kai").owner == "kai"
    assert client.delete(f"{BASE}/users/kai", headers=ADMIN).status_code == 200
    assert folder(node, "/Users/kai").owner == "admin"
    # A new user of the same name gets the home folder back, not just the name.
    client.post(f"{BASE}/users", headers=ADMIN, json={"name": "kai", "password": "y"})
    assert folder(node, "/Users/kai").owner == "kai"


# --- groups ----------------------------------------------------------------------------------


def test_groups_are_created_listed_read_and_deleted(client: TestClient, node: Node) -> None:
    for name in ("sales", "ops", "eng"):
        response = client.post(f"{BASE}/groups", headers=ADMIN, json={"name": name})
        assert response.json() == {"status": "success", "name": name}
    client.put(f"{BASE}/users/bob", headers=ADMIN, json={"groups": ["sales", "ops"]})

    listing = client.get(f"{BASE}/groups?maxResults=2", headers=ADMIN).json()
    assert listing == {
        "maxResults": 2,
        "total": 3,
        "elements": [{"name": "eng", "members": []}, {"name": "ops", "members": ["bob"]}],
    }
    rest = client.get(f"{BASE}/groups?startIndex=2", headers=ADMIN).json()["elements"]
    assert rest == [{"name": "sales", "members": ["bob"]}]
    assert client.get(f"{BASE}/groups/sales", headers=ADMIN).json() == rest[0]

    # The group's rights on a file go with it, so a later group of that name starts empty.
    with node.store.db.write() as conn:
        data = node.store.files.find(conn, "/Data")
        assert data is not None
        node.store.files.set_group_flags(
            conn, data.id, "sales", readable=True, writable=True, executable=False
        )
    assert client.delete(f"{BASE}/groups/sales", headers=ADMIN).json() == {"status": "success"}
    assert_failure(client.get(f"{BASE}/groups/sales", headers=ADMIN), 404, "sales")
    assert client.get(f"{BASE}/users/bob", headers=ADMIN).json()["groups"] == ["ops"]
    with node.store.db.read() as conn:
        grants = conn.execute(
            sa.select(t.file_group_permissions).where(
                t.file_group_permissions.c.group_name == "sales"
            )
        ).all()
    assert grants == []
    assert_failure(client.delete(f"{BASE}/groups/sales", headers=ADMIN), 404)


def test_bad_group_requests_are_refused(client: TestClient) -> None:
    client.post(f"{BASE}/groups", headers=ADMIN, json={"name": "ops"})
    post = client.post
    assert_failure(
        post(f"{BASE}/groups", headers=ADMIN, json={"name": "ops"}), 409, "already exists"
    )
    assert_failure(post(f"{BASE}/groups", headers=ADMIN, json={"name": "a/b"}), 400, "'/'")
    assert_failure(post(f"{BASE}/groups", headers=ADMIN, json={"name": ""}), 400, "empty")
    assert_failure(post(f"{BASE}/groups", headers=ADMIN, json={"name": "g" * 129}), 400, "128")
    assert_failure(post(f"{BASE}/groups", headers=ADMIN, json={}), 400, "name is required")
    assert_failure(
        post(f"{BASE}/groups", headers=ADMIN, json={"name": "x", "members": ["bob"]}), 400, "groups"
    )
    assert_failure(post(f"{BASE}/groups", headers=ADMIN, content="{name: "), 400, "JSON")
    # Group names may hold a colon; only user names may not (Basic auth splits at it).
    assert post(f"{BASE}/groups", headers=ADMIN, json={"name": "team:a"}).status_code == 200


# --- roles -----------------------------------------------------------------------------------


def test_custom_roles_are_created_changed_and_deleted(client: TestClient) -> None:
    created = client.post(
        f"{BASE}/roles",
        headers={**ADMIN, **FORM},
        content="{name: viewer, capabilities: [job.read, data.read, job.read]}",
    )
    assert created.json() == {"status": "success", "name": "viewer"}
    viewer = {"name": "viewer", "capabilities": ["job.read", "data.read"], "builtin": False}
    assert client.get(f"{BASE}/roles/viewer", headers=ADMIN).json() == viewer

    listing = client.get(f"{BASE}/roles", headers=ADMIN).json()
    assert listing["total"] == 3
    assert listing["elements"] == [
        {"name": "ADMIN", "capabilities": ["*"], "builtin": True},
        {
            "name": "ANALYST",
            "capabilities": ["job.read", "job.run", "job.define", "data.read"],
            "builtin": True,
        },
        viewer,
    ]

    changed = client.put(f"{BASE}/roles/viewer", headers=ADMIN, json={**viewer, "capabilities": []})
    assert changed.json() == {"status": "success"}
    assert client.get(f"{BASE}/roles/viewer", headers=ADMIN).json()["capabilities"] == []

    client.put(f"{BASE}/users/bob", headers=ADMIN, json={"roles": ["ANALYST", "viewer"]})
    assert client.delete(f"{BASE}/roles/viewer", headers=ADMIN).json() == {"status": "success"}
    assert_failure(client.get(f"{BASE}/roles/viewer", headers=ADMIN), 404, "viewer")
    assert client.get(f"{BASE}/users/bob", headers=ADMIN).json()["roles"] == ["ANALYST"]


def test_built_in_roles_stay_as_they_are(client: TestClient) -> None:
    for role in ("ADMIN", "ANALYST"):
        put = client.put(f"{BASE}/roles/{role}", headers=ADMIN, json={"capabilities": ["job.read"]})
        assert_failure(put, 409, "built-in", "cannot be changed")
        assert_failure(
            client.delete(f"{BASE}/roles/{role}", headers=ADMIN), 409, "cannot be deleted"
        )
    admin_role = client.get(f"{BASE}/roles/ADMIN", headers=ADMIN).json()
    assert admin_role == {"name": "ADMIN", "capabilities": ["*"], "builtin": True}


def test_bad_role_requests_are_refused(client: TestClient) -> None:
    client.post(f"{BASE}/roles", headers=ADMIN, json={"name": "viewer"})
    post, put = client.post, client.put
    cases = [
        (post(f"{BASE}/roles", headers=ADMIN, json={"name": "viewer"}), 409, "already exists"),
        (post(f"{BASE}/roles", headers=ADMIN, json={"name": "ADMIN"}), 409, "already exists"),
        (post(f"{BASE}/roles", headers=ADMIN, json={"name": "r/1"}), 400, "'/'"),
        (post(f"{BASE}/roles", headers=ADMIN, json={"capabilities": []}), 400, "name is required"),
        (
            post(f"{BASE}/roles", headers=ADMIN, json={"name": "su", "capabilities": ["*"]}),
            400,
            "reserved for the built-in ADMIN",
        ),
        (
            post(f"{BASE}/roles", headers=ADMIN, json={"name": "r", "capabilities": ["Job Read"]}),
            400,
            "'Job Read' is not a capability",
        ),
        (
            post(f"{BASE}/roles", headers=ADMIN, json={"name": "r", "capabilities": "job.read"}),
            400,
            "capabilities must be a list",
        ),
        (put(f"{BASE}/roles/viewer", headers=ADMIN, json={}), 400, "capabilities is required"),
        (
            put(f"{BASE}/roles/viewer", headers=ADMIN, json={"name": "v", "capabilities": []}),
            400,
            "renaming",
        ),
        (put(f"{BASE}/roles/ghost", headers=ADMIN, json={"capabilities": []}), 404, "ghost"),
        (client.delete(f"{BASE}/roles/ghost", headers=ADMIN), 404, "ghost"),
    ]
    for response, status, fragment in cases:
        assert_failure(response, status, fragment)
    assert client.get(f"{BASE}/roles", headers=ADMIN).json()["total"] == 3
