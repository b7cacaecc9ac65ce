"""services/filesystem.py's rules that breaking them by hand showed untested (docs/testing.md)."""

from __future__ import annotations

from typing import Any

from tests.security.conftest import Actors

FS = "/api/filesystem"


def _ok(actors: Actors, user: str, method: str, url: str, body: Any = None) -> Any:
    response = actors.call(user, method, url, body)
    assert response.status_code == 200, f"{method} {url}: {response.text}"
    return response.json()


def test_moving_a_folder_out_needs_read_as_well_as_write_on_the_folder_it_leaves(
    actors: Actors,
) -> None:
    team = _ok(actors, "admin", "POST", f"{FS}/folders/Data", {"name": "Team"})
    sub = _ok(actors, "admin", "POST", f"{FS}/folders/{team['id']}", {"name": "Sub"})
    mine = _ok(actors, "admin", "POST", f"{FS}/folders/Data", {"name": "Mine"})
    for ref, flags in [
        (team["id"], {"readable": False, "writable": True}),  # eve may write, not read
        (sub["id"], {"readable": True, "writable": True}),
        (mine["id"], {"readable": True, "writable": True}),
    ]:
        _ok(actors, "admin", "PUT", f"{FS}/folders/{ref}/permission/others", flags)

    refused = actors.call("eve", "PUT", f"{FS}/folders/{sub['id']}", {"parent": "/Data/Mine"})
    assert (refused.status_code, refused.json()) == (
        403,
        {"status": "failure", "reason": "you are not allowed to change the folder /Data/Team"},
    )
    assert _ok(actors, "admin", "GET", f"{FS}/folders/{sub['id']}")["path"] == "/Data/Team/Sub"
    # Once she may read it too, the same move goes through.
    _ok(actors, "admin", "PUT", f"{FS}/folders/{team['id']}/permission/others", {"readable": True})
    moved = _ok(actors, "eve", "PUT", f"{FS}/folders/{sub['id']}", {"parent": "/Data/Mine"})
    assert moved["path"] == "/Data/Mine/Sub"
