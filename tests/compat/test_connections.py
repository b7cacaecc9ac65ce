"""Item 12 of issue 11: /rest/connections[/<id>] in Datameer's shape, as the Ruby client sends it.

`create_connection(data)` POSTs a JSON document with Content-Type
application/json, `get_connection(id)` / `get_connections` GET, and a backup
tool PUTs back exactly what it read. Four actors: `dora` makes the connection
(a role with connection.define), `rita` may read it (group readers) and
`sam` may not; both hold connection.define too, so only the file flags decide.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from datamill.store import locations as loc_store
from tests.compat.conftest import ROLE, World
from tests.helpers import password_hash
from tests.security.conftest import PASSWORD

SECRET = "s3cr3t-Pw"
JSON = {"Content-Type": "application/json"}


def _datameer_body(path: str, password: str = SECRET) -> bytes:
    return json.dumps(
        {
            "version": "2.1",
            "className": "datameer.dap.common.entity.DataBaseConnection",
            "file": {"path": path, "description": "warehouse", "name": "wh"},
            "typeId": "das.JdbcDataStoreType",
            "properties": {
                "user_name": ["reader"],
                "password": [password],
                "key.connectionUrl": ["jdbc:postgresql://192.0.2.1:5432/warehouse"],
                "dataStoreTemplate": ["false"],
                "dataStoreUsage": ["IMPORT_EXPORT"],
            },
            "dbType": {"name": "PostgreSQL"},
        }
    ).encode()


@pytest.fixture
def made(world: World) -> int:
    """dora's connection /Users/dora/wh.dst, readable by the group readers; its id."""
    node = world.actors.node
    node.store.users.create("dora", password_hash(PASSWORD), roles=("ANALYST", ROLE))
    created = world.send(
        "dora", "POST", "/rest/connections", _datameer_body("/Users/dora/wh.dst"), **JSON
    )
    assert created.status_code == 200, created.text
    body = created.json()
    assert list(body) == ["configuration-id", "status"] and body["status"] == "success"
    entry_id = int(body["configuration-id"])
    group = f"/api/filesystem/files/{entry_id}/permission/groups"
    flags = b'{name="readers",flags:{readable:true,writable:false,executable:false}}'
    assert world.send("dora", "POST", group, flags).status_code == 200
    return entry_id


def _stored_password(world: World, entry_id: int) -> str | None:
    with world.actors.node.store.db.read() as conn:
        stored = loc_store.get_connection(conn, entry_id)
    assert stored is not None
    return stored.password


def test_read_answers_datameer_shape_with_the_password_masked(world: World, made: int) -> None:
    expected: dict[str, Any] | None = None
    for user in ("dora", "rita", "admin"):
        read = world.send(user, "GET", f"/rest/connections/{made}")
        assert read.status_code == 200 and SECRET not in read.text
        document = read.json()
        expected = expected or document
        assert document == expected  # the same for everyone who may read it
    assert expected is not None
    assert expected["file"]["path"] == "/Users/dora/wh.dst" and expected["file"]["name"] == "wh"
    assert expected["typeId"] == "das.JdbcDataStoreType"
    assert expected["properties"]["key.connectionUrl"] == ["postgresql://192.0.2.1:5432/warehouse"]
    assert expected["properties"]["user_name"] == ["reader"]
    assert expected["properties"]["password"] == ["********"]
    assert expected["dbType"] == {"name": "PostgreSQL"} and expected["owner"] == "dora"
    # Unreadable and missing answer alike (modulo the id).
    hidden = world.send("sam", "GET", f"/rest/connections/{made}")
    missing = world.send("sam", "GET", "/rest/connections/999999")
    assert hidden.status_code == missing.status_code == 404
    assert hidden.json()["reason"] == missing.json()["reason"].replace("999999", str(made))
    # A job's id is not a connection.
    job = world.send("admin", "GET", f"/rest/connections/{world.files['/Users/bob/orders.imp']}")
    assert job.status_code == 404


def test_list_shows_only_readable_connections(world: World, made: int) -> None:
    for user, visible in (("dora", True), ("rita", True), ("sam", False), ("admin", True)):
        listed = world.send(user, "GET", "/rest/connections")
        assert listed.status_code == 200 and SECRET not in listed.text
        mine = [c for c in listed.json() if c["id"] == made]
        if visible:
            assert mine == [
                {
                    "description": "",
                    "id": made,
                    "name": "wh",
                    "path": "/Users/dora/wh.dst",
                    "uuid": mine[0]["uuid"],
                    "owner": "dora",
                }
            ]
        else:
            assert mine == []


def test_sending_back_what_was_read_keeps_the_password(world: World, made: int) -> None:
    read = world.send("dora", "GET", f"/rest/connections/{made}")
    back = world.send("dora", "PUT", f"/rest/connections/{made}", read.content, **JSON)
    assert (back.status_code, back.json()) == (200, {"status": "success"})
    assert _stored_password(world, made) == SECRET
    assert world.send("dora", "GET", f"/rest/connections/{made}").json() == read.json()
    # A new password replaces it; it is never shown either.
    changed = _datameer_body("/Users/dora/wh.dst", password="n3w-Pw")
    assert (
        world.send("admin", "PUT", f"/rest/connections/{made}", changed, **JSON).status_code == 200
    )
    assert _stored_password(world, made) == "n3w-Pw"
    assert "n3w-Pw" not in world.send("admin", "GET", f"/rest/connections/{made}").text


def test_changing_and_deleting_need_write(world: World, made: int) -> None:
    body = world.send("dora", "GET", f"/rest/connections/{made}").content
    reader = world.send("rita", "PUT", f"/rest/connections/{made}", body, **JSON)
    assert reader.status_code == 403 and "not allowed to change" in reader.json()["reason"]
    stranger = world.send("sam", "PUT", f"/rest/connections/{made}", body, **JSON)
    assert stranger.status_code == 404
    assert world.send("rita", "DELETE", f"/rest/connections/{made}").status_code == 403
    assert world.send("sam", "DELETE", f"/rest/connections/{made}").status_code == 404
    assert _stored_password(world, made) == SECRET
    deleted = world.send("dora", "DELETE", f"/rest/connections/{made}")
    assert (deleted.status_code, deleted.json()) == (200, {"status": "success"})
    assert world.send("admin", "GET", f"/rest/connections/{made}").status_code == 404


def test_bad_documents_are_clear_400s(world: World, made: int) -> None:
    for body, reason in (
        (b'{"file": {"path": "/Users/dora/x.dst"}, "properties": []}', "properties"),
        (b'{"file": {"path": "/Users/dora/x.dst"}, "properties": {}}', "key.connectionUrl"),
        (
            b'{"file": {"path": "/Users/dora/x.dst"}, "properties": {"key.connectionUrl": [7]}}',
            "key.connectionUrl",
        ),
        (b"[1, 2]", "JSON object"),
    ):
        refused = world.send("dora", "POST", "/rest/connections", body, **JSON)
        assert refused.status_code == 400, refused.text
        assert reason in refused.json()["reason"]
