"""Folders and home folders (issue #10, F9, F11, F14's paths, F16)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from datamill.bootstrap import ensure_admin, open_node
from datamill.settings import Settings
from tests.helpers import orders_import, write_orders_csv
from tests.security.conftest import Actors, auth

FS = "/api/filesystem"


def _job(files_root: Path, path: str) -> dict[str, object]:
    return {
        "path": path,
        **orders_import(write_orders_csv(files_root / "users" / "eve" / "in", rows=2)),
    }


@pytest.fixture
def private(actors: Actors) -> Actors:
    """admin's /Data/Private (readable, not writable by others) and /Data/Hidden (unreadable)."""
    for name, readable in (("Private", True), ("Hidden", False)):
        made = actors.call("admin", "POST", f"{FS}/folders/Data", {"name": name})
        assert made.status_code == 200, made.text
        url = f"{FS}/folders/{made.json()['id']}/permission/others"
        actors.call("admin", "PUT", url, {"readable": readable})
    return actors


def test_f9_jobs_need_write_on_the_folder_they_go_into(private: Actors, files_root: Path) -> None:
    for path in ("/Data/Private/feed.imp", "/Data/Private/new/deeper/feed.imp"):
        refused = private.call("eve", "POST", "/rest/import-job", _job(files_root, path))
        assert refused.status_code == 403, refused.text
        assert "/Data/Private" in refused.json()["reason"]
    # An unreadable folder answers exactly like a missing one (A4): the nearest
    # readable folder (/Data) is the one that must be writable.
    hidden = private.call("eve", "POST", "/rest/import-job", _job(files_root, "/Data/Hidden/x.imp"))
    missing = private.call("eve", "POST", "/rest/import-job", _job(files_root, "/Data/Nope/x.imp"))
    assert (hidden.status_code, hidden.text) == (missing.status_code, missing.text)
    assert hidden.status_code == 403 and "/Data" in hidden.json()["reason"]
    nowhere = private.call("eve", "POST", "/rest/import-job", _job(files_root, "/Nope/x.imp"))
    assert nowhere.status_code == 403  # the root is not writable either
    # Renaming one's own job into such a folder is refused the same way.
    made = private.call("eve", "POST", "/rest/import-job", _job(files_root, "mine"))
    assert made.status_code == 200, made.text
    url = f"/rest/import-job/{made.json()['configuration-id']}"
    moved = private.call("eve", "PUT", url, _job(files_root, "/Data/Private/mine.imp"))
    assert moved.status_code == 403
    # Nothing was created along the way.
    listing = private.call("admin", "GET", f"{FS}/folders/Data/Private").json()
    assert listing["_embedded"] == {"folders": [], "files": []}


def test_f9_folders_need_write_on_their_parent_and_moves_too(private: Actors) -> None:
    refused = private.call("eve", "POST", f"{FS}/folders/Data/Private", {"name": "mine"})
    assert refused.status_code == 403
    hidden = private.call("eve", "POST", f"{FS}/folders/Data/Hidden", {"name": "mine"})
    missing = private.call("eve", "POST", f"{FS}/folders/Data/Nothing", {"name": "mine"})
    assert hidden.status_code == missing.status_code == 404
    home = private.call("eve", "POST", "/rest/import-job", {"path": "/Users/eve/x.imp", **_src()})
    assert home.status_code == 200, home.text
    made = private.call("eve", "POST", f"{FS}/folders/Users/eve", {"name": "f"})
    assert made.status_code == 200, made.text
    moved = private.call(
        "eve", "PUT", f"{FS}/folders/{made.json()['id']}", {"parent": "/Data/Private"}
    )
    assert moved.status_code == 403


def _src() -> dict[str, object]:
    # eve's private location: eve and every ADMIN may read from it.
    return {"source": {"kind": "csv", "location": "/Users/eve/files.loc", "path": "nowhere.csv"}}


