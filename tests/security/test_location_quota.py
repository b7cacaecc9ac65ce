"""One user's locations and connections are bounded (eleventh attack, "Left").

Every save and run of a file job, and every location made, looks at every
location: steve's 2,000 made alice's import save take 0.4-1.2 s instead of
0.29 s and its run 1.0-1.7 s (seen on a real server, docs/security.md).
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from datamill.settings import Settings
from tests.security.conftest import Actors
from tests.security.test_attack8 import steve as steve  # location.define, connection.define


@pytest.fixture
def settings(settings: Settings, tmp_path: Path) -> Settings:
    """The usual node, the operator's root around its home, and room for three entries."""
    return Settings(
        **settings.model_dump(exclude_unset=True),
        source_roots=[tmp_path],
        sink_roots=[tmp_path],
        max_locations_per_user=3,
    )


def _make(actors: Actors, user: str, route: str, name: str, tmp_path: Path) -> httpx.Response:
    if route == "/rest/location":
        body = {"path": f"/Users/{user}/{name}.loc", "folder": str(tmp_path / "area" / name)}
    else:
        body = {"path": f"/Users/{user}/{name}.dst", "url": f"sqlite:///{tmp_path}/area/{name}.db"}
    return actors.call(user, "POST", route, body)


def test_a_user_owns_at_most_the_locations_and_connections_the_operator_allows(
    actors: Actors, steve: str, tmp_path: Path
) -> None:
    (tmp_path / "area").mkdir()
    # steve's private location is one of his three.
    assert _make(actors, steve, "/rest/location", "a", tmp_path).status_code == 200
    assert _make(actors, steve, "/rest/connection", "b", tmp_path).status_code == 200
    for route, name in (("/rest/location", "c"), ("/rest/connection", "d")):
        refused = _make(actors, steve, route, name, tmp_path)
        assert refused.status_code == 409, refused.text
        assert refused.json()["reason"] == (
            "you own 3 locations and connections, the most one user may"
            " (max_locations_per_user); delete one first"
        )
    assert not (tmp_path / "area" / "c").exists()
    for kind in ("location", "connection"):
        listed = actors.call(steve, "GET", f"/rest/{kind}").json()
        assert (
            sorted(entry["path"] for entry in listed if entry["owner"] == steve)
            == {
                "location": [f"/Users/{steve}/a.loc", f"/Users/{steve}/files.loc"],
                "connection": [f"/Users/{steve}/b.dst"],
            }[kind]
        )
    # An ADMIN has no bound.
    for index in range(4):
        made = _make(actors, "admin", "/rest/location", f"admin{index}", tmp_path)
        assert made.status_code == 200, made.text
    # Deleting one makes room for one.
    found = actors.call(steve, "GET", f"/api/filesystem/files/Users/{steve}/a.loc").json()
    assert actors.call(steve, "DELETE", f"/rest/location/{found['id']}").status_code == 200
    assert _make(actors, steve, "/rest/location", "c", tmp_path).status_code == 200
    assert _make(actors, steve, "/rest/location", "e", tmp_path).status_code == 409
