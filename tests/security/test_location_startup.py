"""The locations Datamill makes itself (services/locations.py, start-up and new users).

Every operator root gets a location for ADMINs, also a root added at a later
start; every user gets a private home and a private location nobody else may use.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from datamill.api.app import create_app
from datamill.bootstrap import Node, open_node
from datamill.services.locations import ensure_default_locations, policy_from_settings
from datamill.settings import Settings
from datamill.store import locations as loc_store
from tests.helpers import password_hash
from tests.security.conftest import Actors


def _locations(actors: Actors) -> dict[str, tuple[str, str]]:
    listed = actors.call("admin", "GET", "/rest/location").json()
    return {item["path"]: (item["folder"], item["owner"]) for item in listed}


def test_a_root_added_at_a_later_start_gets_the_next_location(actors: Actors) -> None:
    settings = actors.node.settings
    first = settings.resolved_source_roots[0]
    before = _locations(actors)
    assert before["/Connections/files.loc"][0] == first
    # The operator adds a source root, a sink root and an object-store sink root, and
    # restarts. Meanwhile an admin named a location of her own like the next default one.
    source, sink = Path(f"{first}-b"), Path(f"{first}-c")
    source.mkdir()
    sink.mkdir()
    (Path(first) / "sub").mkdir()
    made = actors.call(
        "admin",
        "POST",
        "/rest/location",
        {"path": "/Connections/files-2.loc", "folder": f"{first}/sub"},
    )
    assert made.status_code == 200, made.text
    restarted = Settings(
        **{
            **settings.model_dump(exclude_unset=True),
            "source_roots": [first, str(source)],
            "sink_roots": [first, str(sink), "s3a://bucket/out"],
        }
    )
    actors.node.store.file_policy = policy_from_settings(restarted)
    ensure_default_locations(actors.node.store, ["admin", "eve", "bob"])
    after = _locations(actors)
    # Roots in sorted order: files, files-2 (taken: that root is left without one), files-3, ...
    assert after["/Connections/files.loc"] == before["/Connections/files.loc"]
    assert after["/Connections/files-2.loc"] == (f"{first}/sub", "admin")
    owner = before["/Connections/files.loc"][1]
    assert after["/Connections/files-3.loc"] == (str(sink), owner)
    assert after["/Connections/files-4.loc"] == ("s3a://bucket/out", owner)
    assert set(after) - set(before) == {
        "/Connections/files-2.loc",
        "/Connections/files-3.loc",
        "/Connections/files-4.loc",
    }
    # Once more: nothing new, nothing changed.
    ensure_default_locations(actors.node.store, ["admin", "eve", "bob"])
    assert _locations(actors) == after


def test_a_users_home_and_private_location_are_closed_to_others(actors: Actors) -> None:
    # eve was made by the store (as `datamill user add` does), not over HTTP: the
    # private location's hook made her home too.
    listed = actors.call("admin", "GET", "/rest/location").json()
    entry = next(item for item in listed if item["path"] == "/Users/eve/files.loc")
    with actors.node.store.db.read() as conn:
        home = actors.node.store.files.find(conn, "/Users/eve")
    assert home is not None and home.owner == "eve"
    closed = {"readable": False, "writable": False, "executable": False}
    for entry_id in (home.id, entry["id"]):
        flags = actors.call("admin", "GET", f"/api/filesystem/files/{entry_id}/permission")
        assert flags.json()["others"] == closed, entry_id


def test_a_user_name_that_cannot_be_a_folder_gets_no_private_location(actors: Actors) -> None:
    # A user made below the API's and `datamill user add`'s name checks (the
    # store itself): a name that is no single folder name gets no private
    # folder (and nothing outside users/).
    store = actors.node.store
    policy = store.file_policy
    assert policy is not None
    users = Path(policy.users_root)
    before = sorted(p.name for p in users.iterdir())
    locations = _locations(actors)
    # PostgreSQL stores no NUL in text at all: that name cannot be made there.
    nul = ("x\x00y",) if store.db.is_sqlite else ()
    for name in ("", ".", "..", "x/y", *nul):
        store.users.create(name, "no-password")
    assert sorted(p.name for p in users.iterdir()) == before
    assert _locations(actors) == locations


def _make_carol(actors: Actors) -> Any:
    body = {"username": "carol", "password": "c4rol-pw", "roles": ["ANALYST"]}
    return actors.call("admin", "POST", "/rest/user-management/users", body)


def test_a_user_made_again_after_deletion_gets_her_private_location_back(
    actors: Actors,
) -> None:
    folder = Path(actors.node.settings.resolved_source_roots[0]) / "users" / "carol"
    assert _make_carol(actors).status_code == 200
    (folder / "in.csv").write_text("id\n1\n")
    assert actors.call("admin", "DELETE", "/rest/user-management/users/carol").status_code == 200
    # Her folder stays; her private location went to the admin who deleted her.
    again = _make_carol(actors)
    assert again.status_code == 200, again.text
    location = actors.call("admin", "GET", "/rest/location").json()
    mine = next(item for item in location if item["path"] == "/Users/carol/files.loc")
    assert (mine["owner"], mine["folder"]) == ("carol", str(folder))
    flags = actors.call("admin", "GET", f"/api/filesystem/files/{mine['id']}/permission")
    assert flags.json()["others"] == {"readable": False, "writable": False, "executable": False}
    source = {"kind": "csv", "location": "/Users/carol/files.loc", "path": "in.csv"}
    body = {"path": "/Users/carol/in.imp", "source": source}
    saved = actors.client.request("POST", "/rest/import-job", json=body, auth=("carol", "c4rol-pw"))
    assert saved.status_code == 200, saved.text


def test_a_private_folder_that_cannot_be_made_is_refused_by_name(actors: Actors) -> None:
    (Path(actors.node.settings.resolved_source_roots[0]) / "users" / "carol").write_text("x")
    refused = _make_carol(actors)
    assert refused.status_code == 409, refused.text
    assert refused.json()["reason"] == (
        "the private folder of user 'carol' cannot be made: something is in the way"
    )


def test_a_user_left_without_a_private_location_at_start_up_is_logged_by_name(
    actors: Actors, caplog: pytest.LogCaptureFixture
) -> None:
    # The operator's only sign of why a user has no private location after a restart.
    (Path(actors.node.settings.resolved_source_roots[0]) / "users" / "carol").write_text("x")
    with caplog.at_level(logging.WARNING, logger="datamill.services.locations"):
        ensure_default_locations(actors.node.store, ["carol"])
    assert [r.getMessage() for r in caplog.records if r.name == "datamill.services.locations"] == [
        "user 'carol' has no private location: the private folder of user 'carol'"
        " cannot be made: something is in the way"
    ]


@pytest.fixture
def open_with_roots(settings: Settings) -> Iterator[Callable[..., Node]]:
    """Open the node as the operator configured it: the test's settings with other roots."""
    nodes: list[Node] = []

    def open_with(**roots: Any) -> Node:
        node = open_node(Settings(**{**settings.model_dump(exclude_unset=True), **roots}))
        nodes.append(node)
        return node

    yield open_with
    for node in nodes:
        node.store.close()


