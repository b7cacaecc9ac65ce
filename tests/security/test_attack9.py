"""Ninth attack (eighth session, second pass): what a location or connection definer gives out.

docs/security.md, "Ninth attack (eighth session, second pass)".
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from datamill.domain.status import JobKind, JobStatus
from tests.helpers import wait_terminal
from tests.security.conftest import Actors
from tests.security.test_attack8 import settings as settings  # the operator's root around home
from tests.security.test_attack8 import steve as steve  # location.define, connection.define

SCHEMA = [{"name": "k", "type": "VARCHAR"}]


def _read_only(actors: Actors, folder: Path) -> None:
    """admin's location on `folder`, shared with everyone for reading only."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "x.csv").write_text("k\nadmin's\n")
    sqlite3.connect(folder / "x.db").executescript("CREATE TABLE t (k TEXT);")
    body = {"path": "/Connections/ro.loc", "folder": str(folder)}
    made = actors.call("admin", "POST", "/rest/location", body)
    assert made.status_code == 200, made.text
    url = f"/api/filesystem/files/{made.json()['id']}/permission/others"
    flags = {"readable": True, "writable": False, "executable": False}
    assert actors.call("admin", "PUT", url, flags).status_code == 200


def test_a_definer_turns_no_read_only_share_into_a_location_she_may_write(
    running: Actors, steve: str, tmp_path: Path
) -> None:
    actors = running
    # steve may read admin's ro.loc, not write it; his own location on the
    # same folder (or one inside it) was his, and the innermost location
    # decides (N6): his export replaced admin's x.csv (seen on a real server).
    shared = tmp_path / "ro"
    _read_only(actors, shared)
    sink = {"kind": "csv", "location": "/Connections/ro.loc", "path": "x.csv"}
    (tmp_path / "users" / "steve" / "in.csv").write_text("k\nsteve's\n")
    mine = {"kind": "csv", "location": "/Users/steve/files.loc", "path": "in.csv"}
    actors.node.jobs.define_job(
        "/Users/steve/in.imp", JobKind.IMPORT, {"source": mine, "schema": SCHEMA}, steve
    )
    export = {"path": "/Users/steve/x.exp", "source": {"importJob": "/Users/steve/in.imp"}}
    refused = actors.call(steve, "POST", "/rest/export-job", {**export, "sink": sink})
    assert refused.status_code == 400, refused.text
    for folder in (shared, shared / "sub"):
        body = {"path": "/Users/steve/w.loc", "folder": str(folder)}
        answer = actors.call(steve, "POST", "/rest/location", body)
        assert answer.status_code == 400, answer.text
        assert answer.json()["reason"] == (
            f"folder: {str(folder)!r} lies in a location you may not read,"
            " or in Datamill's own files"
        )
    body = {"path": "/Users/steve/x.dst", "url": f"sqlite:///{shared / 'x.db'}"}
    answer = actors.call(steve, "POST", "/rest/connection", body)
    assert answer.status_code == 400, answer.text
    assert (shared / "x.csv").read_text() == "k\nadmin's\n"
    # Reading it stays his: through the shared location itself.
    imported = {"source": {"kind": "csv", "location": "/Connections/ro.loc", "path": "x.csv"}}
    actors.node.jobs.define_job(
        "/Users/steve/ro.imp", JobKind.IMPORT, {**imported, "schema": SCHEMA}, steve
    )
    started = actors.call(steve, "POST", "/api/job-execution/Users/steve/ro.imp/trigger")
    assert started.status_code == 200, started.text
    ended = wait_terminal(actors.node, started.json()["job-execution-id"])
    assert ended.status is JobStatus.COMPLETED


def test_a_definers_location_goes_with_the_share_it_was_carved_from(
    running: Actors, steve: str, tmp_path: Path
) -> None:
    actors = running
    # admin shared team.loc with everyone (read and write); steve made his
    # own location on its folder, and a SQLite connection on its x.db. When
    # admin revoked the share, the one named decides (N6): steve's location
    # and connection still read and wrote admin's folder (seen on a real server).
    team = tmp_path / "team"
    team.mkdir()
    (team / "x.csv").write_text("k\nadmin's\n")
    sqlite3.connect(team / "x.db").executescript(
        "CREATE TABLE t (k TEXT); INSERT INTO t VALUES ('a');"
    )
    made = actors.call(
        "admin", "POST", "/rest/location", {"path": "/Connections/team.loc", "folder": str(team)}
    )
    assert made.status_code == 200, made.text
    share = f"/api/filesystem/files/{made.json()['id']}/permission/others"
    flags = {"readable": True, "writable": True, "executable": False}
    assert actors.call("admin", "PUT", share, flags).status_code == 200
    body = {"path": "/Users/steve/t.loc", "folder": str(team)}
    assert actors.call(steve, "POST", "/rest/location", body).status_code == 200
    body = {"path": "/Users/steve/t.dst", "url": f"sqlite:///{team / 'x.db'}"}
    assert actors.call(steve, "POST", "/rest/connection", body).status_code == 200
    sources = {
        "/Users/steve/csv.imp": {"kind": "csv", "location": "/Users/steve/t.loc", "path": "x.csv"},
        "/Users/steve/db.imp": {
            "kind": "database",
            "connection": "/Users/steve/t.dst",
            "table": "t",
        },
    }
    for path, source in sources.items():
        imported = {"path": path, "source": source, "schema": SCHEMA}
        answer = actors.call(steve, "POST", "/rest/import-job", imported)
        assert answer.status_code == 200, answer.text
    flags = {"readable": False, "writable": False, "executable": False}
    assert actors.call("admin", "PUT", share, flags).status_code == 200
    for path, source in sources.items():
        started = actors.call(steve, "POST", f"/api/job-execution{path}/trigger")
        assert started.status_code == 200, started.text
        ended = wait_terminal(actors.node, started.json()["job-execution-id"])
        assert ended.status is JobStatus.ERROR, path
        noun = "location" if "location" in source else "connection"
        reference = source.get("location") or source.get("connection")
        assert ended.error_message == (
            f"source: {noun} {reference!r} does not exist or you may not read from it"
        ), path
