"""Tenth attack (ninth session): user isolation after the save-time checks.

docs/security.md, "Tenth attack (ninth session)".
"""

from __future__ import annotations

from pathlib import Path

import pytest

from datamill.api.event_routes import _Reader
from datamill.domain.status import JobKind, JobStatus
from datamill.errors import NotFound
from tests.helpers import password_hash, wait_terminal
from tests.security.conftest import PASSWORD, Actors
from tests.security.test_attack8 import settings as settings  # the operator's root around home
from tests.security.test_attack8 import steve as steve  # location.define, connection.define

SCHEMA = [{"name": "k", "type": "VARCHAR"}]


def _run(actors: Actors, user: str, path: str) -> JobStatus:
    started = actors.call(user, "POST", f"/api/job-execution{path}/trigger")
    assert started.status_code == 200, started.text
    return wait_terminal(actors.node, started.json()["job-execution-id"]).status


def test_a_location_around_the_users_root_reaches_no_home_still_to_be_made(
    running: Actors, steve: str, tmp_path: Path
) -> None:
    actors = running
    # zed's folder is there before zed is (an operator filled it, or a deleted
    # user left it). steve may not make a location in it, but one on the
    # users root itself was allowed and reached it: his import read zed's
    # file, a glob read it, and his export put a file where carol's private
    # folder was to go, so creating carol failed (seen on a real server).
    users = tmp_path / "users"
    (users / "zed").mkdir()
    (users / "zed" / "x.csv").write_text("k\nzed's\n")
    (users / "steve" / "x.csv").write_text("k\nsteve's\n")
    body = {"path": "/Users/steve/u.loc", "folder": str(users)}
    assert actors.call(steve, "POST", "/rest/location", body).status_code == 200
    source = {"kind": "csv", "location": "/Users/steve/u.loc", "path": "zed/x.csv"}
    imported = {"path": "/Users/steve/z.imp", "source": source, "schema": SCHEMA}
    refused = actors.call(steve, "POST", "/rest/import-job", imported)
    assert refused.status_code == 400, refused.text
    assert refused.json()["reason"] == (
        "source: 'zed/x.csv' is not inside a location you may read from"
    )
    # A glob skips zed's folder and reads what is steve's.
    source = {"kind": "csv", "location": "/Users/steve/u.loc", "path": "*/x.csv"}
    imported = {"path": "/Users/steve/all.imp", "source": source, "schema": SCHEMA}
    made = actors.call(steve, "POST", "/rest/import-job", imported)
    assert made.status_code == 200, made.text
    assert _run(actors, steve, "/Users/steve/all.imp") is JobStatus.COMPLETED
    config = made.json()["configuration-id"]
    data = actors.call(steve, "GET", f"/rest/data/import-job/{config}/download")
    assert data.text.splitlines() == ['"k"', '"steve\'s"']
    # No file in the place of a private folder still to be made.
    sink = {"kind": "csv", "location": "/Users/steve/u.loc", "path": "carol"}
    export = {"source": {"importJob": "/Users/steve/all.imp"}, "sink": sink}
    exported = {"path": "/Users/steve/c.exp", **export}
    refused = actors.call(steve, "POST", "/rest/export-job", exported)
    assert refused.status_code == 400, refused.text
    actors.node.jobs.define_job("/Users/steve/c.exp", JobKind.EXPORT, export, steve)
    assert _run(actors, steve, "/Users/steve/c.exp") is JobStatus.ERROR
    assert not (users / "carol").exists()
    carol = {"name": "carol", "password": "pw", "roles": ["ANALYST"]}
    assert actors.call("admin", "POST", "/rest/user-management/users", carol).status_code == 200


@pytest.mark.parametrize("old_location", ["kept", "removed"])
def test_a_new_user_of_a_deleted_users_name_gets_none_of_their_files(
    running: Actors, tmp_path: Path, old_location: str
) -> None:
    actors = running
    # Deleting bob handed his private location to admin, but its folder kept
    # his files, and a new user named bob was given the location back: the
    # new bob's import read the old bob's salary (seen on a real server).
    # Had admin removed that entry before the new bob was made (the lead,
    # tenth session), nothing pointed at the folder any more and the new
    # bob's location was made on it, old files and all.
    users = tmp_path / "users"
    (users / "bob" / "salary.csv").write_text("k\nold bob's\n")
    assert actors.call("admin", "DELETE", "/rest/user-management/users/bob").status_code == 200
    if old_location == "removed":
        found = actors.call("admin", "GET", "/api/filesystem/files/Users/bob/files.loc")
        assert found.status_code == 200, found.text
        removed = actors.call("admin", "DELETE", f"/rest/location/{found.json()['id']}")
        assert removed.status_code == 200, removed.text
    bob = {"name": "bob", "password": "pw", "roles": ["ANALYST"]}
    assert actors.call("admin", "POST", "/rest/user-management/users", bob).status_code == 200
    source = {"kind": "csv", "location": "/Users/bob/files.loc", "path": "salary.csv"}
    imported = {"path": "/Users/bob/s.imp", "source": source, "schema": SCHEMA}
    assert actors.call("bob", "POST", "/rest/import-job", imported).status_code == 200
    assert _run(actors, "bob", "/Users/bob/s.imp") is JobStatus.ERROR
    assert list((users / "bob").iterdir()) == []
    # Kept for the ADMIN, out of every user's location.
    (kept,) = users.glob(".deleted-*/bob/salary.csv")
    assert kept.read_text() == "k\nold bob's\n"


