"""Eleventh attack (tenth session): re-pointed locations, re-used user names.

docs/security.md, "Eleventh attack (tenth session)".
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from datamill.api import event_routes
from datamill.api.event_routes import _Reader
from datamill.domain.status import JobKind, JobStatus
from datamill.errors import NotFound
from datamill.store import locations as loc_store
from tests.api.test_waiting import _events, _until_watched, _world
from tests.api.test_waiting import _run as _start
from tests.helpers import wait_terminal
from tests.security.conftest import Actors
from tests.security.test_attack8 import settings as settings  # the operator's root around home
from tests.security.test_attack8 import steve as steve  # location.define, connection.define
from tests.security.test_attack10 import SCHEMA, _run


def _download(actors: Actors, user: str, path: str) -> str:
    config = actors.call(user, "GET", f"/api/filesystem/files{path}").json()["jobConfigurationId"]
    return actors.call(user, "GET", f"/rest/data/import-job/{config}/download").text


def _others(actors: Actors, path: str, *, readable: bool, writable: bool = False) -> None:
    entry = actors.call("admin", "GET", f"/api/filesystem/files{path}").json()["id"]
    flags = {"readable": readable, "writable": writable, "executable": False}
    url = f"/api/filesystem/files/{entry}/permission/others"
    assert actors.call("admin", "PUT", url, flags).status_code == 200


def test_an_older_location_re_pointed_into_a_share_ends_with_the_share(
    running: Actors, steve: str, tmp_path: Path
) -> None:
    actors = running
    # A run re-checks a location with the locations made before it (so one
    # made around it later cannot end it), by entry id. steve re-pointed a
    # location (and a SQLite connection) he had made *before* admin's share
    # into that share: when admin revoked the share, the re-check skipped it,
    # and steve's import went on reading admin's file and his export replaced
    # it (seen on a real server with SQLite and PostgreSQL metadata).
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "secret.csv").write_text("k\nadmin's\n")
    with sqlite3.connect(shared / "x.db") as db:
        db.execute("CREATE TABLE t (k TEXT)")
        db.execute("INSERT INTO t VALUES ('admin''s')")
    old = {"path": "/Users/steve/old.loc", "folder": str(tmp_path / "area")}
    made = actors.call(steve, "POST", "/rest/location", old)
    assert made.status_code == 200, made.text
    connection = {"path": "/Users/steve/old.dst", "url": f"sqlite:///{tmp_path}/area/x.db"}
    given = actors.call(steve, "POST", "/rest/connection", connection)
    assert given.status_code == 200, given.text
    body = {"path": "/Connections/shared.loc", "folder": str(shared)}
    assert actors.call("admin", "POST", "/rest/location", body).status_code == 200
    _others(actors, "/Connections/shared.loc", readable=True, writable=True)
    moves = {
        f"/rest/location/{made.json()['id']}": old | {"folder": str(shared)},
        f"/rest/connection/{given.json()['id']}": connection | {"url": f"sqlite:///{shared}/x.db"},
    }
    for url, document in moves.items():
        # Refused (attack12's fix) or recorded with the share around it: either way
        # the revocation below must end it.
        assert actors.call(steve, "PUT", url, document).status_code in (200, 400)
    define = actors.node.jobs.define_job
    csv = {"kind": "csv", "location": "/Users/steve/old.loc", "path": "secret.csv"}
    define("/Users/steve/s.imp", JobKind.IMPORT, {"source": csv, "schema": SCHEMA}, steve)
    table = {"kind": "database", "connection": "/Users/steve/old.dst", "table": "t"}
    define("/Users/steve/t.imp", JobKind.IMPORT, {"source": table, "schema": SCHEMA}, steve)
    (tmp_path / "area" / "mine.csv").write_text("k\nsteve's\n")
    mine = {"kind": "csv", "location": "/Users/steve/old.loc", "path": "mine.csv"}
    define("/Users/steve/m.imp", JobKind.IMPORT, {"source": mine, "schema": SCHEMA}, steve)
    export = {"source": {"importJob": "/Users/steve/m.imp"}, "sink": csv}
    define("/Users/steve/w.exp", JobKind.EXPORT, export, steve)
    _others(actors, "/Connections/shared.loc", readable=False)
    assert _run(actors, steve, "/Users/steve/s.imp") is JobStatus.ERROR
    assert _run(actors, steve, "/Users/steve/t.imp") is JobStatus.ERROR
    _run(actors, steve, "/Users/steve/m.imp")
    _run(actors, steve, "/Users/steve/w.exp")
    assert (shared / "secret.csv").read_text() == "k\nadmin's\n"
    # A location made new inside the share (after it) works, and ends with it.
    body = {"path": "/Users/steve/new.loc", "folder": str(shared / "sub")}
    _others(actors, "/Connections/shared.loc", readable=True, writable=True)
    assert actors.call(steve, "POST", "/rest/location", body).status_code == 200
    (shared / "sub" / "s.csv").write_text("k\nshared\n")
    source = {"kind": "csv", "location": "/Users/steve/new.loc", "path": "s.csv"}
    imported = {"path": "/Users/steve/n.imp", "source": source, "schema": SCHEMA}
    assert actors.call(steve, "POST", "/rest/import-job", imported).status_code == 200
    assert _run(actors, steve, "/Users/steve/n.imp") is JobStatus.COMPLETED
    _others(actors, "/Connections/shared.loc", readable=False)
    assert _run(actors, steve, "/Users/steve/n.imp") is JobStatus.ERROR


@pytest.mark.parametrize("old_files", ["some", "none"])
def test_an_archive_of_a_deleted_users_location_never_names_the_new_users_folder(
    running: Actors, tmp_path: Path, old_files: str
) -> None:
    actors = running
    # admin deleted bob, kept his private location as an archive (renaming
    # his home folder) and shared it with eve. A new user named bob got a
    # fresh folder, the old files set aside, but the archive location still
    # named <files>/users/bob: eve read the new bob's private file through it
    # (seen on a real server with SQLite and PostgreSQL metadata).
    users = tmp_path / "users"
    if old_files == "some":
        (users / "bob" / "salary.csv").write_text("k\nold bob's\n")
    assert actors.call("admin", "DELETE", "/rest/user-management/users/bob").status_code == 200
    renamed = actors.call("admin", "PUT", "/api/filesystem/folders/Users/bob", {"name": "archive"})
    assert renamed.status_code == 200, renamed.text
    _others(actors, "/Users/archive/files.loc", readable=True)
    bob = {"name": "bob", "password": "pw", "roles": ["ANALYST"]}
    assert actors.call("admin", "POST", "/rest/user-management/users", bob).status_code == 200
    (users / "bob" / "salary.csv").write_text("k\nnew bob's\n")
    source = {"kind": "csv", "location": "/Users/archive/files.loc", "path": "salary.csv"}
    imported = {"path": "/Users/eve/a.imp", "source": source, "schema": SCHEMA}
    assert actors.call("eve", "POST", "/rest/import-job", imported).status_code == 200
    status = _run(actors, "eve", "/Users/eve/a.imp")
    if old_files == "some":
        # The archive followed the old files, as admin meant to share them.
        assert status is JobStatus.COMPLETED
        assert _download(actors, "eve", "/Users/eve/a.imp").splitlines() == ['"k"', '"old bob\'s"']
    else:
        assert status is JobStatus.ERROR
    (aside,) = users.glob(".deleted-*/bob")
    archive = actors.call("admin", "GET", "/api/filesystem/files/Users/archive/files.loc").json()
    found = actors.call("admin", "GET", f"/rest/location/{archive['id']}").json()
    assert found["folder"] == str(aside)
    assert (users / "bob" / "salary.csv").read_text() == "k\nnew bob's\n"


@pytest.mark.parametrize("where", ["users/bob", "users/.deleted-x"])
def test_a_connection_tells_no_folder_in_anothers_files_from_a_missing_one(
    actors: Actors, steve: str, tmp_path: Path, where: str
) -> None:
    # steve's SQLite connection on a file in bob's private folder (or in a
    # deleted user's set-aside folder) was refused either way, but with
    # another answer when the file's folder did not exist (`sink folder ...
    # does not exist`): steve learned which folders bob has (seen on a real
    # server). A location's folder was already answered alike.
    (tmp_path / where / "merger").mkdir(parents=True)
    answers = set()
    for folder in ("merger", "nothing"):
        url = f"sqlite:///{tmp_path}/{where}/{folder}/x.db"
        body = {"path": f"/Users/steve/{folder}.dst", "url": url}
        refused = actors.call(steve, "POST", "/rest/connection", body)
        assert refused.status_code == 400, refused.text
        answers.add(refused.json()["reason"].replace(folder, "<folder>"))
    assert answers == {
        f"connection database file: '{tmp_path}/{where}/<folder>/x.db' lies in a location"
        " you may not read, or in Datamill's own files"
    }


def test_a_quiet_event_stream_sends_each_event_once(
    actors: Actors, files_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # After every keep-alive the stream sent its last batch of events again:
    # a quiet run's RUNNING state every 15 s (seen on a real server with
    # PostgreSQL metadata; a batch may be thousands of log events of a plan's
    # runs), also to a reader who had lost the right to read the run meanwhile.
    monkeypatch.setattr(event_routes, "KEEPALIVE_SECONDS", 0.01)
    world = _world(actors, files_root)
    first, second = _start(actors, world["imp"]), _start(actors, world["wbk"])  # no worker
    answers: list[Any] = []
    url = f"/api/job-execution/{first},{second}/events"
    streaming = threading.Thread(target=lambda: answers.append(actors.call("eve", "GET", url)))
    streaming.start()
    _until_watched(actors, first)
    killed = actors.call("bob", "POST", f"/rest/job-execution/job-kill/{first}")
    assert killed.status_code == 200, killed.text
    threading.Event().wait(0.5)  # room for keep-alives while nothing changes
    killed = actors.call("bob", "POST", f"/rest/job-execution/job-kill/{second}")
    assert killed.status_code == 200, killed.text
    streaming.join()
    assert ": keep-alive" in answers[0].text
    events = [(name, json.dumps(data)) for name, data in _events(answers[0].text)]
    assert len(events) == len(set(events)), events
    ended = {"runs": {str(first): "CANCELED", str(second): "CANCELED"}}
    assert events[-1] == ("end", json.dumps(ended))


def test_an_event_stream_of_a_deleted_user_ends_even_if_the_name_is_made_again(
    actors: Actors, files_root: Path
) -> None:
    # A stream re-reads its caller by name at each change, so a deleted
    # user's open stream ended, unless a new user of the same name had been
    # made meanwhile: then the old eve's stream read on with the new eve's
    # rights (here the group that reads bob's job).
    world = _world(actors, files_root)  # eve reads bob's jobs through the group readers
    run = _start(actors, world["imp"])  # queued: no worker here
    with actors.node.store.db.read() as conn:
        eve = actors.node.store.users.get(conn, "eve")
    assert eve is not None
    stream = _Reader(actors.node.jobs, [run], eve)  # as GET .../events opens it
    assert [name for name, _ in stream.read()] == ["log", "state"]
    assert actors.call("admin", "DELETE", "/rest/user-management/users/eve").status_code == 200
    new = {"name": "eve", "password": "other", "roles": ["ANALYST"], "groups": ["readers"]}
    assert actors.call("admin", "POST", "/rest/user-management/users", new).status_code == 200
    with pytest.raises(NotFound):
        stream.read()


def test_a_new_user_of_a_deleted_users_name_inherits_no_group_share(running: Actors) -> None:
    actors = running
    # admin shared the deleted bob's private location (and home) with a group
    # to hand out his files. The new bob was given the entry back with its
    # others flags cleared, but not its group flags: eve, in the group, read
    # the new bob's private file (seen on a real server).
    assert (
        actors.call("admin", "POST", "/rest/user-management/groups", {"name": "team"}).status_code
        == 200
    )
    assert (
        actors.call(
            "admin", "PUT", "/rest/user-management/users/eve", {"groups": ["team"]}
        ).status_code
        == 200
    )
    assert actors.call("admin", "DELETE", "/rest/user-management/users/bob").status_code == 200
    flags = {"name": "team", "readable": True, "writable": True, "executable": True}
    for path in ("/files/Users/bob/files.loc", "/folders/Users/bob"):
        entry = actors.call("admin", "GET", f"/api/filesystem{path}").json()["id"]
        url = f"/api/filesystem/files/{entry}/permission/groups"
        assert actors.call("admin", "POST", url, flags).status_code == 200, path
    bob = {"name": "bob", "password": "pw", "roles": ["ANALYST"]}
    assert actors.call("admin", "POST", "/rest/user-management/users", bob).status_code == 200
    folder = Path(actors.node.store.file_policy.users_root) / "bob"  # type: ignore[union-attr]
    (folder / "new.csv").write_text("k\nnew bob's\n")
    source = {"kind": "csv", "location": "/Users/bob/files.loc", "path": "new.csv"}
    imported = {"source": source, "schema": SCHEMA}
    actors.node.jobs.define_job("/Users/eve/n.imp", JobKind.IMPORT, imported, "eve")
    assert _run(actors, "eve", "/Users/eve/n.imp") is JobStatus.ERROR
    for path in ("/files/Users/bob/files.loc", "/folders/Users/bob"):
        entry = actors.call("bob", "GET", f"/api/filesystem{path}").json()["id"]
        shared = actors.call("bob", "GET", f"/api/filesystem/files/{entry}/permission").json()
        assert shared["groups"] == [], path


def test_a_file_in_a_new_users_place_is_refused_and_nothing_is_set_aside(
    actors: Actors, tmp_path: Path
) -> None:
    # Setting aside now also runs for an empty or missing folder that a
    # location names; a *file* in the folder's place is still refused (N2),
    # without leaving an empty `.deleted-*` folder behind.
    (tmp_path / "users" / "carol").write_text("x")
    carol = {"name": "carol", "password": "pw", "roles": ["ANALYST"]}
    refused = actors.call("admin", "POST", "/rest/user-management/users", carol)
    assert refused.status_code == 409, refused.text
    assert list((tmp_path / "users").glob(".deleted-*")) == []
    assert (tmp_path / "users" / "carol").read_text() == "x"


def test_a_stewards_postgresql_connection_must_carry_its_own_login(
    running: Actors, steve: str
) -> None:
    # steve's connection `postgresql://postgres@127.0.0.1:5432/postgres` (no
    # password) was accepted, and its runs logged in with the server's own
    # login (libpq's PGPASSWORD, ~/.pgpass): on a real server given
    # PGPASSWORD, his import read `current_user` = postgres, the data
    # directory and `pg_read_file('PG_VERSION')`. Inline URLs were held to
    # this already (F15); only an ADMIN's connection may use that login.
    for url in ("postgresql://postgres@127.0.0.1:5432/postgres", "postgresql://127.0.0.1/x"):
        body = {"path": "/Users/steve/pg.dst", "url": url}
        refused = running.call(steve, "POST", "/rest/connection", body)
        assert refused.status_code == 400, refused.text
        assert refused.json()["reason"] == (
            "url: a PostgreSQL connection must carry its own user and password;"
            " only an ADMIN may make one that uses the server's own login"
        )
    given = {"path": "/Users/steve/pg.dst", "url": "postgresql://u:p@127.0.0.1:5432/postgres"}
    assert running.call(steve, "POST", "/rest/connection", given).status_code == 200
    # One saved before (or whose password was taken out since) fails at run time.
    with running.node.store.db.write() as conn:
        entry = running.node.store.files.find(conn, "/Users/steve/pg.dst")
        assert entry is not None
        url = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
        loc_store.set_connection(conn, entry.id, url, None, bases=())
    source = {"kind": "database", "connection": "/Users/steve/pg.dst", "query": "SELECT 1 AS k"}
    running.node.jobs.define_job(
        "/Users/steve/pg.imp", JobKind.IMPORT, {"source": source, "schema": SCHEMA}, steve
    )
    started = running.call(steve, "POST", "/api/job-execution/Users/steve/pg.imp/trigger")
    run = wait_terminal(running.node, started.json()["job-execution-id"])
    assert run.status is JobStatus.ERROR
    details = running.call(steve, "GET", f"/rest/job-execution/job-details/{run.id}").json()
    assert details["failure"]["message"] == (
        "source: connection '/Users/steve/pg.dst' carries no user and password of its own;"
        " only an ADMIN's connection may use the server's own login"
    )
