"""Eighth-session attack: an ordinary user against what an operator's root may hold.

docs/security.md, "Eighth-session attack".
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from datamill.domain.status import JobKind
from datamill.services.sessions import SECRET_FILE
from datamill.settings import Settings
from tests.helpers import password_hash
from tests.security.conftest import PASSWORD, Actors
from tests.security.test_attack7 import around_home as around_home  # bob's h.loc on the home

SCHEMA = [{"name": "k", "type": "VARCHAR"}]


@pytest.fixture
def settings(settings: Settings, tmp_path: Path) -> Settings:
    """The usual node, with the operator's file root around its home (as in the seventh session)."""
    return Settings(
        **settings.model_dump(exclude_unset=True), source_roots=[tmp_path], sink_roots=[tmp_path]
    )


def test_the_session_key_in_the_home_is_no_source_or_sink(
    actors: Actors, around_home: Path
) -> None:
    # The key every session cookie and form token is signed with lay in the
    # home beside the (hidden) database and data root: bob's import read it
    # (one line of hex, `header: false`), and his export could replace it, so
    # the next start signed with his key or, with text that is not hex, failed.
    assert (around_home / SECRET_FILE).is_file()
    path = SECRET_FILE
    source = {"kind": "csv", "location": "/Connections/h.loc", "path": path, "header": False}
    imported = {"path": "/Users/bob/k.imp", "source": source, "schema": SCHEMA}
    answer = actors.call("bob", "POST", "/rest/import-job", imported)
    assert answer.status_code == 400, answer.text
    assert answer.json()["reason"] == f"source: {path!r} is not inside a location you may read from"
    (around_home / "in.csv").write_text("k\nx\n")
    mine = {"kind": "csv", "location": "/Connections/h.loc", "path": "in.csv"}
    actors.node.jobs.define_job(
        "/Users/bob/in.imp", JobKind.IMPORT, {"source": mine, "schema": SCHEMA}, "bob"
    )
    sink = {"kind": "csv", "location": "/Connections/h.loc", "path": path, "header": False}
    export = {
        "path": "/Users/bob/x.exp",
        "source": {"importJob": "/Users/bob/in.imp"},
        "sink": sink,
    }
    answer = actors.call("bob", "POST", "/rest/export-job", export)
    assert answer.status_code == 400, answer.text
    assert answer.json()["reason"] == f"sink: {path!r} is not inside a location you may write to"
    # bob's own file beside the key is still his.
    export["sink"] = {**sink, "path": "mine.csv"}
    assert actors.call("bob", "POST", "/rest/export-job", export).status_code == 200


STEWARD = ["job.read", "job.run", "job.define", "data.read", "location.define", "connection.define"]


@pytest.fixture
def steve(actors: Actors) -> str:
    """steve, who may define locations and connections (the matrix's STEWARD role), not ADMIN."""
    role = {"name": "STEWARD", "capabilities": STEWARD}
    assert actors.call("admin", "POST", "/rest/user-management/roles", role).status_code == 200
    actors.node.store.users.create("steve", password_hash(PASSWORD), roles=("STEWARD",))
    return "steve"


def _given_out(tmp_path: Path, actors: Actors) -> dict[str, Path]:
    """Folders steve must not hand out, each holding a file: whose they are."""
    settings = actors.node.settings
    salaries = tmp_path / "salaries"
    made = actors.call(
        "admin", "POST", "/rest/location", {"path": "/Connections/s.loc", "folder": str(salaries)}
    )
    assert made.status_code == 200, made.text
    folders = {
        "bob's private folder": tmp_path / "users" / "bob",
        "a folder in it": tmp_path / "users" / "bob" / "sub",
        "the private folder of a user still to come": tmp_path / "users" / "zed",
        "admin's private location": salaries,
        "a folder in the data root": settings.resolved_data_root / "1",
    }
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "x.csv").write_text("k\nsecret\n")
    return folders


