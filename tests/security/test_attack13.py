"""Thirteenth attack (eleventh session): bases, the per-user cap, the set-aside.

docs/security.md, "Thirteenth attack".
"""

from __future__ import annotations

from pathlib import Path

import pytest

from datamill.domain.status import JobStatus
from tests.security.conftest import Actors
from tests.security.test_attack8 import settings as settings  # the operator's root around home
from tests.security.test_attack8 import steve as steve  # location.define, connection.define
from tests.security.test_attack10 import SCHEMA, _run
from tests.security.test_attack12 import _download, _others


@pytest.mark.parametrize("gone", ["deleted", "re-pointed away"])
def test_a_location_carved_from_a_share_ends_when_the_share_is_made_again_private(
    running: Actors, steve: str, tmp_path: Path, gone: str
) -> None:
    actors = running
    # steve carved a location out of admin's shared `team.loc` (recorded as its
    # base). admin then deleted `team.loc` (or re-pointed it elsewhere) and made
    # a new private location on the same folder: steve may no longer make a
    # location there, but his old one went on reading it, the new secret too
    # (seen on a real server with SQLite and PostgreSQL metadata): the re-check
    # counted only its bases, and the new location is none.
    team = tmp_path / "team"
    body = {"path": "/Connections/team.loc", "folder": str(team)}
    made = actors.call("admin", "POST", "/rest/location", body)
    assert made.status_code == 200, made.text
    _others(actors, "/Connections/team.loc", readable=True, writable=True)
    (team / "secret.csv").write_text("k\nshared\n")
    carved = {"path": "/Users/steve/t.loc", "folder": str(team)}
    assert actors.call(steve, "POST", "/rest/location", carved).status_code == 200
    source = {"kind": "csv", "location": "/Users/steve/t.loc", "path": "secret.csv"}
    imported = {"path": "/Users/steve/t.imp", "source": source, "schema": SCHEMA}
    assert actors.call(steve, "POST", "/rest/import-job", imported).status_code == 200
    assert _run(actors, steve, "/Users/steve/t.imp") is JobStatus.COMPLETED
    url = f"/rest/location/{made.json()['id']}"
    if gone == "deleted":
        assert actors.call("admin", "DELETE", url).status_code == 200
    else:
        moved = body | {"folder": str(tmp_path / "elsewhere")}
        assert actors.call("admin", "PUT", url, moved).status_code == 200
    private = {"path": "/Connections/team2.loc", "folder": str(team)}
    assert actors.call("admin", "POST", "/rest/location", private).status_code == 200
    (team / "secret.csv").write_text("k\nadmin's alone\n")
    again = carved | {"path": "/Users/steve/t2.loc"}
    assert actors.call(steve, "POST", "/rest/location", again).status_code == 400
    assert _run(actors, steve, "/Users/steve/t.imp") is JobStatus.ERROR
    assert _download(actors, steve, "/Users/steve/t.imp").splitlines() == ['"k"', '"shared"']
    resaved = imported | {"path": "/Users/steve/t3.imp"}
    refused = actors.call(steve, "POST", "/rest/import-job", resaved)
    assert refused.status_code == 400, refused.text
    assert refused.json()["reason"] == (
        "source: location '/Users/steve/t.loc' does not exist or you may not read from it"
    )
