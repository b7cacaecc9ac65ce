"""Who may create what where (services/folders.py): the cases its mutants showed untested."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import orders_import, write_orders_csv
from tests.security.conftest import Actors

FS = "/api/filesystem"


def _job(files_root: Path, path: str) -> dict[str, object]:
    return {
        "path": path,
        **orders_import(write_orders_csv(files_root / "users" / "eve" / "in", rows=2)),
    }


def _refused(response: object, status: int, reason: str) -> None:
    assert (response.status_code, response.json()) == (  # type: ignore[attr-defined]
        status,
        {"status": "failure", "reason": reason},
    ), response.text  # type: ignore[attr-defined]


def test_a_shared_job_folder_takes_job_files_but_not_folders(
    actors: Actors, files_root: Path
) -> None:
    job = actors.call("eve", "POST", "/rest/import-job", _job(files_root, "/Data/ImportJobs/e.imp"))
    assert job.status_code == 200, job.text
    folder = actors.call("eve", "POST", f"{FS}/folders/Data/ImportJobs", {"name": "mine"})
    _refused(folder, 403, "you are not allowed to create anything in the folder /Data/ImportJobs")


def test_someone_elses_home_is_refused_by_name(actors: Actors, files_root: Path) -> None:
    refused = actors.call("eve", "POST", "/rest/import-job", _job(files_root, "/Users/bob/x.imp"))
    _refused(
        refused,
        403,
        "/Users/bob is reserved as the home folder of the user 'bob': "
        "only that user (or an ADMIN) may create anything there",
    )


def _remove_home(actors: Actors, name: str) -> None:
    """Delete <name>'s home, as an admin may (or a user older than home folders has none).

    /Users is not writable by its users: with the home gone, only the home-folder
    rule lets its user create there.
    """
    home = actors.call("admin", "GET", f"{FS}/folders/Users/{name}").json()
    children = actors.call("admin", "GET", f"{FS}/folders/{home['id']}/children").json()
    for entry in children["_embedded"]["files"]:  # the user's files location
        assert entry["path"].endswith(".loc"), entry
        emptied = actors.call("admin", "DELETE", f"/rest/location/{entry['id']}")
        assert emptied.status_code == 200, emptied.text
    gone = actors.call("admin", "DELETE", f"{FS}/folders/{home['id']}")
    assert gone.status_code == 200, gone.text
    assert actors.call("admin", "GET", f"{FS}/folders/Users/{name}").status_code == 404


def test_a_missing_home_is_made_on_the_way_however_deep(actors: Actors, files_root: Path) -> None:
    _remove_home(actors, "eve")
    workbook = {"sheets": [{"kind": "sql", "name": "o", "keep": True, "sql": "SELECT 1"}]}
    deep = actors.call("eve", "POST", "/rest/workbook", {"path": "/Users/eve/a/b.wbk", **workbook})
    assert deep.status_code == 200, deep.text
    made = actors.call("eve", "GET", f"{FS}/folders/Users/eve/a").json()
    assert made["owner"] == "eve", made
    # bob's is not made for eve, at any depth.
    for path in ("/Users/bob/a/b.wbk", "/Users/bob/c.wbk"):
        refused = actors.call("eve", "POST", "/rest/workbook", {"path": path, **workbook})
        assert refused.status_code == 403 and "reserved" in refused.json()["reason"], path


def test_creating_below_a_file_says_it_is_not_a_folder(actors: Actors, files_root: Path) -> None:
    made = actors.call("eve", "POST", "/rest/import-job", _job(files_root, "/Users/eve/a.imp"))
    assert made.status_code == 200, made.text
    below = actors.call(
        "eve", "POST", "/rest/import-job", _job(files_root, "/Users/eve/a.imp/b.imp")
    )
    _refused(below, 400, "/Users/eve/a.imp is not a folder")


def test_a_missing_home_may_be_created_by_its_own_path_and_is_private(actors: Actors) -> None:
    # docs/decisions.md "Creating one's own missing home": a user may make her
    # own home (never another user's), and it is private like every home.
    _remove_home(actors, "eve")
    made = actors.call("eve", "POST", f"{FS}/folders/Users", {"name": "eve"})
    assert made.status_code == 200, made.text
    assert (made.json()["path"], made.json()["owner"]) == ("/Users/eve", "eve"), made.json()
    url = f"{FS}/folders/{made.json()['id']}/permission/others"
    others = actors.call("eve", "GET", url).json()
    assert (others["readable"], others["writable"], others["executable"]) == (False,) * 3
    assert actors.call("bob", "GET", f"{FS}/folders/Users/eve").status_code == 404
    # Another user's missing home stays refused, by its own path too.
    _remove_home(actors, "bob")
    refused = actors.call("eve", "POST", f"{FS}/folders/Users", {"name": "bob"})
    _refused(
        refused,
        403,
        "/Users/bob is reserved as the home folder of the user 'bob': "
        "only that user (or an ADMIN) may create anything there",
    )
    assert actors.call("admin", "GET", f"{FS}/folders/Users/bob").status_code == 404


def test_a_folder_is_not_moved_in_as_a_missing_home(actors: Actors) -> None:
    # A moved folder keeps its flags (this one is readable by everyone), and a
    # home is private: so a missing home is created, never moved in.
    opened = actors.call("admin", "POST", f"{FS}/folders", {"name": "Open"})
    assert opened.status_code == 200, opened.text
    flags = {"readable": True, "writable": True}
    url = f"{FS}/folders/{opened.json()['id']}/permission/others"
    assert actors.call("admin", "PUT", url, flags).status_code == 200
    mine = actors.call("eve", "POST", f"{FS}/folders/Open", {"name": "mine"})
    assert mine.status_code == 200, mine.text
    _remove_home(actors, "eve")
    moved = actors.call(
        "eve", "PUT", f"{FS}/folders/{mine.json()['id']}", {"parent": "/Users", "name": "eve"}
    )
    _refused(moved, 403, "you are not allowed to create anything in the folder /Users")
    assert actors.call("eve", "GET", f"{FS}/folders/Open/mine").json()["id"] == mine.json()["id"]
    assert actors.call("admin", "GET", f"{FS}/folders/Users/eve").status_code == 404


def test_in_her_own_home_the_flags_still_decide(actors: Actors) -> None:
    # The home rule only makes a missing home: below it, an admin's folder that
    # eve may read but not write takes nothing of hers.
    locked = actors.call("admin", "POST", f"{FS}/folders/Users/eve", {"name": "locked"})
    assert locked.status_code == 200, locked.text
    refused = actors.call("eve", "POST", f"{FS}/folders/Users/eve/locked", {"name": "x"})
    _refused(refused, 403, "you are not allowed to create anything in the folder /Users/eve/locked")
    children = actors.call("admin", "GET", f"{FS}/folders/{locked.json()['id']}/children").json()
    assert children["_embedded"]["files"] == [], children
