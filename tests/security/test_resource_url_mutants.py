"""Connection URLs (services/resources.py `_url`): cases its mutants showed untested.

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