def test_f11_home_folders_are_reserved_and_private(actors: Actors) -> None:
    # Nobody but carol (or an ADMIN) creates /Users/carol, even where flags would allow it.
    users = actors.call("admin", "GET", f"{FS}/folders/Users").json()
    url = f"{FS}/folders/{users['id']}/permission/others"
    actors.call("admin", "PUT", url, {"readable": True, "writable": True})
    for path in ("/Users/carol/x.imp", "/Users/bob/x.imp", "/Users/x.imp"):
        refused = actors.call("eve", "POST", "/rest/import-job", {"path": path, **_src()})
        assert refused.status_code == 403, (path, refused.text)
        assert "reserved" in refused.json()["reason"]
    squat = actors.call("eve", "POST", f"{FS}/folders/Users", {"name": "carol"})
    assert squat.status_code == 403
    # eve's own home is hers and private: bob cannot see what she keeps there.
    mine = actors.call("eve", "POST", "/rest/import-job", {"path": "/Users/eve/a.imp", **_src()})
    assert mine.status_code == 200, mine.text
    home = actors.call("eve", "GET", f"{FS}/folders/Users/eve").json()
    assert home["owner"] == "eve"
    assert actors.call("bob", "GET", f"{FS}/folders/Users/eve").status_code == 404
    others = actors.call("eve", "GET", f"{FS}/folders/{home['id']}/permission/others").json()
    assert (others["readable"], others["writable"], others["executable"]) == (False,) * 3
    # Nor can she move or rename a folder of hers into someone else's home.
    folder = actors.call("eve", "POST", f"{FS}/folders/Users/eve", {"name": "f"}).json()
    moved = actors.call(
        "eve", "PUT", f"{FS}/folders/{folder['id']}", {"parent": "/Users", "name": "carol"}
    )
    assert moved.status_code == 403 and "reserved" in moved.json()["reason"]
    # An ADMIN may create in any home; a home made that way is private too.
    admin_home = actors.call(
        "admin", "POST", "/rest/import-job", {"path": "/Users/admin/s.imp", **_src()}
    )
    assert admin_home.status_code == 200
    assert actors.call("eve", "GET", f"{FS}/folders/Users/admin").status_code == 404


def test_f11_the_first_admins_home_is_private(tmp_path: Path) -> None:
    node = open_node(Settings(home=tmp_path / "fresh", admin_password="first-admin-pw"))
    try:
        assert ensure_admin(node) is None
        with node.store.db.read() as conn:
            home = node.store.files.find(conn, "/Users/admin")
            assert home is not None and home.owner == "admin"
            flags = node.store.files.permissions(conn, home.id).others
        assert (flags.readable, flags.writable, flags.executable) == (False, False, False)
    finally:
        node.store.close()


LONG = "a" * 600_000


def test_f16_overlong_paths_and_names_are_refused_everywhere(actors: Actors) -> None:
    too_long = (
        f"/Data/ImportJobs/{LONG}.imp",
        "/Data/" + "/".join(["b" * 200] * 30) + "/x.imp",
        "/Data/ImportJobs/" + "n" * 300 + "/x.imp",
    )
    for path in too_long:
        answer = actors.call("eve", "POST", "/rest/import-job", {"path": path, **_src()})
        assert answer.status_code == 400, answer.text[:200]
        assert len(answer.text) < 2000
    made = actors.call("eve", "POST", "/rest/import-job", {"path": "short", **_src()})
    url = f"/rest/import-job/{made.json()['configuration-id']}"
    renamed = actors.call("eve", "PUT", url, {"path": f"/Data/ImportJobs/{LONG}.imp", **_src()})
    assert renamed.status_code == 400
    folder = actors.call("eve", "POST", f"{FS}/folders/Users/eve", {"name": LONG})
    assert folder.status_code in (400, 404)
    long_url = f"/api/job-execution/Data/{'a' * 5000}/status"
    lookup = actors.client.get(long_url, headers=auth("eve"))
    assert lookup.status_code == 404


def test_f14_lone_surrogates_in_paths_are_a_4xx(actors: Actors) -> None:
    raw = '{"path": "/Data/ImportJobs/\\ud800.imp", "source": {"kind": "csv", "path": "/x.csv"}}'
    headers = {**auth("eve"), "Content-Type": "application/json"}
    answer = actors.client.post("/rest/import-job", content=raw, headers=headers)
    assert answer.status_code == 400, answer.text
    body = json.dumps({"name": "\ud800"})
    folder = actors.client.post(f"{FS}/folders/Data", content=body, headers=headers)
    assert 400 <= folder.status_code < 500
    reference = json.dumps(
        {
            "path": "w",
            "sheets": [
                {"kind": "data", "name": "s", "source": {"importJob": "/a/\ud800.imp"}},
                {"kind": "sql", "name": "o", "sql": "SELECT * FROM s", "keep": True},
            ],
        }
    )
    workbook = actors.client.post("/rest/workbook", content=reference, headers=headers)
    assert workbook.status_code == 400, workbook.text
    for url in (
        "/api/job-execution/Data/%ED%A0%80.imp/status",
        f"{FS}/folders/Data/%ED%A0%80",
        f"{FS}/files/Data/%ED%A0%80.imp",
    ):
        lookup = actors.client.get(url, headers=auth("eve"))
        assert 400 <= lookup.status_code < 500, (url, lookup.text)


# ---------------------------------------------------------------- attack review A3, A4