def _private_folder_of(node: Node, name: str) -> str:
    with node.store.db.read() as conn:
        entry = node.store.files.find(conn, f"/Users/{name}/files.loc")
        assert entry is not None and entry.owner == name
        location = loc_store.get_location(conn, entry.id)
    assert location is not None
    return location.folder


def test_private_folders_are_made_in_the_first_root_the_operator_names(
    open_with_roots: Callable[..., Node], tmp_path: Path
) -> None:
    # DATAMILL_SOURCE_ROOTS=<in>, DATAMILL_SINK_ROOTS=<out>: a user's private folder
    # is <in>/users/<name>, which she may read from (not <out>, a sink root only, nor
    # <home>/files, which is no root of this server).
    source, sink = tmp_path / "in", tmp_path / "out"
    node = open_with_roots(source_roots=[str(source)], sink_roots=[str(sink)])
    node.store.users.create("carol", password_hash("c4rol-pw"))
    folder = source.resolve() / "users" / "carol"
    assert _private_folder_of(node, "carol") == str(folder)
    assert folder.is_dir()
    assert not (sink / "users").exists()
    assert not (node.settings.resolved_home / "files").exists()
    (folder / "in.csv").write_text("id\n1\n")
    source_of = {"kind": "csv", "location": "/Users/carol/files.loc", "path": "in.csv"}
    body = {"path": "/Users/carol/in.imp", "source": source_of}
    with TestClient(create_app(node.settings, node.jobs)) as client:
        saved = client.post("/rest/import-job", json=body, auth=("carol", "c4rol-pw"))
    assert saved.status_code == 200, saved.text


