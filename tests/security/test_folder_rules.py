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


def test_a_missing_home_is_made_on_the_way_however_deep(actors: Actors, files_root: Path) -> None:
    # Her home, if made with her account, is gone (deleted by an admin, or a user
    # older than home folders): /Users is not writable by eve, only the
    # home-folder rule lets her in.
    home = actors.call("admin", "GET", f"{FS}/folders/Users/eve").json()
    children = actors.call("admin", "GET", f"{FS}/folders/{home['id']}/children").json()
    for entry in children["_embedded"]["files"]:  # her files location
        assert entry["path"].endswith(".loc"), entry
        emptied = actors.call("admin", "DELETE", f"/rest/location/{entry['id']}")
        assert emptied.status_code == 200, emptied.text
    gone = actors.call("admin", "DELETE", f"{FS}/folders/{home['id']}")
    assert gone.status_code == 200, gone.text
    assert actors.call("admin", "GET", f"{FS}/folders/Users/eve").status_code == 404
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
