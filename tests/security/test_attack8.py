"""Eighth-session attack: an ordinary user against what an operator's root may hold.

docs/security.md, "Eighth-session attack".
"""

from __future__ import annotations

from pathlib import Path

import pytest

from datamill.domain.status import JobKind
from datamill.services.sessions import SECRET_FILE
from datamill.settings import Settings
from tests.security.conftest import Actors
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