def test_a_location_or_connection_is_no_way_into_someone_elses_home(
    actors: Actors, steve: str, tmp_path: Path
) -> None:
    # `/Users/bob` and below are bob's whatever the flags say: a job or a
    # folder there is refused to anyone else, but a location or connection
    # entry was not, once bob had shared his home writable.
    home = actors.call("bob", "GET", "/api/filesystem/folders/Users/bob").json()["id"]
    flags = {"readable": True, "writable": True, "executable": True}
    url = f"/api/filesystem/files/{home}/permission/others"
    assert actors.call("bob", "PUT", url, flags).status_code == 200
    entries = {
        "/rest/location": {"path": "/Users/bob/x.loc", "folder": str(tmp_path / "steve")},
        "/rest/connection": {"path": "/Users/bob/x.dst", "url": "sqlite:////nowhere/x.db"},
    }
    for route, body in entries.items():
        refused = actors.call(steve, "POST", route, body)
        assert refused.status_code == 403, refused.text
        assert refused.json()["reason"] == (
            "/Users/bob is reserved as the home folder of the user 'bob':"
            " only that user (or an ADMIN) may create anything there"
        )
    assert not (tmp_path / "steve").exists()


def test_an_open_event_stream_reads_with_the_rights_its_caller_has_now(
    actors: Actors, tmp_path: Path
) -> None:
    # bob read eve's run through the group team. Removed from team (or
    # deleted, or his role taken), his open stream went on reading its log
    # and states with the groups he had when it opened, for as long as the
    # run lasted (hours).
    admin = actors.call
    assert (
        admin("admin", "POST", "/rest/user-management/groups", {"name": "team"}).status_code == 200
    )
    assert (
        admin("admin", "PUT", "/rest/user-management/users/bob", {"groups": ["team"]}).status_code
        == 200
    )
    (tmp_path / "users" / "eve" / "a.csv").write_text("k\neve's\n")
    source = {"kind": "csv", "location": "/Users/eve/files.loc", "path": "a.csv"}
    imported = {"path": "/Users/eve/a.imp", "source": source, "schema": SCHEMA}
    assert actors.call("eve", "POST", "/rest/import-job", imported).status_code == 200
    for path in ("/folders/Users/eve", "/files/Users/eve/a.imp"):
        found = actors.call("eve", "GET", f"/api/filesystem{path}").json()
        flags = {"name": "team", "readable": True, "writable": False, "executable": False}
        url = f"/api/filesystem/files/{found['id']}/permission/groups"
        assert actors.call("eve", "POST", url, flags).status_code == 200, path
    started = actors.call("eve", "POST", "/api/job-execution/Users/eve/a.imp/trigger")
    run = started.json()["job-execution-id"]  # queued: no worker here
    with actors.node.store.db.read() as conn:
        bob = actors.node.store.users.get(conn, "bob")
    assert bob is not None
    stream = _Reader(actors.node.jobs, [run], bob)  # as GET .../events opens it
    assert [name for name, _ in stream.read()] == ["log", "state"]
    assert (
        admin("admin", "PUT", "/rest/user-management/users/bob", {"groups": []}).status_code == 200
    )
    with pytest.raises(NotFound):
        stream.read()


def test_a_location_made_around_others_takes_none_of_theirs_away(
    running: Actors, steve: str, tmp_path: Path
) -> None:
    actors = running
    # A run checks again that a location's definer may still give it out,
    # with every location around it. One made *later* around it counted
    # too: stan's private location on the users root made every user's own
    # private location fail, also of users made after it (`... does not
    # exist or you may not read from it`, seen on a real server), and his one
    # around steve's folder ended steve's location.
    actors.node.store.users.create("stan", password_hash(PASSWORD), roles=("STEWARD",))
    (tmp_path / "users" / "bob" / "b.csv").write_text("k\nbob's\n")
    (tmp_path / "area" / "steve").mkdir(parents=True)
    (tmp_path / "area" / "steve" / "s.csv").write_text("k\nsteve's\n")
    body = {"path": "/Users/steve/a.loc", "folder": str(tmp_path / "area" / "steve")}
    assert actors.call(steve, "POST", "/rest/location", body).status_code == 200
    jobs = {
        "bob": ("/Users/bob/b.imp", "/Users/bob/files.loc", "b.csv"),
        steve: ("/Users/steve/s.imp", "/Users/steve/a.loc", "s.csv"),
    }
    for user, (path, location, name) in jobs.items():
        source = {"kind": "csv", "location": location, "path": name}
        imported = {"path": path, "source": source, "schema": SCHEMA}
        assert actors.call(user, "POST", "/rest/import-job", imported).status_code == 200
    for folder in ("users", "area"):
        body = {"path": f"/Users/stan/{folder}.loc", "folder": str(tmp_path / folder)}
        assert actors.call("stan", "POST", "/rest/location", body).status_code == 200
    # A user made after stan's location has her own private location too.
    zoe = {"name": "zoe", "password": PASSWORD, "roles": ["ANALYST"]}
    assert actors.call("admin", "POST", "/rest/user-management/users", zoe).status_code == 200
    (tmp_path / "users" / "zoe" / "z.csv").write_text("k\nzoe's\n")
    source = {"kind": "csv", "location": "/Users/zoe/files.loc", "path": "z.csv"}
    imported = {"path": "/Users/zoe/z.imp", "source": source, "schema": SCHEMA}
    assert actors.call("zoe", "POST", "/rest/import-job", imported).status_code == 200
    jobs["zoe"] = ("/Users/zoe/z.imp", "", "")
    for user, (path, _location, _name) in jobs.items():
        assert _run(actors, user, path) is JobStatus.COMPLETED, user