def test_a_server_whose_roots_are_all_object_stores_keeps_private_folders_in_its_home(
    open_with_roots: Callable[..., Node],
) -> None:
    # No local root at all: private folders are local folders still, under <home>/files.
    node = open_with_roots(source_roots=["s3a://bkt/in"], sink_roots=["s3a://bkt/out"])
    node.store.users.create("carol", password_hash("c4rol-pw"))
    folder = node.settings.resolved_home / "files" / "users" / "carol"
    assert _private_folder_of(node, "carol") == str(folder)
    assert folder.is_dir()


def test_a_root_an_admin_gave_a_location_of_her_own_gets_no_default_one_back(
    actors: Actors,
) -> None:
    # The admin replaced the root's default location with one named as her team
    # knows it; the next start must not bring /Connections/files.loc back beside it.
    root = actors.node.settings.resolved_source_roots[0]
    listed = actors.call("admin", "GET", "/rest/location").json()
    default = next(item for item in listed if item["path"] == "/Connections/files.loc")
    removed = actors.call("admin", "DELETE", f"/rest/location/{default['id']}")
    assert removed.status_code == 200, removed.text
    body = {"path": "/Connections/shared.loc", "folder": root}
    assert actors.call("admin", "POST", "/rest/location", body).status_code == 200
    before = _locations(actors)
    ensure_default_locations(actors.node.store, ["admin", "eve", "bob"])
    assert _locations(actors) == before
    assert "/Connections/files.loc" not in before


def test_a_private_location_handed_back_is_private_again(actors: Actors) -> None:
    # While carol was deleted her location was the admin's, who opened it to
    # everyone; made again, carol gets it back closed to others, as it was.
    assert _make_carol(actors).status_code == 200
    assert actors.call("admin", "DELETE", "/rest/user-management/users/carol").status_code == 200
    listed = actors.call("admin", "GET", "/rest/location").json()
    location = next(item for item in listed if item["path"] == "/Users/carol/files.loc")
    others = f"/api/filesystem/files/{location['id']}/permission/others"
    opened = actors.call("admin", "PUT", others, {"readable": True, "writable": True})
    assert opened.status_code == 200, opened.text
    assert _make_carol(actors).status_code == 200
    flags = actors.call("admin", "GET", f"/api/filesystem/files/{location['id']}/permission")
    assert flags.json()["others"] == {"readable": False, "writable": False, "executable": False}


def test_a_restart_leaves_existing_users_their_private_files(actors: Actors) -> None:
    # Only a user just made has her folder set aside (a deleted user of the
    # same name left it); every start runs over the users there are, and
    # must leave what is in their folders where it is.
    users = Path(actors.node.settings.resolved_source_roots[0]) / "users"
    (users / "eve" / "in.csv").write_text("k\neve's\n")
    ensure_default_locations(actors.node.store, ["admin", "eve", "bob"])
    assert (users / "eve" / "in.csv").read_text() == "k\neve's\n"
    assert list(users.glob(".deleted-*")) == []
    source = {"kind": "csv", "location": "/Users/eve/files.loc", "path": "in.csv"}
    saved = actors.call(
        "eve", "POST", "/rest/import-job", {"path": "/Users/eve/in.imp", "source": source}
    )
    assert saved.status_code == 200, saved.text


def test_a_new_users_empty_folder_made_by_the_operator_is_kept(actors: Actors) -> None:
    # An operator may make a user's folder before the user (a mount point, a
    # folder on another disk): empty, nobody's files are in it, so it stays
    # the same folder and nothing is set aside.
    users = Path(actors.node.settings.resolved_source_roots[0]) / "users"
    (users / "carol").mkdir()
    made = (users / "carol").stat().st_ino
    assert _make_carol(actors).status_code == 200
    assert (users / "carol").stat().st_ino == made
    assert list(users.glob(".deleted-*")) == []
