"""Who may give out a folder, when another's location encloses it (tenth session).

services/locations.py `check_given_folder`: a definer's own private folder is
hers whatever encloses it, but nothing else inside a location she may not
read is (docs/security.md, "Tenth attack"; the mutants in docs/testing.md).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from datamill.store import users as user_store
from tests.helpers import password_hash
from tests.security.conftest import PASSWORD, Actors
from tests.security.test_attack8 import settings as settings  # the operator's root around home
from tests.security.test_attack8 import steve as steve  # location.define, connection.define
from tests.security.test_repointed_locations import _revoke, _shared_team

SCHEMA = [{"name": "k", "type": "VARCHAR"}]


def _refusal(what: str, folder: Path) -> str:
    return (
        f"{what}: {str(folder)!r} lies in a location you may not read, or in Datamill's own files"
    )


def _carved(actors: Actors, steve: str, team: Path) -> tuple[str, int]:
    """steve's mine.loc on `team`/mine (holding x.csv), carved from admin's shared
    team.loc: the URL of team.loc's flags for others and mine.loc's id."""
    (team / "mine").mkdir(parents=True)
    (team / "mine" / "x.csv").write_text("k\nx\n")
    _, share = _shared_team(actors, team)
    body = {"path": f"/Users/{steve}/mine.loc", "folder": str(team / "mine")}
    made = actors.call(steve, "POST", "/rest/location", body)
    assert made.status_code == 200, made.text
    return share, int(made.json()["id"])


def test_a_location_around_the_users_root_leaves_a_definer_her_own_folder_only(
    actors: Actors, steve: str, tmp_path: Path
) -> None:
    users = tmp_path / "users"
    actors.node.store.users.create("stan", password_hash(PASSWORD), roles=("STEWARD",))
    around = {"path": "/Users/stan/users.loc", "folder": str(users)}
    assert actors.call("stan", "POST", "/rest/location", around).status_code == 200
    # stan's private location on the users root does not take steve's own
    # folder from him: he still carves a location and a SQLite file out of it.
    (users / steve / "sub").mkdir()
    mine = {"path": f"/Users/{steve}/sub.loc", "folder": str(users / steve / "sub")}
    made = actors.call(steve, "POST", "/rest/location", mine)
    assert made.status_code == 200, made.text
    database = users / steve / "mine.db"
    body = {"path": f"/Users/{steve}/mine.dst", "url": f"sqlite:///{database}"}
    made = actors.call(steve, "POST", "/rest/connection", body)
    assert made.status_code == 200, made.text
    # But the users root itself is inside stan's location, which steve may not read.
    again = {"path": f"/Users/{steve}/users.loc", "folder": str(users)}
    refused = actors.call(steve, "POST", "/rest/location", again)
    assert refused.status_code == 400, refused.text
    assert refused.json()["reason"] == _refusal("folder", users)


def test_a_location_an_admin_made_inside_a_definers_folder_is_not_hers_to_give(
    actors: Actors, steve: str, tmp_path: Path
) -> None:
    # Her own folder is hers whatever encloses it, but an ADMIN's location
    # inside it decides who uses what lies in it (the innermost decides):
    # steve may not hand that out through a location of his own.
    # One of the admin's around the users root (listed first, by path) takes
    # none of steve's folder; the one inside it does.
    secret = tmp_path / "users" / steve / "secret"
    (secret / "x").mkdir(parents=True)
    for name, folder in (("around", tmp_path / "users"), ("secret", secret)):
        body = {"path": f"/Connections/{name}.loc", "folder": str(folder)}
        assert actors.call("admin", "POST", "/rest/location", body).status_code == 200
    mine = {"path": f"/Users/{steve}/x.loc", "folder": str(secret / "x")}
    refused = actors.call(steve, "POST", "/rest/location", mine)
    assert refused.status_code == 400, refused.text
    assert refused.json()["reason"] == _refusal("folder", secret / "x")


def test_a_location_made_later_around_a_revoked_share_keeps_none_of_it(
    actors: Actors, steve: str, tmp_path: Path
) -> None:
    # steve carved mine.loc from admin's shared team.loc. admin later made
    # another location around it (listed before team.loc, by path), which
    # the re-check skips as made since; it must go on to team.loc, whose
    # share admin then revoked.
    team = tmp_path / "team"
    share, _ = _carved(actors, steve, team)
    later = {"path": "/Connections/a.loc", "folder": str(team)}
    assert actors.call("admin", "POST", "/rest/location", later).status_code == 200
    source = {"kind": "csv", "location": f"/Users/{steve}/mine.loc", "path": "x.csv"}
    imported = {"path": f"/Users/{steve}/x.imp", "source": source, "schema": SCHEMA}
    assert actors.call(steve, "POST", "/rest/import-job", imported).status_code == 200
    _revoke(actors, share)
    imported["path"] = f"/Users/{steve}/y.imp"
    refused = actors.call(steve, "POST", "/rest/import-job", imported)
    assert refused.status_code == 400, refused.text
    assert refused.json()["reason"] == (
        f"source: location '/Users/{steve}/mine.loc' does not exist or you may not read from it"
    )


def test_an_object_store_folder_that_is_no_valid_uri_is_refused_by_name(
    actors: Actors, steve: str
) -> None:
    for folder, why in (
        ("s3a://Bad_Bucket/x", "does not name a valid bucket"),
        ("s3a://bucket/x", "is outside the operator's file roots"),
        (
            "s3a://bucket//x",
            "must be plain names separated by single slashes"
            " (letters, digits and _ . = + @ ~ , -; no '..', no '%')",
        ),
    ):
        body = {"path": f"/Users/{steve}/o.loc", "folder": folder}
        refused = actors.call(steve, "POST", "/rest/location", body)
        assert refused.status_code == 400, refused.text
        assert refused.json()["reason"] == f"folder: {folder!r} {why}"


def test_a_location_whose_owner_row_is_gone_gives_out_nothing(
    actors: Actors, steve: str, tmp_path: Path
) -> None:
    # steve carved mine.loc from admin's shared team.loc and let everyone
    # read it. The API hands a deleted user's entries to the ADMIN deleting
    # her, but a store whose users row is gone while her entries stay (a
    # hand edit, a half-restored backup) must not leave them given out by
    # no one: the re-check fails closed and eve's import is refused.
    _, mine = _carved(actors, steve, tmp_path / "team")
    flags = f"/api/filesystem/files/{mine}/permission/others"
    assert actors.call(steve, "PUT", flags, {"readable": True}).status_code == 200
    source = {"kind": "csv", "location": f"/Users/{steve}/mine.loc", "path": "x.csv"}
    imported = {"path": "/Users/eve/x.imp", "source": source, "schema": SCHEMA}
    assert actors.call("eve", "POST", "/rest/import-job", imported).status_code == 200
    with actors.node.store.db.write() as conn:
        user_store.delete_user(conn, steve)  # the row only: no hand-over of his entries
    imported["path"] = "/Users/eve/y.imp"
    refused = actors.call("eve", "POST", "/rest/import-job", imported)
    assert refused.status_code == 400, refused.text
    assert refused.json()["reason"] == (
        f"source: location '/Users/{steve}/mine.loc' does not exist or you may not read from it"
    )


def test_an_object_store_location_listed_first_does_not_end_the_check(
    actors: Actors, steve: str, tmp_path: Path
) -> None:
    # admin's object-store location a.loc is listed before her private
    # secret.loc (by path); it holds no local file and is passed over, but
    # the check goes on to secret.loc, which steve may not read: he may not
    # hand out a folder inside it through a location of his own.
    node = actors.node
    policy = node.store.file_policy
    assert policy is not None
    node.store.file_policy = dataclasses.replace(
        policy, source_roots=(*policy.source_roots, "s3a://bkt/p")
    )
    secret = tmp_path / "secret"
    (secret / "x").mkdir(parents=True)
    for name, folder in (("a", "s3a://bkt/p/data"), ("secret", str(secret))):
        body = {"path": f"/Connections/{name}.loc", "folder": folder}
        made = actors.call("admin", "POST", "/rest/location", body)
        assert made.status_code == 200, made.text
    mine = {"path": f"/Users/{steve}/x.loc", "folder": str(secret / "x")}
    refused = actors.call(steve, "POST", "/rest/location", mine)
    assert refused.status_code == 400, refused.text
    assert refused.json()["reason"] == _refusal("folder", secret / "x")
