"""Sixth-session attacks on what a user can write into a definition (docs/security.md).

Object-store globs (a real S3 server, moto) and the SQLite writers' lock
file beside Datamill's own database.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from datamill.domain.status import JobKind, JobStatus
from datamill.engine import objects
from datamill.engine.objects import ObjectStore, parse
from datamill.engine.paths import check_database_url
from datamill.errors import InvalidInput, PathNotAllowed
from datamill.settings import Settings
from tests.helpers import wait_terminal
from tests.security.conftest import Actors
from tests.security.test_object_store_attacks import SCHEMA, _put, ten_keys_paged
from tests.security.test_object_store_attacks import prefix as prefix
from tests.security.test_object_store_attacks import store as store
from tests.spark.conftest import BUCKET
from tests.spark.conftest import s3_endpoint as s3_endpoint


@pytest.fixture
def settings(settings: Settings, s3_endpoint: str, prefix: str, tmp_path: Path) -> Settings:
    """The usual node, with an S3 root `<prefix>/data` and the SQLite database's folder as roots."""
    return Settings(
        **settings.model_dump(exclude_unset=True),
        source_roots=[tmp_path, f"s3a://{BUCKET}/{prefix}/data"],
        sink_roots=[tmp_path],
        s3_endpoint=s3_endpoint,
        s3_access_key_id="test-key",
        s3_secret_access_key="test-secret",
    )


