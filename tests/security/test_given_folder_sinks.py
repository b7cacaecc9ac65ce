"""Carving up a read-only share: enough outside the sink roots, not inside them.

services/locations.py `check_given_folder`: a definer's location lets her
write wherever a sink root allows it, so inside a sink root she needs WRITE
on the location around, elsewhere READ (check_given_folder 33 in docs/testing.md).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from datamill.settings import Settings
from tests.security.conftest import Actors
from tests.security.test_attack8 import steve as steve  # location.define, connection.define


@pytest.fixture
def settings(settings: Settings, tmp_path: Path) -> Settings:
    """Sources anywhere under tmp_path, sinks only under tmp_path/out."""
    (tmp_path / "out").mkdir()
    return Settings(
        **settings.model_dump(exclude_unset=True),
        source_roots=[tmp_path],
        sink_roots=[tmp_path / "out"],
    )


def _read_only_share(actors: Actors, path: str, folder: Path) -> None:
    (folder / "mine").mkdir(parents=True)
    made = actors.call("admin", "POST", "/rest/location", {"path": path, "folder": str(folder)})
    assert made.status_code == 200, made.text
    flags = f"/api/filesystem/files/{made.json()['id']}/permission/others"
    assert actors.call("admin", "PUT", flags, {"readable": True}).status_code == 200


def test_a_read_only_share_is_carved_up_outside_the_sink_roots_only(
    actors: Actors, steve: str, tmp_path: Path
) -> None:
    _read_only_share(actors, "/Connections/in.loc", tmp_path / "in")
    _read_only_share(actors, "/Connections/out.loc", tmp_path / "out" / "team")
    read = {"path": f"/Users/{steve}/in.loc", "folder": str(tmp_path / "in" / "mine")}
    made = actors.call(steve, "POST", "/rest/location", read)
    assert made.status_code == 200, made.text
    written = {"path": f"/Users/{steve}/out.loc", "folder": str(tmp_path / "out" / "team" / "mine")}
    refused = actors.call(steve, "POST", "/rest/location", written)
    assert refused.status_code == 400, refused.text
    assert "lies in a location you may not read" in refused.json()["reason"]
