"""Locations and connections re-pointed after they were made (tenth session).

A run checks again that a location's (or SQLite connection's) definer may
still give it out, against the locations that were around it when it was
made (docs/security.md, "Ninth attack" and "Tenth attack"). These tests
re-point an entry made earlier, which the entry id alone did not order.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from datamill.domain.status import JobStatus
from tests.helpers import password_hash, wait_terminal
from tests.security.conftest import PASSWORD, Actors
from tests.security.test_attack8 import settings as settings  # the operator's root around home
from tests.security.test_attack8 import steve as steve  # location.define, connection.define

SCHEMA = [{"name": "k", "type": "VARCHAR"}]


def _run(actors: Actors, user: str, path: str) -> tuple[JobStatus, str | None]:
    started = actors.call(user, "POST", f"/api/job-execution{path}/trigger")
    assert started.status_code == 200, started.text
    ended = wait_terminal(actors.node, started.json()["job-execution-id"])
    return ended.status, ended.error_message


def _shared_team(actors: Actors, team: Path) -> tuple[int, str]:
    """admin's /Connections/team.loc on `team`, shared with everyone to read and write:
    its id and the URL of its flags for others."""
    body = {"path": "/Connections/team.loc", "folder": str(team)}
    shared = actors.call("admin", "POST", "/rest/location", body)
    assert shared.status_code == 200, shared.text
    share = f"/api/filesystem/files/{shared.json()['id']}/permission/others"
    flags = {"readable": True, "writable": True, "executable": False}
    assert actors.call("admin", "PUT", share, flags).status_code == 200
    return int(shared.json()["id"]), share


def _revoke(actors: Actors, share: str) -> None:
    flags = {"readable": False, "writable": False, "executable": False}
    assert actors.call("admin", "PUT", share, flags).status_code == 200


def test_an_older_entry_re_pointed_into_a_shared_location_goes_with_the_share(
    running: Actors, steve: str, tmp_path: Path
) -> None:
    actors = running
    # steve's location and SQLite connection were made before admin's
    # team.loc. While admin shared it, steve re-pointed them into it; when
    # admin revoked the share, the run's re-check skipped team.loc as "made
    # after" steve's entries, and they still read admin's folder.
    own = tmp_path / "steve-area"
    own.mkdir()
    sqlite3.connect(own / "y.db").executescript("CREATE TABLE t (k TEXT);")
    made = {
        "/rest/location": {"path": "/Users/steve/t.loc", "folder": str(own)},
        "/rest/connection": {"path": "/Users/steve/t.dst", "url": f"sqlite:///{own / 'y.db'}"},
    }
    ids = {}
    for route, body in made.items():
        answer = actors.call(steve, "POST", route, body)
        assert answer.status_code == 200, answer.text
        ids[route] = answer.json()["id"]
    team = tmp_path / "team"
    team.mkdir()
    (team / "x.csv").write_text("k\nadmin's\n")
    sqlite3.connect(team / "x.db").executescript(
        "CREATE TABLE t (k TEXT); INSERT INTO t VALUES ('a');"
    )
    _, share = _shared_team(actors, team)
    moved = {
        "/rest/location": {"folder": str(team)},
        "/rest/connection": {"url": f"sqlite:///{team / 'x.db'}"},
    }
    for route, body in moved.items():
        answer = actors.call(steve, "PUT", f"{route}/{ids[route]}", body)
        assert answer.status_code == 200, answer.text
    csv = {"kind": "csv", "location": "/Users/steve/t.loc", "path": "x.csv"}
    table = {"kind": "database", "connection": "/Users/steve/t.dst", "table": "t"}
    imports = {"/Users/steve/csv.imp": csv, "/Users/steve/db.imp": table}
    for path, source in imports.items():
        imported = {"path": path, "source": source, "schema": SCHEMA}
        answer = actors.call(steve, "POST", "/rest/import-job", imported)
        assert answer.status_code == 200, answer.text
        assert _run(actors, steve, path)[0] is JobStatus.COMPLETED, path
    _revoke(actors, share)
    refused = "does not exist or you may not read from it"
    assert _run(actors, steve, "/Users/steve/csv.imp") == (
        JobStatus.ERROR,
        f"source: location '/Users/steve/t.loc' {refused}",
    )
    assert _run(actors, steve, "/Users/steve/db.imp") == (
        JobStatus.ERROR,
        f"source: connection '/Users/steve/t.dst' {refused}",
    )


def test_an_older_location_re_pointed_around_anothers_takes_none_of_it_away(
    running: Actors, steve: str, tmp_path: Path
) -> None:
    actors = running
    # A location made later around another's does not end it (tenth attack);
    # one made *earlier* and re-pointed around it did: steve's old location,
    # re-pointed on the area around stan's, ended stan's at its next run.
    actors.node.store.users.create("stan", password_hash(PASSWORD), roles=("STEWARD",))
    area = tmp_path / "area"
    for name in ("steve", "stan"):
        (area / name).mkdir(parents=True)
    (area / "stan" / "s.csv").write_text("k\nstan's\n")
    body = {"path": "/Users/steve/a.loc", "folder": str(area / "steve")}
    older = actors.call(steve, "POST", "/rest/location", body)
    assert older.status_code == 200, older.text
    body = {"path": "/Users/stan/s.loc", "folder": str(area / "stan")}
    assert actors.call("stan", "POST", "/rest/location", body).status_code == 200
    source = {"kind": "csv", "location": "/Users/stan/s.loc", "path": "s.csv"}
    imported = {"path": "/Users/stan/s.imp", "source": source, "schema": SCHEMA}
    assert actors.call("stan", "POST", "/rest/import-job", imported).status_code == 200
    moved = actors.call(steve, "PUT", f"/rest/location/{older.json()['id']}", {"folder": str(area)})
    assert moved.status_code == 200, moved.text
    assert _run(actors, "stan", "/Users/stan/s.imp") == (JobStatus.COMPLETED, None)


def test_a_location_re_pointed_onto_its_own_folder_still_ends_what_was_carved_from_it(
    running: Actors, steve: str, tmp_path: Path
) -> None:
    actors = running
    # admin shared team.loc writable; steve carved his own location from it,
    # then re-pointed team.loc onto its own folder. Counted by when each was
    # last pointed, team.loc would now be "newer" than his, and admin's
    # revoking the share would no longer end it.
    team = tmp_path / "team"
    (team / "sub").mkdir(parents=True)
    (team / "sub" / "x.csv").write_text("k\nadmin's\n")
    team_id, share = _shared_team(actors, team)
    body = {"path": "/Users/steve/t.loc", "folder": str(team / "sub")}
    assert actors.call(steve, "POST", "/rest/location", body).status_code == 200
    again = actors.call(steve, "PUT", f"/rest/location/{team_id}", {"folder": str(team)})
    assert again.status_code == 200, again.text
    source = {"kind": "csv", "location": "/Users/steve/t.loc", "path": "x.csv"}
    imported = {"path": "/Users/steve/x.imp", "source": source, "schema": SCHEMA}
    assert actors.call(steve, "POST", "/rest/import-job", imported).status_code == 200
    _revoke(actors, share)
    assert _run(actors, steve, "/Users/steve/x.imp") == (
        JobStatus.ERROR,
        "source: location '/Users/steve/t.loc' does not exist or you may not read from it",
    )
