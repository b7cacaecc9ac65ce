"""Connections and their URLs (services/resources.py `_url`, `create`): untested cases.

docs/testing.md, "Surviving mutants", services/resources.py (eleventh session).
"""

from __future__ import annotations

import pytest

from tests.security.conftest import Actors
from tests.security.test_attack8 import steve as steve  # location.define, connection.define


def test_a_postgresql_database_name_is_no_file_wherever_the_server_runs(
    actors: Actors, steve: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An operator who starts the server in its home folder: `data` there is
    # Datamill's data root. A PostgreSQL database called `data` is no file, so
    # neither an ADMIN's nor a steward's connection to it may be refused as
    # one lying in Datamill's own files.
    monkeypatch.chdir(actors.node.settings.resolved_home)
    for user, path in (("admin", "/Connections/pg.dst"), (steve, "/Users/steve/pg.dst")):
        body = {"path": path, "url": "postgresql://reader:pw@127.0.0.1:5432/data"}
        made = actors.call(user, "POST", "/rest/connection", body)
        assert made.status_code == 200, (user, made.text)
        shown = actors.call(user, "GET", f"/rest/connection/{made.json()['id']}").json()
        assert shown["url"] == "postgresql://reader:***@127.0.0.1:5432/data", shown


def test_a_sqlite_url_without_a_file_is_refused_as_such_wherever_the_server_runs(
    actors: Actors, steve: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The server's working folder is no part of a URL: `sqlite://` names no
    # file, whatever lies around the folder the server was started in.
    monkeypatch.chdir(actors.node.settings.resolved_data_root)
    body = {"path": "/Users/steve/mem.dst", "url": "sqlite://"}
    refused = actors.call(steve, "POST", "/rest/connection", body)
    assert (refused.status_code, refused.json()["reason"]) == (
        400,
        "connection SQLite URL 'sqlite://' must name a file",
    )


def test_a_definer_is_told_a_folder_she_may_not_read_does_not_exist_nor_write(
    actors: Actors, steve: str
) -> None:
    # A missing folder and one she may not read (admin's) get the same 404
    # naming the folder, for a location and a connection alike.
    made = actors.call("admin", "POST", "/api/filesystem/folders", {"name": "Private"})
    assert made.status_code in (200, 201), made.text
    hidden = f"/api/filesystem/folders/{made.json()['id']}/permission/others"
    assert actors.call("admin", "PUT", hidden, {"readable": False}).status_code == 200
    for folder in ("/NoSuch", "/Private"):
        for kind, body in (("location", {"folder": "/x"}), ("connection", {"url": "sqlite://"})):
            answer = actors.call(steve, "POST", f"/rest/{kind}", {"path": f"{folder}/c", **body})
            assert (answer.status_code, answer.json()) == (
                404,
                {"status": "failure", "reason": f"folder {folder} does not exist"},
            ), (folder, kind)
    # One she may read but not write: refused as such, naming it.
    assert actors.call("admin", "PUT", hidden, {"readable": True}).status_code == 200
    answer = actors.call(steve, "POST", "/rest/connection", {"path": "/Private/c", "url": "x"})
    assert (answer.status_code, answer.json()["reason"]) == (
        403,
        "you are not allowed to change /Private",
    )