def test_a_location_definer_gives_out_no_folder_she_may_not_read(
    actors: Actors, steve: str, tmp_path: Path
) -> None:
    # A location on (or in) bob's private folder was steve's own, and the
    # innermost location decides (N6): steve imported bob's files (seen on a
    # real server, as a workbook-free CSV import). Likewise admin's private
    # location, the folder of a user created later, and a published result.
    for why, folder in _given_out(tmp_path, actors).items():
        body = {"path": "/Users/steve/l.loc", "folder": str(folder)}
        answer = actors.call(steve, "POST", "/rest/location", body)
        assert answer.status_code == 400, why
        assert answer.json()["reason"] == (
            f"folder: {str(folder)!r} lies in a location you may not read,"
            " or in Datamill's own files"
        ), why
    # An operator's link to bob's folder leads there too; the answer names the link only.
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "users" / "bob")
    body = {"path": "/Users/steve/ln.loc", "folder": str(link)}
    answer = actors.call(steve, "POST", "/rest/location", body)
    assert answer.status_code == 400, answer.text
    assert answer.json()["reason"].startswith(f"folder: {str(link)!r} lies in a location")
    # Nor by pointing a location of his own there; the root and his own folder are his to give.
    for folder in (tmp_path / "shared", tmp_path / "users" / "steve" / "in"):
        body = {"path": f"/Users/steve/{folder.name}.loc", "folder": str(folder)}
        made = actors.call(steve, "POST", "/rest/location", body)
        assert made.status_code == 200, made.text
    url = f"/rest/location/{made.json()['id']}"
    moved = actors.call(steve, "PUT", url, {"folder": str(tmp_path / "users" / "bob")})
    assert moved.status_code == 400, moved.text
    shown = actors.call(steve, "GET", url).json()["folder"]
    assert shown == str(tmp_path / "users" / "steve" / "in")
    # ADMIN may still make one in bob's folder (the data root stays Datamill's).
    body = {"path": "/Connections/b.loc", "folder": str(tmp_path / "users" / "bob" / "sub")}
    assert actors.call("admin", "POST", "/rest/location", body).status_code == 200


def test_a_connection_definer_gives_out_no_sqlite_file_she_may_not_read(
    actors: Actors, steve: str, tmp_path: Path
) -> None:
    # The same for a SQLite connection's file: steve's connection on bob's
    # private x.db read its tables (seen on a real server).
    private = tmp_path / "users" / "bob" / "x.db"
    sqlite3.connect(private).close()
    body = {"path": "/Users/steve/b.dst", "url": f"sqlite:///{private}"}
    answer = actors.call(steve, "POST", "/rest/connection", body)
    assert answer.status_code == 400, answer.text
    assert answer.json()["reason"] == (
        f"connection database file: {str(private)!r} lies in a location you may not read,"
        " or in Datamill's own files"
    )
    own = tmp_path / "users" / "steve" / "x.db"
    sqlite3.connect(own).close()
    made = actors.call(steve, "POST", "/rest/connection", {**body, "url": f"sqlite:///{own}"})
    assert made.status_code == 200, made.text
    url = f"/rest/connection/{made.json()['id']}"
    moved = actors.call(steve, "PUT", url, body)
    assert moved.status_code == 400, moved.text


def test_a_location_folder_that_cannot_be_made_is_refused_not_a_500(
    actors: Actors, steve: str, tmp_path: Path
) -> None:
    # A file in the way, a file as a parent, a name too long: makedirs raised
    # and the answer was a 500 (`internal error: FileExistsError`), for ADMIN
    # and definers alike, on create and on update.
    mine = tmp_path / "users" / "steve"
    (mine / "afile").write_text("x")
    made = actors.call(
        steve, "POST", "/rest/location", {"path": "/Users/steve/ok.loc", "folder": str(mine / "ok")}
    )
    assert made.status_code == 200, made.text
    for folder in (mine / "afile", mine / "afile" / "sub", mine / ("a" * 300)):
        reason = (
            f"folder: {str(folder)!r} cannot be made: a file is in the way or a name is too long"
        )
        for method, url in (
            ("POST", "/rest/location"),
            ("PUT", f"/rest/location/{made.json()['id']}"),
        ):
            body = {"path": "/Users/steve/x.loc", "folder": str(folder)}
            answer = actors.call(steve, method, url, body)
            assert (answer.status_code, answer.json()["reason"]) == (409, reason), method
    shown = actors.call(steve, "GET", f"/rest/location/{made.json()['id']}").json()["folder"]
    assert shown == str(mine / "ok")