def test_a3_renaming_or_moving_a_folder_needs_write_on_both_parents(actors: Actors) -> None:
    """eve's folder inside /Team, which admin locked: she can no longer rename it there."""
    team = actors.call("admin", "POST", f"{FS}/folders", {"name": "Team"}).json()
    url = f"{FS}/folders/{team['id']}/permission/others"
    actors.call("admin", "PUT", url, {"readable": True, "writable": True})
    work = actors.call("eve", "POST", f"{FS}/folders/{team['id']}", {"name": "evework"})
    assert work.status_code == 200, work.text
    actors.call("admin", "PUT", url, {"writable": False})
    created = actors.call("eve", "POST", f"{FS}/folders/{team['id']}", {"name": "new"})
    assert created.status_code == 403
    mine = f"{FS}/folders/{work.json()['id']}"
    for body in (
        {"name": "finance"},
        {"parent": "/Users/eve"},
        {"parent": "/Users/eve", "name": "x"},
    ):
        refused = actors.call("eve", "PUT", mine, body)
        assert refused.status_code == 403, (body, refused.text)
        assert "/Team" in refused.json()["reason"]
    # Unchanged; the same name is not a rename; in her home she renames freely.
    assert actors.call("eve", "GET", mine).json()["path"] == "/Team/evework"
    assert actors.call("eve", "PUT", mine, {"name": "evework"}).status_code == 200
    home = actors.call("eve", "POST", f"{FS}/folders/Users/eve", {"name": "a"}).json()
    renamed = actors.call("eve", "PUT", f"{FS}/folders/{home['id']}", {"name": "b"})
    assert renamed.status_code == 200 and renamed.json()["path"] == "/Users/eve/b"
    # The ADMIN may.
    moved = actors.call("admin", "PUT", mine, {"name": "finance"})
    assert moved.status_code == 200 and moved.json()["path"] == "/Team/finance"


def _same(a: httpx.Response, b: httpx.Response, name_a: str, name_b: str) -> None:
    assert a.status_code == b.status_code, (a.text, b.text)
    assert a.text.replace(name_a, "<N>") == b.text.replace(name_b, "<N>"), (a.text, b.text)


def test_a4_creating_in_an_unreadable_folder_answers_as_in_a_missing_one(
    actors: Actors, files_root: Path
) -> None:
    """/Priv exists but eve may not read it: every create answers as for /NoSuch."""
    priv = actors.call("admin", "POST", f"{FS}/folders", {"name": "Priv"}).json()
    actors.call("admin", "PUT", f"{FS}/folders/{priv['id']}/permission/others", {"readable": False})
    deep = actors.call("admin", "POST", f"{FS}/folders/{priv['id']}", {"name": "deep"}).json()
    actors.call("admin", "PUT", f"{FS}/folders/{deep['id']}/permission/others", {"readable": False})
    made = actors.call("eve", "POST", "/rest/import-job", _job(files_root, "/Users/eve/mv.imp"))
    assert made.status_code == 200, made.text
    move_url = f"/rest/import-job/{made.json()['configuration-id']}"
    folder = actors.call("eve", "POST", f"{FS}/folders/Users/eve", {"name": "f"}).json()

    def answers(top: str) -> list[httpx.Response]:
        return [
            actors.call("eve", "POST", "/rest/import-job", _job(files_root, f"{top}/x.imp")),
            actors.call("eve", "POST", "/rest/import-job", _job(files_root, f"{top}/deep/x.imp")),
            actors.call("eve", "PUT", move_url, _job(files_root, f"{top}/moved.imp")),
            actors.call("eve", "POST", f"{FS}/folders{top}", {"name": "z"}),
            actors.call("eve", "PUT", f"{FS}/folders/{folder['id']}", {"parent": top}),
        ]

    for hidden, missing in zip(answers("/Priv"), answers("/NoSuch"), strict=True):
        _same(hidden, missing, "Priv", "NoSuch")
        assert hidden.status_code in (403, 404)
    # Where eve may write the nearest readable folder, a name taken by an entry she
    # cannot see answers as creating that entry itself would: it already exists.
    root = actors.call("admin", "GET", f"{FS}/root-folder").json()
    actors.call("admin", "PUT", f"{FS}/folders/{root['id']}/permission/others", {"writable": True})
    inside = actors.call("eve", "POST", "/rest/import-job", _job(files_root, "/Priv/x.imp"))
    itself = actors.call("eve", "POST", f"{FS}/folders", {"name": "Priv"})
    assert inside.status_code == itself.status_code == 409, (inside.text, itself.text)
    assert inside.json()["reason"] == itself.json()["reason"] == "/Priv already exists"
    listing = actors.call("admin", "GET", f"{FS}/folders/{priv['id']}").json()
    assert [f["name"] for f in listing["_embedded"]["files"]] == []
    fresh = actors.call("eve", "POST", "/rest/import-job", _job(files_root, "/NoSuch/x.imp"))
    assert fresh.status_code == 200, fresh.text
