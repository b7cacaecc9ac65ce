"""Locations and connections (services/resources.py): cases its mutants showed untested."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from datamill.api.app import create_app
from datamill.bootstrap import open_node
from datamill.settings import Settings
from tests.helpers import password_hash
from tests.security.conftest import Actors, auth


def test_a_location_update_moves_its_folder(actors: Actors) -> None:
    files = Path(actors.node.settings.resolved_source_roots[0])
    for name in ("a", "b"):
        (files / name).mkdir(parents=True, exist_ok=True)
    made = actors.call(
        "admin", "POST", "/rest/location", {"path": "/Connections/l", "folder": str(files / "a")}
    )
    assert made.status_code == 200, made.text
    url = f"/rest/location/{made.json()['id']}"
    changed = actors.call("admin", "PUT", url, {"folder": str(files / "b")})
    assert changed.status_code == 200, changed.text
    assert actors.call("admin", "GET", url).json()["folder"] == str(files / "b")


def test_no_sqlite_connection_inside_datamills_data_even_within_a_file_root(
    tmp_path: Path, database_url: str
) -> None:
    """An operator's file root may hold the data root; a connection still may not point there."""
    home = tmp_path / "home"
    settings = Settings(home=home, database_url=database_url, source_roots=[home])
    node = open_node(settings)
    try:
        node.store.users.create("admin", password_hash("pw"), roles=("ADMIN",))
        with TestClient(create_app(settings, node.jobs)) as client:
            target = settings.resolved_data_root / "x.db"
            made = client.post(
                "/rest/connection",
                json={"path": "/Connections/inside.dst", "url": f"sqlite:///{target}"},
                headers=auth("admin"),
            )
            assert made.status_code == 400, made.text
            assert made.json()["reason"] == (
                f"connection database file {str(target)!r} is inside Datamill's data"
            )
    finally:
        node.store.close()
