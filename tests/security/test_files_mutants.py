"""The file tree's store rules (store/files.py) that its mutation run showed untested."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Connection

from datamill.bootstrap import Node
from datamill.domain.status import JobKind
from datamill.errors import AlreadyExists, InvalidInput
from datamill.store.files import MAX_NAME, MAX_PATH
from tests.helpers import password_hash, race_an_open_transaction
from tests.security.conftest import PASSWORD, Actors

FS = "/api/filesystem"


def _ok(actors: Actors, user: str, method: str, url: str, body: Any = None) -> Any:
    response = actors.call(user, method, url, body)
    assert response.status_code == 200, f"{method} {url}: {response.text}"
    return response.json()


def _folder(actors: Actors, path: str) -> int:
    with actors.node.store.db.write() as conn:
        return actors.node.store.files.ensure_folder(conn, path, "admin")


def _groups(actors: Actors, ref: int) -> dict[str, dict[str, bool]]:
    answer = _ok(actors, "admin", "GET", f"{FS}/folders/{ref}/permission")
    return {group["name"]: group["flags"] for group in answer["groups"]}


def test_taking_one_groups_flags_off_one_entry_leaves_the_others(actors: Actors) -> None:
    users = actors.node.store.users
    users.create("tim", password_hash(PASSWORD), groups=("team",))
    users.create("cid", password_hash(PASSWORD), groups=("crew",))
    first, second = _folder(actors, "/Data/First"), _folder(actors, "/Data/Second")
    for ref, group in [(first, "team"), (first, "crew"), (second, "team")]:
        body = {"name": group, "flags": {"readable": True}}
        _ok(actors, "admin", "POST", f"{FS}/folders/{ref}/permission/groups", body)
    for ref in (first, second):  # only the groups' flags let them in
        _ok(actors, "admin", "PUT", f"{FS}/folders/{ref}/permission/others", {"readable": False})

    gone = _ok(actors, "admin", "DELETE", f"{FS}/folders/{first}/permission/groups/team")
    readable = {"readable": True, "writable": False, "executable": False}
    assert [g["name"] for g in gone["groups"]] == ["crew"]
    assert _groups(actors, first) == {"crew": readable}
    assert _groups(actors, second) == {"team": readable}
    # What the members notice: tim still reads the second folder, cid the first.
    assert _ok(actors, "tim", "GET", f"{FS}/folders/{second}")["path"] == "/Data/Second"
    assert _ok(actors, "cid", "GET", f"{FS}/folders/{first}")["path"] == "/Data/First"
    assert actors.call("tim", "GET", f"{FS}/folders/{first}").status_code == 404


def test_a_folder_whose_name_ends_in_x_moves_with_everything_below_and_nothing_else(
    actors: Actors,
) -> None:
    box = _folder(actors, "/Data/BoX")
    inner = _folder(actors, "/Data/BoX/inner")
    lookalike = _folder(actors, "/Data/Bo/inner")
    moved = _ok(actors, "admin", "PUT", f"{FS}/folders/{box}", {"name": "Crate"})
    assert moved["path"] == "/Data/Crate"
    assert _ok(actors, "admin", "GET", f"{FS}/folders/{inner}")["path"] == "/Data/Crate/inner"
    assert _ok(actors, "admin", "GET", f"{FS}/folders/{lookalike}")["path"] == "/Data/Bo/inner"


def _deep(top: str) -> str:
    """A folder below `top` whose path is exactly MAX_PATH characters long."""
    path = top
    while len(path) + 1 + MAX_NAME < MAX_PATH:
        path += "/" + "d" * MAX_NAME
    return path + "/" + "e" * (MAX_PATH - len(path) - 1)


def test_a_rename_that_would_make_a_path_below_too_long_is_refused(actors: Actors) -> None:
    top = _folder(actors, "/Data/Deep")
    deepest = _deep("/Data/Deep")
    assert len(deepest) == MAX_PATH
    bottom = _folder(actors, deepest)

    longer = actors.call("admin", "PUT", f"{FS}/folders/{top}", {"name": "Deeper"})
    assert (longer.status_code, longer.json()) == (
        400,
        {
            "status": "failure",
            "reason": "paths below /Data/Deeper would be longer than 4096 characters",
        },
    )
    assert _ok(actors, "admin", "GET", f"{FS}/folders/{bottom}")["path"] == deepest
    # As long as before: exactly the longest path there may be.
    assert _ok(actors, "admin", "PUT", f"{FS}/folders/{top}", {"name": "Dope"})["path"] == (
        "/Data/Dope"
    )
    assert _ok(actors, "admin", "GET", f"{FS}/folders/{bottom}")["path"] == (
        "/Data/Dope" + deepest.removeprefix("/Data/Deep")
    )


def test_the_longest_path_elsewhere_does_not_stop_a_rename(actors: Actors) -> None:
    _folder(actors, _deep("/Data/Deep"))
    short = _folder(actors, "/Data/a")
    _folder(actors, "/Data/a/b")
    name = "n" * 200  # the deep path is elsewhere: only the paths below /Data/a count
    renamed = _ok(actors, "admin", "PUT", f"{FS}/folders/{short}", {"name": name})
    assert renamed["path"] == f"/Data/{name}"
    assert [f["name"] for f in renamed["_embedded"]["folders"]] == ["b"]


def test_a_folder_made_through_the_api_is_readable_by_everyone_but_a_home_is_not(
    actors: Actors,
) -> None:
    made = _ok(actors, "admin", "POST", f"{FS}/folders/Data", {"name": "Shared"})
    assert made["path"] == "/Data/Shared"
    for user in ("eve", "bob"):
        listed = _ok(actors, user, "GET", f"{FS}/folders/Data")
        assert "Shared" in [f["name"] for f in listed["_embedded"]["folders"]]
        assert _ok(actors, user, "GET", f"{FS}/folders/{made['id']}")["path"] == "/Data/Shared"
    assert _ok(actors, "admin", "GET", f"{FS}/folders/{made['id']}/permission")["others"] == {
        "readable": True,
        "writable": False,
        "executable": False,
    }
    # An ADMIN making a home for a user who has none yet: private, like every home.
    home = _ok(actors, "admin", "POST", f"{FS}/folders/Users", {"name": "zoe"})
    assert home["path"] == "/Users/zoe"
    assert actors.call("eve", "GET", f"{FS}/folders/{home['id']}").status_code == 404


def test_a_new_folder_may_make_the_longest_path_but_not_one_more(actors: Actors) -> None:
    parent_path = _deep("/Data/Deep")[: MAX_PATH - 2]
    parent = _folder(actors, parent_path)
    url = f"{FS}/folders/{parent}"
    longer = actors.call("admin", "POST", url, {"name": "ab"})
    assert (longer.status_code, longer.json()) == (
        400,
        {"status": "failure", "reason": "the path must be at most 4096 characters long"},
    )
    made = _ok(actors, "admin", "POST", url, {"name": "a"})
    assert made["path"] == parent_path + "/a" and len(made["path"]) == MAX_PATH


def _import(path: str) -> dict[str, Any]:
    # eve's private location: eve and every ADMIN may read from it.
    source = {"kind": "csv", "location": "/Users/eve/files.loc", "path": "nowhere.csv"}
    return {"path": path, "source": source}


def test_a_job_at_a_taken_path_is_refused_by_name_and_the_first_kept(actors: Actors) -> None:
    first = _ok(actors, "eve", "POST", "/rest/import-job", _import("/Users/eve/feed.imp"))
    again = actors.call("eve", "POST", "/rest/import-job", _import("/Users/eve/feed.imp"))
    assert (again.status_code, again.json()) == (
        409,
        {"status": "failure", "reason": "/Users/eve/feed.imp already exists"},
    )
    listed = _ok(actors, "eve", "GET", f"{FS}/folders/Users/eve")
    assert [f["name"] for f in listed["_embedded"]["files"]] == ["feed.imp", "files.loc"]
    shown = _ok(actors, "eve", "GET", f"/rest/import-job/{first['configuration-id']}")
    assert shown["path"] == "/Users/eve/feed.imp"


def test_a_job_defined_below_the_api_is_refused_without_its_kinds_extension(
    actors: Actors,
) -> None:
    """`datamill job define` passes the path as typed: the store names the extension."""
    raw = _import("")["source"]
    with pytest.raises(InvalidInput) as refused:
        actors.node.jobs.define_job("/Users/eve/feed", JobKind.IMPORT, {"source": raw}, "eve")
    assert str(refused.value) == "a import job file name must end with .imp"
    assert actors.call("eve", "GET", f"{FS}/files/Users/eve/feed").status_code == 404


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_a_job_created_while_its_folder_moves_lands_at_the_path_it_names(node: Node) -> None:
    """`lock_tree`: a creation waits for a move of a folder on its way (PostgreSQL).

    Without the lock the new file, inserted into the moving folder as it was,
    kept its old path below the folder's new place: listed in /Data/B as
    /Data/A/feed.imp, and /Data/A/feed.imp naming a file whose folder is /Data/B.
    """
    files = node.store.files
    with node.store.db.write() as conn:
        moving = files.ensure_folder(conn, "/Data/A", "admin")
        data = files.ensure_folder(conn, "/Data", "admin")

    def move(conn: Connection) -> None:
        files.move_folder(conn, files.get(conn, moving), files.get(conn, data), "B")

    def create() -> None:
        with node.store.db.write() as conn:
            files.create_file(conn, "/Data/A/feed.imp", JobKind.IMPORT, "admin")

    assert race_an_open_transaction(node, move, create) == []
    with node.store.db.read() as conn:
        made = files.find(conn, "/Data/A/feed.imp")
        assert made is not None
        assert files.get(conn, made.parent_id or 0).path == "/Data/A"
        assert files.get(conn, moving).path == "/Data/B"
        assert files.children(conn, moving) == []


def test_a_location_at_a_taken_path_is_refused_by_name_and_the_first_kept(
    actors: Actors,
) -> None:
    files = Path(actors.node.settings.resolved_source_roots[0])
    for name in ("a", "b"):
        (files / name).mkdir(parents=True, exist_ok=True)
    body = {"path": "/Connections/l", "folder": str(files / "a")}
    first = _ok(actors, "admin", "POST", "/rest/location", body)
    again = actors.call("admin", "POST", "/rest/location", {**body, "folder": str(files / "b")})
    assert (again.status_code, again.json()) == (
        409,
        {"status": "failure", "reason": "/Connections/l.loc already exists"},
    )
    shown = _ok(actors, "admin", "GET", f"/rest/location/{first['id']}")
    assert shown["folder"] == str(files / "a")
    # Below a job file: no folder there, even for an ADMIN.
    _ok(actors, "eve", "POST", "/rest/import-job", _import("/Users/eve/feed.imp"))
    below = {**body, "path": "/Users/eve/feed.imp/l"}
    refused = actors.call("admin", "POST", "/rest/location", below)
    assert (refused.status_code, refused.json()) == (
        404,
        {"status": "failure", "reason": "folder /Users/eve/feed.imp does not exist"},
    )


def test_a_location_entry_may_make_the_longest_path(actors: Actors) -> None:
    """create_resource: a path of exactly MAX_PATH characters is accepted, as for folders."""
    parent_path = _deep("/Data/Deeper")[: MAX_PATH - 2]
    _folder(actors, parent_path)
    with actors.node.store.db.write() as conn:
        made = actors.node.store.files.create_resource(
            conn, parent_path + "/l", "location", "admin"
        )
    assert made.path == parent_path + "/l" and len(made.path) == MAX_PATH


def test_a_job_defined_below_a_job_file_names_the_file_in_the_way(actors: Actors) -> None:
    """`datamill job define` below a job file: the store says which entry is not a folder."""
    raw = _import("")["source"]
    actors.node.jobs.define_job("/Users/eve/feed.imp", JobKind.IMPORT, {"source": raw}, "eve")
    with pytest.raises(AlreadyExists) as refused:
        actors.node.jobs.define_job(
            "/Users/eve/feed.imp/more.imp", JobKind.IMPORT, {"source": raw}, "eve"
        )
    assert str(refused.value) == "/Users/eve/feed.imp already exists and is not a folder"