def test_a_glob_with_few_matches_over_a_large_prefix_stops_at_the_key_cap(
    store: ObjectStore, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The match cap counts matches: a glob matching nothing over a huge prefix
    # (a location on a whole bucket) listed every key, a worker busy for hours.
    # Two keys a page, ten keys, at most five listed: page 3 holds the sixth.
    watched, pages, root = ten_keys_paged(store, prefix, monkeypatch)
    monkeypatch.setattr(objects, "LIST_KEYS_MAX", 5)
    with pytest.raises(InvalidInput) as refused:
        objects.match_objects(watched, f"{root}/*.parquet", (root,), limit=3)
    assert refused.value.message == (
        f"source glob '{root}/*.parquet' lists more than 5 objects:"
        " give more of its folders without wildcards"
    )
    assert len(pages) == 3
    # Up to the cap, every key is listed and matched as before.
    monkeypatch.setattr(objects, "LIST_KEYS_MAX", 10)
    found = objects.match_objects(watched, f"{root}/*.csv", (root,), limit=10)
    assert [p.key.rsplit("/", 1)[1] for p, _ in found] == [f"f{n:02d}.csv" for n in range(10)]


def test_a_paged_glob_skips_a_nested_location_its_owner_may_not_read(
    store: ObjectStore, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # N6 across pages: the nested location's keys come between readable ones.
    monkeypatch.setattr(objects, "LIST_PAGE", 2)
    for key in ("a.csv", "m/secret.csv", "m/secret2.csv", "z/b.csv", ".datamill-1.c.csv"):
        _put(store, f"{prefix}/data/{key}")
    root = f"s3a://{BUCKET}/{prefix}/data"
    found = objects.match_objects(store, f"{root}/**/*.csv", (root,), (f"{root}/m",))
    # Neither the nested location nor a run's hidden upload is matched.
    assert [p.key.split("/", 2)[2] for p, _ in found] == ["a.csv", "z/b.csv"]


@pytest.mark.parametrize(
    "spelling", ["out//x.csv", "out/./x.csv", "out/%2e%2e/x.csv", "out/\uff58.csv", "out/x.csv//"]
)
def test_a_sink_key_spelled_otherwise_is_refused_not_aliased(spelling: str) -> None:
    # A publish aborts every other pending upload to its exact key: a key
    # that another spelling reaches would let bob abort alice's upload.
    with pytest.raises(PathNotAllowed):
        parse(f"s3a://{BUCKET}/p/{spelling}", "sink path")


def test_a_sqlite_url_naming_the_writers_lock_file_is_refused(tmp_path: Path) -> None:
    # A definition that opened `<database>-writers` could hold its lock and
    # stall every writer of the server: it is refused like `-wal`.
    db = tmp_path / "meta.db"
    for name in ("meta.db-writers", "meta.db-shm", "meta.db-journal", "meta.db.startup-lock"):
        (tmp_path / name).touch()
        with pytest.raises(PathNotAllowed, match="own database"):
            check_database_url(
                f"sqlite:///{tmp_path / name}",
                (str(tmp_path),),
                (f"sqlite:///{db}",),
                "source",
                must_exist=True,
            )


@pytest.fixture
def home_location(actors: Actors, tmp_path: Path) -> Path:
    """bob owns `t.loc` on a folder that holds the SQLite metadata database (on SQLite)."""
    made = actors.call(
        "admin", "POST", "/rest/location", {"path": "/Connections/t.loc", "folder": str(tmp_path)}
    )
    assert made.status_code == 200, made.text
    url = f"/api/filesystem/files/{made.json()['id']}/permission/owner"
    assert actors.call("admin", "PUT", url, {"owner": "bob"}).status_code == 200
    (tmp_path / "in.csv").write_text("id\n1\n")
    source = {"kind": "csv", "location": "/Connections/t.loc", "path": "in.csv"}
    imported = {"source": source, "schema": [{"name": "id", "type": "BIGINT"}]}
    actors.node.jobs.define_job("/Users/bob/in.imp", JobKind.IMPORT, imported, "bob")
    return tmp_path


@pytest.mark.parametrize(
    "name", ["meta.db", "meta.db-wal", "meta.db-writers", "meta.db.startup-lock"]
)
def test_the_metadata_database_and_its_lock_file_are_no_source_or_sink(
    home_location: Path, actors: Actors, database_url: str, name: str
) -> None:
    # An operator root around the SQLite database: bob's export would have
    # replaced it (every user's metadata) or the writers' lock file.
    export = {
        "path": "/Users/bob/x.exp",
        "source": {"importJob": "/Users/bob/in.imp"},
        "sink": {"kind": "csv", "location": "/Connections/t.loc", "path": name},
    }
    answer = actors.call("bob", "POST", "/rest/export-job", export)
    if database_url.startswith("sqlite"):
        assert answer.status_code == 400, answer.text
        # As a file in a location bob may not use (N6): nothing says it is there.
        assert (
            answer.json()["reason"] == f"sink: {name!r} is not inside a location you may write to"
        )
        source = {"kind": "csv", "location": "/Connections/t.loc", "path": name}
        imported = {"path": "/Users/bob/db.imp", "source": source, "schema": SCHEMA}
        answer = actors.call("bob", "POST", "/rest/import-job", imported)
        assert answer.status_code == 400, answer.text
        assert (
            answer.json()["reason"]
            == f"source: {name!r} is not inside a location you may read from"
        )
    else:
        # No metadata file on PostgreSQL: the same name is an ordinary file.
        assert answer.status_code == 200, answer.text
    # A name beside it that is not the database is fine on both.
    export["path"] = "/Users/bob/y.exp"
    export["sink"] = {"kind": "csv", "location": "/Connections/t.loc", "path": "meta.dbx"}
    assert actors.call("bob", "POST", "/rest/export-job", export).status_code == 200


def test_a_glob_over_the_metadata_database_folder_skips_its_files(
    running: Actors, home_location: Path, database_url: str
) -> None:
    # Globs skip hidden files at run time: `meta*` finds only bob's own file.
    (home_location / "meta-bob.csv").write_text("id\n7\n")
    if database_url.startswith("sqlite"):
        assert (home_location / "meta.db-writers").exists()
    source = {"kind": "csv", "location": "/Connections/t.loc", "path": "meta*"}
    imported = {"path": "/Users/bob/g.imp", "source": source, "schema": SCHEMA[:1]}
    assert running.call("bob", "POST", "/rest/import-job", imported).status_code == 200
    started = running.call("bob", "POST", "/api/job-execution/Users/bob/g.imp/trigger")
    assert started.status_code == 200, started.text
    ended = wait_terminal(running.node, started.json()["job-execution-id"], timeout=120)
    # Before, the glob also matched the database's files (`meta.db.startup-lock`
    # "has other columns"): the run would read the metadata or fail on it.
    assert ended.status is JobStatus.COMPLETED, ended.error_message
