"""Seventh-session attack: an ordinary user against the metadata database's own lock files.

docs/security.md, "Seventh-session attack".
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from datamill.domain.status import JobKind
from datamill.settings import Settings
from tests.conftest import TEST_NODE_TIMINGS
from tests.security.conftest import Actors

SCHEMA = [{"name": "id", "type": "BIGINT"}]


@pytest.fixture
def settings(tmp_path: Path, sqlite_template: Path) -> Settings:
    """SQLite metadata named through a symbolic link inside the operator's file root, the home too.

    The database itself lives outside the root (`real/meta.db`); the operator
    points DATAMILL_DATABASE_URL at `files/meta.db`, a link to it.
    """
    (tmp_path / "real").mkdir()
    (tmp_path / "files").mkdir()
    shutil.copyfile(sqlite_template, tmp_path / "real" / "meta.db")
    (tmp_path / "files" / "meta.db").symlink_to(tmp_path / "real" / "meta.db")
    return Settings(
        home=tmp_path / "home",
        database_url=f"sqlite:///{tmp_path / 'files' / 'meta.db'}",
        # The operator's root holds the home too (its data root).
        source_roots=[tmp_path],
        sink_roots=[tmp_path],
        **TEST_NODE_TIMINGS,
    )


def _give_bob_a_location(actors: Actors, path: str, folder: Path) -> None:
    """The admin defines a location on `folder` (an operator may) and hands it to bob."""
    made = actors.call("admin", "POST", "/rest/location", {"path": path, "folder": str(folder)})
    assert made.status_code == 200, made.text
    url = f"/api/filesystem/files/{made.json()['id']}/permission/owner"
    assert actors.call("admin", "PUT", url, {"owner": "bob"}).status_code == 200


@pytest.mark.parametrize("name", ["meta.db-writers", "meta.db.startup-lock"])
def test_the_lock_files_of_a_database_named_through_a_link_are_no_sink(
    actors: Actors, tmp_path: Path, name: str
) -> None:
    # SQLite keeps -wal/-shm beside the link's target, but Datamill's writers'
    # lock and start-up lock followed the name as written: beside the link, in
    # bob's location, where nothing hid them. His export would have replaced
    # the file every process flocks (processes started later lock another
    # inode: writers no longer queue across processes, nor nodes at start-up).
    files = tmp_path / "files"
    assert (files / "meta.db-writers").exists() or (tmp_path / "real" / "meta.db-writers").exists()
    _give_bob_a_location(actors, "/Connections/t.loc", files)
    (files / "in.csv").write_text("id\n1\n")
    source = {"kind": "csv", "location": "/Connections/t.loc", "path": "in.csv"}
    imported = {"source": source, "schema": [{"name": "id", "type": "BIGINT"}]}
    actors.node.jobs.define_job("/Users/bob/in.imp", JobKind.IMPORT, imported, "bob")
    export = {
        "path": "/Users/bob/x.exp",
        "source": {"importJob": "/Users/bob/in.imp"},
        "sink": {"kind": "csv", "location": "/Connections/t.loc", "path": name},
    }
    answer = actors.call("bob", "POST", "/rest/export-job", export)
    assert answer.status_code == 400, answer.text
    assert answer.json()["reason"] == f"sink: {name!r} is not inside a location you may write to"
    # An ordinary name beside it is still bob's to write.
    export["sink"] = {"kind": "csv", "location": "/Connections/t.loc", "path": "meta.dbx"}
    assert actors.call("bob", "POST", "/rest/export-job", export).status_code == 200


@pytest.fixture
def around_home(actors: Actors) -> Path:
    """bob owns `h.loc` on the folder that holds the data root (the operator's root)."""
    home = actors.node.settings.resolved_data_root.parent
    _give_bob_a_location(actors, "/Connections/h.loc", home)
    return home


@pytest.mark.parametrize("path", ["data/1/data.parquet", "data/.staging/x.csv"])
def test_the_data_root_inside_an_operator_root_is_no_source_or_sink(
    actors: Actors, around_home: Path, path: str
) -> None:
    # Before, bob's export onto `data/<n>/data.parquet` replaced alice's
    # published result (seen on a real server: her import's rows became his),
    # and a glob `data*/**/*.parquet` read every user's results.
    (around_home / "in.csv").write_text("id\n1\n")
    source = {"kind": "csv", "location": "/Connections/h.loc", "path": "in.csv"}
    imported = {"source": source, "schema": [{"name": "id", "type": "BIGINT"}]}
    actors.node.jobs.define_job("/Users/bob/in.imp", JobKind.IMPORT, imported, "bob")
    export = {
        "path": "/Users/bob/x.exp",
        "source": {"importJob": "/Users/bob/in.imp"},
        "sink": {"kind": "parquet", "location": "/Connections/h.loc", "path": path},
    }
    answer = actors.call("bob", "POST", "/rest/export-job", export)
    assert answer.status_code == 400, answer.text
    assert answer.json()["reason"] == f"sink: {path!r} is not inside a location you may write to"
    source = {"kind": "parquet", "location": "/Connections/h.loc", "path": path}
    imported = {"path": "/Users/bob/d.imp", "source": source, "schema": SCHEMA}
    answer = actors.call("bob", "POST", "/rest/import-job", imported)
    assert answer.status_code == 400, answer.text
    assert answer.json()["reason"] == f"source: {path!r} is not inside a location you may read from"
    # bob's own file beside the data root is still his.
    export["sink"] = {"kind": "parquet", "location": "/Connections/h.loc", "path": "mine.parquet"}
    assert actors.call("bob", "POST", "/rest/export-job", export).status_code == 200
