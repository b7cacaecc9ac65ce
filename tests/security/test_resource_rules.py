"""Locations and connections (services/resources.py): cases its mutants showed untested."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from datamill.api.app import create_app
from datamill.bootstrap import open_node
from datamill.settings import Settings
from datamill.store import locations as loc_store
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


def _answer(response: object) -> tuple[int, object]:
    return response.status_code, response.json()  # type: ignore[attr-defined]


def _failure(status: int, reason: str) -> tuple[int, object]:
    return status, {"status": "failure", "reason": reason}


def test_location_and_connection_refusals_name_what_is_wrong(actors: Actors) -> None:
    # The matrix compares a hidden entry with a missing one, so a changed text
    # changes both alike; these answers are the texts a client shows.
    files = Path(actors.node.settings.resolved_source_roots[0])
    files.mkdir(parents=True, exist_ok=True)
    cases = [
        ("admin", "POST", "/rest/location", {"folder": str(files)}),
        ("admin", "POST", "/rest/location", {"path": "  ", "folder": str(files)}),
        ("eve", "POST", "/rest/location", {"path": "/Users/eve/l", "folder": str(files)}),
        ("eve", "POST", "/rest/connection", {"path": "/Users/eve/c", "url": "sqlite:///x.db"}),
        ("admin", "GET", "/rest/location/987654", None),
        ("admin", "GET", "/rest/connection/987654", None),
        ("admin", "POST", "/rest/location", {"path": "/NoSuch/l", "folder": str(files)}),
        ("admin", "POST", "/rest/connection", {"path": "/Connections/c", "url": "no url"}),
        ("admin", "POST", "/rest/connection", {"path": "c", "url": "postgresql://u%01@h/x"}),
    ]
    expected = [
        _failure(400, "path: required, a non-empty string"),
        _failure(400, "path: required, a non-empty string"),
        _failure(403, "your roles do not allow defining locations"),
        _failure(403, "your roles do not allow defining connections"),
        _failure(404, "Entity of type 'location' with id '987654' not found."),
        _failure(404, "Entity of type 'connection' with id '987654' not found."),
        _failure(404, "folder /NoSuch does not exist"),
        _failure(400, "url: '<invalid URL>' is not a SQLAlchemy URL"),  # never echoed
        _failure(400, "url URL: the user must not hold control characters"),
    ]
    answers = [_answer(actors.call(*case)) for case in cases]
    assert answers == expected


def test_a_location_folder_is_absolute_without_parent_steps_and_inside_a_root(
    actors: Actors,
) -> None:
    files = Path(actors.node.settings.resolved_source_roots[0])
    (files / "a").mkdir(parents=True, exist_ok=True)
    sibling = f"{files}-other"  # shares the root's name as a prefix, yet is outside it
    Path(sibling).mkdir(exist_ok=True)
    refused = {
        "relative/a": "folder: 'relative/a' must be an absolute path without '..'",
        f"{files}/a/../a": f"folder: '{files}/a/../a' must be an absolute path without '..'",
        sibling: f"folder: '{sibling}' is outside the operator's file roots",
        "/": "folder: '/' is outside the operator's file roots",
    }
    for folder, reason in refused.items():
        body = {"path": "/Connections/l", "folder": folder}
        assert _answer(actors.call("admin", "POST", "/rest/location", body)) == _failure(
            400, reason
        ), folder
    # The root itself and a folder below it are fine, and stored resolved.
    for name, folder in (("root", str(files)), ("below", f"{files}/a/")):
        made = actors.call("admin", "POST", "/rest/location", {"path": name, "folder": folder})
        assert made.status_code == 200, made.text
        shown = actors.call("admin", "GET", f"/rest/location/{made.json()['id']}").json()
        assert (shown["path"], shown["folder"]) == (
            f"/Connections/{name}.loc",
            folder.rstrip("/"),
        ), shown


def _stored_password(actors: Actors, entry_id: int) -> str | None:
    with actors.node.store.db.read() as conn:
        stored = loc_store.get_connection(conn, entry_id)
    assert stored is not None
    return stored.password


def test_a_connection_keeps_its_password_for_either_mask_and_takes_a_new_one(
    actors: Actors,
) -> None:
    made = actors.call(
        "admin",
        "POST",
        "/rest/connection",
        {"path": "/Connections/wh.dst", "url": "postgresql://reader:first@192.0.2.1:5432/wh"},
    )
    assert made.status_code == 200, made.text
    url = f"/rest/connection/{made.json()['id']}"
    assert _stored_password(actors, made.json()["id"]) == "first"
    # The URL shown back (`***` where the password goes), alone or with either mask.
    masked = "postgresql://reader:***@192.0.2.1:5432/wh"
    for body in (
        {"url": masked},
        {"url": masked, "password": "***"},
        {"url": "postgresql://reader@192.0.2.1:5432/wh", "password": "***"},
        {"url": "postgresql://reader:********@192.0.2.1:5432/wh"},
    ):
        kept = actors.call("admin", "PUT", url, body)
        assert kept.status_code == 200, (body, kept.text)
        assert _stored_password(actors, made.json()["id"]) == "first", body
    # A password written in the URL replaces it (and is not kept in the URL).
    changed = actors.call("admin", "PUT", url, {"url": "postgresql://reader:second@192.0.2.1/wh"})
    assert changed.status_code == 200, changed.text
    assert _stored_password(actors, made.json()["id"]) == "second"
    shown = actors.call("admin", "GET", url).json()
    assert shown["url"] == "postgresql://reader:***@192.0.2.1/wh", shown
    # A shown URL copied into a new connection carries no password: a mask is none.
    for name, copied in (("copy1", masked), ("copy2", shown["url"].replace("***", "********"))):
        again = actors.call("admin", "POST", "/rest/connection", {"path": name, "url": copied})
        assert again.status_code == 200, again.text
        assert _stored_password(actors, again.json()["id"]) is None, copied
        document = actors.call("admin", "GET", f"/rest/connection/{again.json()['id']}").json()
        assert "password" not in document and "***" not in document["url"], document


def test_a_sqlite_connection_may_name_a_file_a_run_will_create(actors: Actors) -> None:
    # An export may write a new SQLite file: only its folder must exist, in a root.
    files = Path(actors.node.settings.resolved_source_roots[0])
    files.mkdir(parents=True, exist_ok=True)
    target = files / "new.db"
    made = actors.call(
        "admin", "POST", "/rest/connection", {"path": "new", "url": f"sqlite:///{target}"}
    )
    assert made.status_code == 200, made.text
    shown = actors.call("admin", "GET", f"/rest/connection/{made.json()['id']}").json()
    assert (shown["path"], shown["url"]) == ("/Connections/new.dst", f"sqlite:///{target}")
    assert not target.exists()


@pytest.mark.parametrize("root", ["/", "filesX"])
def test_a_location_below_an_operator_root_however_the_root_is_spelled(
    tmp_path: Path, root: str
) -> None:
    """The root `/` itself, and a root whose name ends in a letter the prefix check strips."""
    folder = tmp_path / "filesX" / "a"
    folder.mkdir(parents=True)
    roots = [Path(root) if root == "/" else tmp_path / root]
    settings = Settings(
        home=tmp_path / "home",
        database_url=f"sqlite:///{tmp_path / 'meta.db'}",
        source_roots=roots,
        sink_roots=roots,
    )
    node = open_node(settings)
    try:
        node.store.users.create("admin", password_hash("pw"), roles=("ADMIN",))
        with TestClient(create_app(settings, node.jobs)) as client:
            made = client.post(
                "/rest/location",
                json={"path": "/Connections/below", "folder": str(folder)},
                headers=auth("admin"),
            )
            assert made.status_code == 200, made.text
            shown = client.get(f"/rest/location/{made.json()['id']}", headers=auth("admin"))
            assert shown.json()["folder"] == str(folder), shown.text
    finally:
        node.store.close()
