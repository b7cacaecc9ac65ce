"""A new user of a deleted user's name; the users' folder gone (eleventh session).

services/locations.py `_pointing_into`, `_connections_in`, `_set_aside` and
`_homes_of_others`: the cases their mutants showed untested (docs/testing.md,
"Surviving mutants"). Whatever names the old folder, a location or a SQLite
connection, follows the old files aside; nothing else is moved.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any

from tests.security.conftest import Actors
from tests.security.test_attack8 import settings as settings  # the operator's root around home
from tests.security.test_attack8 import steve as steve  # location.define, connection.define

SCHEMA = [{"name": "k", "type": "VARCHAR"}]


def _delete_and_make_bob_again(actors: Actors, between: Any = None) -> None:
    assert actors.call("admin", "DELETE", "/rest/user-management/users/bob").status_code == 200
    if between is not None:
        between()
    bob = {"name": "bob", "password": "pw", "roles": ["ANALYST"]}
    made = actors.call("admin", "POST", "/rest/user-management/users", bob)
    assert made.status_code == 200, made.text


def _aside(users: Path) -> Path:
    (aside,) = users.glob(".deleted-*/bob")
    return aside


def test_a_user_made_again_over_an_empty_folder_named_by_nothing_else_moves_nothing_aside(
    actors: Actors, tmp_path: Path
) -> None:
    # bob's folder was empty and his old private location (handed to admin
    # with the deletion) named it: the new bob gets the location and the
    # folder back, and no empty `.deleted-*` folder is left for the operator.
    users = tmp_path / "users"
    _delete_and_make_bob_again(actors)
    assert list(users.glob(".deleted-*")) == []
    found = actors.call("admin", "GET", "/api/filesystem/files/Users/bob/files.loc").json()
    location = actors.call("admin", "GET", f"/rest/location/{found['id']}").json()
    assert (location["owner"], location["folder"]) == ("bob", str(users / "bob"))


def test_an_admins_location_on_an_empty_folder_follows_it_aside_past_an_object_store_one(
    actors: Actors, tmp_path: Path
) -> None:
    # After bob was deleted, admin gave his (empty) folder a location of her
    # own, old-bob.loc. An object-store location (listed first, by path)
    # holds no local folder and is passed over; old-bob.loc names the folder,
    # so it is set aside and old-bob.loc follows it: it must not name the
    # new bob's private folder.
    users = tmp_path / "users"
    node = actors.node
    policy = node.store.file_policy
    assert policy is not None
    node.store.file_policy = dataclasses.replace(
        policy, source_roots=(*policy.source_roots, "s3a://bkt/p")
    )
    ids = {}

    def locations() -> None:
        for name, folder in (("a", "s3a://bkt/p/data"), ("old-bob", str(users / "bob"))):
            body = {"path": f"/Connections/{name}.loc", "folder": folder}
            made = actors.call("admin", "POST", "/rest/location", body)
            assert made.status_code == 200, made.text
            ids[name] = made.json()["id"]

    _delete_and_make_bob_again(actors, locations)
    old = actors.call("admin", "GET", f"/rest/location/{ids['old-bob']}").json()
    assert old["folder"] == str(_aside(users))
    other = actors.call("admin", "GET", f"/rest/location/{ids['a']}").json()
    assert other["folder"] == "s3a://bkt/p/data"
    # The locations on other folders stay where they were: eve's, the root's.
    listed = {
        item["path"]: item["folder"]
        for item in actors.call("admin", "GET", "/rest/location").json()
    }
    assert listed["/Users/eve/files.loc"] == str(users / "eve")
    assert listed["/Connections/files.loc"] == str(tmp_path)


def test_a_sqlite_connection_on_a_deleted_users_file_follows_it_aside(
    actors: Actors, tmp_path: Path
) -> None:
    # admin's connections on bob's files: one on a file of his (kept), one
    # on a file not made yet in his otherwise empty folder. Left behind,
    # they would open the new bob's database files to whoever admin shared
    # them with; they follow the old folder aside, keeping what else they say.
    users = tmp_path / "users"
    (users / "bob" / "sub").mkdir()
    made: dict[str, Any] = {}

    def connections() -> None:
        for name, file in (("kept", users / "bob" / "sub" / "x.db"), ("new", users / "y.db")):
            body = {"path": f"/Connections/{name}.dst", "url": f"sqlite:///{file}"}
            answer = actors.call("admin", "POST", "/rest/connection", body)
            assert answer.status_code == 200, answer.text
            made[name] = answer.json()["id"]

    _delete_and_make_bob_again(actors, connections)
    aside = _aside(users)
    kept = actors.call("admin", "GET", f"/rest/connection/{made['kept']}").json()
    assert kept["url"] == f"sqlite:///{aside}/sub/x.db"
    assert (aside / "sub").is_dir()
    # A connection on a file beside the users' folders stays where it was.
    other = actors.call("admin", "GET", f"/rest/connection/{made['new']}").json()
    assert other["url"] == f"sqlite:///{users}/y.db"
    assert list((users / "bob").iterdir()) == []


def test_a_sqlite_connection_alone_names_an_empty_folder_it_is_set_aside(
    actors: Actors, tmp_path: Path
) -> None:
    # bob's folder is empty and admin removed his old private location: only
    # admin's connection on a file still to be made in it names the folder.
    # The folder is set aside all the same, and the connection follows.
    users = tmp_path / "users"
    made: dict[str, Any] = {}

    def only_a_connection() -> None:
        found = actors.call("admin", "GET", "/api/filesystem/files/Users/bob/files.loc")
        removed = actors.call("admin", "DELETE", f"/rest/location/{found.json()['id']}")
        assert removed.status_code == 200, removed.text
        body = {"path": "/Connections/bob.dst", "url": f"sqlite:///{users}/bob/x.db"}
        answer = actors.call("admin", "POST", "/rest/connection", body)
        assert answer.status_code == 200, answer.text
        made["id"] = answer.json()["id"]

    _delete_and_make_bob_again(actors, only_a_connection)
    found = actors.call("admin", "GET", f"/rest/connection/{made['id']}").json()
    assert found["url"] == f"sqlite:///{_aside(users)}/x.db"


def test_without_a_users_folder_a_location_around_it_still_serves_its_files(
    actors: Actors, tmp_path: Path
) -> None:
    # The operator removed the users' folder (no user had a private file
    # yet): the root's location around where it was, shared with everyone,
    # still saves bob's imports of the files beside it, rather than failing
    # on the folder that is gone.
    found = actors.call("admin", "GET", "/api/filesystem/files/Connections/files.loc").json()
    flags = {"readable": True, "writable": False, "executable": False}
    url = f"/api/filesystem/files/{found['id']}/permission/others"
    assert actors.call("admin", "PUT", url, flags).status_code == 200
    shutil.rmtree(tmp_path / "users")
    (tmp_path / "in.csv").write_text("k\nx\n")
    source = {"kind": "csv", "location": "/Connections/files.loc", "path": "in.csv"}
    body = {"path": "/Users/bob/in.imp", "source": source, "schema": SCHEMA}
    made = actors.call("bob", "POST", "/rest/import-job", body)
    assert made.status_code == 200, made.text


def test_a_home_whose_private_location_is_shared_is_read_through_a_location_around_it(
    actors: Actors, steve: str, tmp_path: Path
) -> None:
    # steve's location on the users' folder reaches no home still to be made,
    # but bob's home has its private location, which bob shared with everyone:
    # that location decides, and steve reads bob's file through his own. eve's
    # home, whose private location is hers alone, stays out of reach.
    users = tmp_path / "users"
    for user in ("bob", "eve"):
        (users / user / "x.csv").write_text(f"k\n{user}'s\n")
    found = actors.call("bob", "GET", "/api/filesystem/files/Users/bob/files.loc").json()
    flags = {"readable": True, "writable": False, "executable": False}
    url = f"/api/filesystem/files/{found['id']}/permission/others"
    assert actors.call("bob", "PUT", url, flags).status_code == 200
    around = {"path": f"/Users/{steve}/u.loc", "folder": str(users)}
    assert actors.call(steve, "POST", "/rest/location", around).status_code == 200
    answers = {}
    for user in ("bob", "eve"):
        source = {"kind": "csv", "location": f"/Users/{steve}/u.loc", "path": f"{user}/x.csv"}
        body = {"path": f"/Users/{steve}/{user}.imp", "source": source, "schema": SCHEMA}
        answers[user] = actors.call(steve, "POST", "/rest/import-job", body)
    assert answers["bob"].status_code == 200, answers["bob"].text
    assert answers["eve"].status_code == 400, answers["eve"].text
    assert answers["eve"].json()["reason"] == (
        "source: 'eve/x.csv' is not inside a location you may read from"
    )


def test_a_location_on_a_missing_folder_of_a_new_user_gets_a_folder_aside(
    actors: Actors, tmp_path: Path
) -> None:
    # admin's location named users/carol before there was a carol, and the
    # folder was removed since: there is nothing to move, but the location
    # must not name carol's new private folder, so it gets an empty one aside.
    users = tmp_path / "users"
    body = {"path": "/Connections/carol.loc", "folder": str(users / "carol")}
    made = actors.call("admin", "POST", "/rest/location", body)
    assert made.status_code == 200, made.text
    (users / "carol").rmdir()
    carol = {"name": "carol", "password": "pw", "roles": ["ANALYST"]}
    answer = actors.call("admin", "POST", "/rest/user-management/users", carol)
    assert answer.status_code == 200, answer.text
    (aside,) = users.glob(".deleted-*/carol")
    assert aside.is_dir() and list(aside.iterdir()) == []
    found = actors.call("admin", "GET", f"/rest/location/{made.json()['id']}").json()
    assert found["folder"] == str(aside)
    assert (users / "carol").is_dir()


def test_a_users_folder_that_is_no_folder_refuses_a_new_user_by_name(
    actors: Actors, tmp_path: Path
) -> None:
    # The operator left a file where the users' folder was: nothing can be
    # set aside nor made there, and making carol is refused, naming her.
    users = tmp_path / "users"
    shutil.rmtree(users)
    users.write_text("x")
    carol = {"name": "carol", "password": "pw", "roles": ["ANALYST"]}
    refused = actors.call("admin", "POST", "/rest/user-management/users", carol)
    assert refused.status_code == 409, refused.text
    assert refused.json()["reason"] == (
        "the private folder of a deleted user named 'carol' cannot be moved aside"
    )
    assert users.read_text() == "x"
