"""Attacks on object-store (s3a://) locations through the real API, worker and a real S3 (moto).

bob owns a location on one prefix; the admin's prefix next to it has a name
that starts like his (`data` and `data-x`). What a run does not publish must
not stay behind in the object store either: a run is the user's, and an
object it leaves is storage they were refused (an output limit) or never
asked for.
"""

from __future__ import annotations

import dataclasses
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from datamill.domain.status import JobKind, JobStatus
from datamill.engine import objects
from datamill.engine.base import PathRoots, ignore_event
from datamill.engine.object_publish import publish
from datamill.engine.object_runs import FREE_MARGIN, copy_budget
from datamill.engine.objects import ObjectPath, ObjectStore, copy_in, temporary_uri, upload
from datamill.engine.registry import Engines
from datamill.errors import InvalidInput, JobFailed
from datamill.settings import Settings
from datamill.store.queue import Outcome
from tests.helpers import admin, wait_terminal
from tests.integration.engine_fixtures import make_area
from tests.security.conftest import Actors
from tests.spark.conftest import BUCKET
from tests.spark.conftest import s3_endpoint as s3_endpoint  # a real S3 server on loopback

CSV = "id,v\n1,a\n2,b\n"
SCHEMA = [{"name": "id", "type": "BIGINT"}, {"name": "v", "type": "VARCHAR"}]


@pytest.fixture
def prefix() -> str:
    """A prefix of the bucket for this test alone."""
    return f"a{uuid.uuid4().hex[:12]}"


@pytest.fixture
def source_cap() -> int | None:
    """DATAMILL_SOURCE_MAX_BYTES of the node (a test parametrises it): none by default."""
    return None


@pytest.fixture
def settings(settings: Settings, s3_endpoint: str, prefix: str, source_cap: int | None) -> Settings:
    """The usual test node, with S3 roots: `<prefix>/data`, `<prefix>/data-x`, `<prefix>/out`."""
    home = settings.resolved_home
    root = f"s3a://{BUCKET}/{prefix}"
    return Settings(
        **settings.model_dump(exclude_unset=True),
        source_roots=[home / "files", f"{root}/data", f"{root}/data-x"],
        sink_roots=[home / "files", f"{root}/out"],
        s3_endpoint=s3_endpoint,
        s3_access_key_id="test-key",
        s3_secret_access_key="test-secret",
        source_max_bytes=source_cap,
    )


@pytest.fixture
def store(settings: Settings) -> ObjectStore:
    """The operator's object store."""
    assert settings.object_store is not None
    return settings.object_store


def _put(store: ObjectStore, key: str, text: str = CSV) -> None:
    with store.filesystem().open_output_stream(f"{BUCKET}/{key}") as out:
        out.write(text.encode())


def _keys(store: ObjectStore, prefix: str) -> list[str]:
    selector = pafs.FileSelector(f"{BUCKET}/{prefix}", recursive=True, allow_not_found=True)
    infos = store.filesystem().get_file_info(selector)
    return sorted(i.path.partition("/")[2] for i in infos if i.type == pafs.FileType.File)


def _location(actors: Actors, name: str, folder: str, owner: str) -> None:
    made = actors.call(
        "admin", "POST", "/rest/location", {"path": f"/Connections/{name}", "folder": folder}
    )
    assert made.status_code == 200, made.text
    url = f"/api/filesystem/files/{made.json()['id']}/permission/owner"
    assert actors.call("admin", "PUT", url, {"owner": owner}).status_code == 200


def _run(actors: Actors, user: str, path: str) -> Any:
    started = actors.call(user, "POST", f"/api/job-execution{path}/trigger")
    assert started.status_code == 200, started.text
    return wait_terminal(actors.node, started.json()["job-execution-id"], timeout=120)


def _import(actors: Actors, user: str, name: str, path: str) -> Any:
    body = {"path": name, "source": {"kind": "csv", "path": path}, "schema": SCHEMA}
    return actors.call(user, "POST", "/rest/import-job", body)


@pytest.fixture
def root(running: Actors, prefix: str) -> str:
    """The test's S3 prefix; bob owns `bob-in.loc` on its `data`."""
    root = f"s3a://{BUCKET}/{prefix}"
    _location(running, "bob-in.loc", f"{root}/data", "bob")
    return root


def test_an_export_over_its_output_limit_leaves_no_object_behind(
    running: Actors, store: ObjectStore, prefix: str, root: str
) -> None:
    _location(running, "bob-out.loc", f"{root}/out/bob", "bob")
    _put(store, f"{prefix}/data/rows.csv")
    saved = _import(running, "bob", "/Users/bob/rows.imp", f"{root}/data/rows.csv")
    assert saved.status_code == 200, saved.text
    assert _run(running, "bob", "/Users/bob/rows.imp").status is JobStatus.COMPLETED
    export = {
        "path": "/Users/bob/big.exp",
        "source": {"importJob": "/Users/bob/rows.imp"},
        "sink": {"kind": "csv", "path": f"{root}/out/bob/rows.csv"},
        # bob's own limit: the run must write (and upload) less than this.
        "limits": {"outputBytes": 1},
    }
    assert running.call("bob", "POST", "/rest/export-job", export).status_code == 200
    ended = _run(running, "bob", "/Users/bob/big.exp")
    assert ended.status is JobStatus.ERROR
    assert "nothing was published" in str(ended.error_message)
    # Nothing at all: neither the sink nor the hidden object the run uploaded to.
    assert _keys(store, f"{prefix}/out") == []


def test_a_publish_that_fails_removes_the_uploaded_object(
    tmp_path: Path, store: ObjectStore, prefix: str
) -> None:
    staged = tmp_path / "rows.csv"
    staged.write_text(CSV)
    sink = f"s3a://{BUCKET}/{prefix}/out/rows.csv"
    hidden = temporary_uri(sink, "attempt-1")
    upload(store, str(staged), hidden)
    assert _keys(store, f"{prefix}/out") == [hidden.removeprefix(f"s3a://{BUCKET}/")]
    # The copy fails (the sink's bucket is gone): the run ends in ERROR, publishing nothing.
    with pytest.raises(OSError) as failed:
        publish(store, hidden, "s3a://no-such-bucket-dm/rows.csv")
    assert str(failed.value) == (
        "cannot write s3a://no-such-bucket-dm/rows.csv:"
        " the object store refused or could not be reached"
    )
    assert _keys(store, f"{prefix}/out") == []


def test_a_prefix_that_starts_like_bobs_is_not_his(
    running: Actors, store: ObjectStore, prefix: str, root: str
) -> None:
    _location(running, "x.loc", f"{root}/data-x", "admin")
    _location(running, "inner.loc", f"{root}/data/admin", "admin")
    for key in ("data/mine.csv", "data-x/secret.csv", "data/admin/secret.csv"):
        _put(store, f"{prefix}/{key}")
    for path in (
        f"{root}/data-x/secret.csv",
        f"{root}/data-x/missing.csv",
        f"{root}/data*/secret.csv",
        f"{root}/data/admin/secret.csv",
        f"{root}/data/admin/missing.csv",
    ):
        refused = _import(running, "bob", "/Users/bob/x.imp", path)
        assert refused.status_code == 400, path
        assert refused.json()["reason"] == (
            f"source: {path!r} is not inside a location you may read from"
        )
    # A glob over his whole prefix reads his object only: the admin's inner prefix is skipped.
    assert _import(running, "bob", "/Users/bob/all.imp", f"{root}/data/**").status_code == 200
    read = _run(running, "bob", "/Users/bob/all.imp")
    assert read.status is JobStatus.COMPLETED, read.error_message
    assert read.counters["IMPORT_RECORDS"] == 2


def _claimed_with_upload(
    actors: Actors, tmp_path: Path, store: ObjectStore, prefix: str
) -> tuple[Any, Outcome]:
    """A run claimed by worker "w1" and the outcome of its export: an upload to publish."""
    node = actors.node
    workbook = {"sheets": [{"kind": "sql", "name": "out", "keep": True, "sql": "SELECT 1 AS n"}]}
    node.jobs.define_job("/w/x.wbk", JobKind.WORKBOOK, workbook, "admin")
    queued = node.jobs.trigger("/w/x.wbk", admin(node))
    claimed = node.store.queue.claim_next_execution("w1")
    assert claimed is not None and claimed.id == queued.id
    staged = tmp_path / "x.csv"
    staged.write_text(CSV)
    sink = f"s3a://{BUCKET}/{prefix}/out/x.csv"
    hidden = temporary_uri(sink, "attempt-1")
    upload(store, str(staged), hidden)
    return claimed, Outcome(JobStatus.COMPLETED, moves=((hidden, sink),))


def test_a_run_no_longer_its_workers_removes_its_upload(
    actors: Actors, tmp_path: Path, store: ObjectStore, prefix: str
) -> None:
    node = actors.node
    claimed, outcome = _claimed_with_upload(actors, tmp_path, store, prefix)
    # Another worker ("w2") tries to finish it, as one declared lost meanwhile would.
    assert not node.store.queue.finish(claimed, "w2", outcome)
    assert _keys(store, f"{prefix}/out") == []


def test_an_object_whose_name_is_too_long_for_a_local_file_is_read(
    running: Actors, store: ObjectStore, prefix: str, root: str
) -> None:
    # S3 keys may be 1024 bytes; a local file name only 255. Here 304, with a dot where
    # a copy's name cut to its last 200 characters would begin (a hidden file).
    name = "L" * 104 + "." + "L" * 195 + ".csv"
    _put(store, f"{prefix}/data/long/{name}")
    for job, path in (("one", f"{root}/data/long/{name}"), ("glob", f"{root}/data/long/*.csv")):
        assert _import(running, "bob", f"/Users/bob/{job}.imp", path).status_code == 200
        read = _run(running, "bob", f"/Users/bob/{job}.imp")
        assert read.status is JobStatus.COMPLETED, read.error_message
        assert read.counters["IMPORT_RECORDS"] == 2


def test_a_failed_upload_names_the_sink_not_the_hidden_object(
    tmp_path: Path, store: ObjectStore
) -> None:
    (tmp_path / "area").mkdir()
    area = make_area(tmp_path / "area")
    source = area.sources / "n.parquet"
    pq.write_table(pa.table({"n": [1, 2, 3]}), source)
    # The sink's bucket does not exist: the upload fails.
    sink = "s3a://no-such-bucket-dm/out/n.csv"
    request = dataclasses.replace(
        area.request(
            JobKind.EXPORT,
            {"source": {"importJob": "/x.imp"}, "sink": {"kind": "csv", "path": sink}},
            inputs={"source": str(source)},
            object_store=store,
        ),
        roots=PathRoots((), ("s3a://no-such-bucket-dm/out",)),
    )
    engines = Engines("duckdb")
    try:
        with pytest.raises(JobFailed) as failed:
            engines.run(request, lambda _: None, ignore_event)
    finally:
        engines.close()
    assert failed.value.message == (
        f"cannot write {sink}: the object store refused or could not be reached"
    )


class CopyWatched(ObjectStore):
    """The operator's store, but each server-side part copy first runs `during`."""

    # The S3 request `during` runs before (a method of the botocore client).
    watched = "upload_part_copy"

    def __init__(self, store: ObjectStore, during: Any) -> None:
        super().__init__(store.endpoint, store.region, store.access_key, store.secret_key)
        object.__setattr__(self, "_during", during)

    def client(self) -> Any:
        real, during, watched = super().client(), self._during, self.watched  # type: ignore[attr-defined]

        class Watched:
            def __getattr__(self, name: str) -> Any:
                if name != watched:
                    return getattr(real, name)

                def call(**request: Any) -> Any:
                    during()
                    return getattr(real, name)(**request)

                return call

        return Watched()


@pytest.mark.parametrize("finishing", ["finish", "finish_and_claim"])
def test_publishing_an_object_does_not_hold_the_writer_lock(
    actors: Actors, tmp_path: Path, store: ObjectStore, prefix: str, finishing: str
) -> None:
    # A copy of a large object takes minutes on a real store: under the
    # finishing transaction it stopped every other write of the server (on
    # SQLite, one writer at a time). Another user's save, made from another
    # thread while the copy runs, must get through before the copy ends.
    import threading

    node = actors.node
    claimed, outcome = _claimed_with_upload(actors, tmp_path, store, prefix)
    saved: list[str] = []
    during_copy: list[list[str]] = []

    def another_write() -> None:
        def save() -> None:
            other = {"sheets": [{"kind": "sql", "name": "o", "keep": True, "sql": "SELECT 2 AS n"}]}
            node.jobs.define_job("/w/other.wbk", JobKind.WORKBOOK, other, "admin")
            saved.append("saved")

        thread = threading.Thread(target=save, daemon=True)
        thread.start()
        thread.join(30)  # blocked until the copy ends if the copy's caller holds the lock
        during_copy.append(list(saved))

    node.store.queue.object_store = CopyWatched(store, another_write)
    if finishing == "finish":
        assert node.store.queue.finish(claimed, "w1", outcome)
    else:
        ended, _ = node.store.queue.finish_and_claim(claimed, "w1", outcome, lambda c, e: None)
        assert ended
    assert during_copy == [["saved"]]
    # Published once, whole, and the hidden upload is gone after the commit.
    assert _keys(store, f"{prefix}/out") == [f"{prefix}/out/x.csv"]
    with store.filesystem().open_input_stream(f"{BUCKET}/{prefix}/out/x.csv") as read:
        assert read.read().decode() == CSV


# Each of these objects is 13 bytes; the node may copy 20 for one run.
@pytest.mark.parametrize("source_cap", [20])
def test_a_source_over_the_copy_cap_is_refused_before_anything_is_copied(
    running: Actors, store: ObjectStore, prefix: str, root: str
) -> None:
    _put(store, f"{prefix}/data/one.csv")
    _put(store, f"{prefix}/data/two.csv")
    _put(store, f"{prefix}/data/big.csv", CSV + "3,c\n" * 3)
    for job, path, total in (
        ("big", f"{root}/data/big.csv", 25),
        # Each object is under the cap; together they are over it.
        ("glob", f"{root}/data/[ot]*.csv", 26),
    ):
        assert _import(running, "bob", f"/Users/bob/{job}.imp", path).status_code == 200
        ended = _run(running, "bob", f"/Users/bob/{job}.imp")
        assert ended.status is JobStatus.ERROR
        # The listing's sum, not a copy that ran into the cap (that says "grew past").
        assert ended.error_message == (
            f"source {path!r} is {total} bytes, more than the 20 bytes"
            " a run may copy from the object store; nothing was copied"
        )
        assert not (running.node.settings.staging_root / str(ended.id) / "_objects").exists()
    # Under the cap, the same source runs.
    one = f"{root}/data/one.csv"
    assert _import(running, "bob", "/Users/bob/one.imp", one).status_code == 200
    read = _run(running, "bob", "/Users/bob/one.imp")
    assert read.status is JobStatus.COMPLETED, read.error_message
    assert read.counters["IMPORT_RECORDS"] == 2


def test_the_copy_cap_is_an_operator_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATAMILL_SOURCE_MAX_BYTES", raising=False)
    assert Settings().source_max_bytes is None
    monkeypatch.setenv("DATAMILL_SOURCE_MAX_BYTES", "1000000")
    assert Settings().source_max_bytes == 1_000_000


def test_a_source_the_staging_disk_has_no_room_for_is_refused() -> None:
    free = 5 * FREE_MARGIN
    room = free - FREE_MARGIN
    # Room for exactly its bytes: copied, at most that many.
    assert copy_budget("s3a://b/x/*.csv", room, None, free) == room
    assert copy_budget("s3a://b/x/*.csv", 10, 100, free) == 100
    with pytest.raises(JobFailed) as failed:
        copy_budget("s3a://b/x/*.csv", room + 1, None, free)
    assert failed.value.message == (
        f"source 's3a://b/x/*.csv' is {room + 1} bytes, more than the {room} bytes"
        " the worker's disk has room for (its free space less 1 GiB); nothing was copied"
    )
    # A cap above the free space does not lift it; a disk under the margin holds nothing.
    with pytest.raises(JobFailed, match="more than the 4294967296 bytes the worker's disk"):
        copy_budget("s3a://b/x.csv", room + 1, 10 * free, free)
    with pytest.raises(JobFailed, match="is 1 bytes, more than the 0 bytes the worker's disk"):
        copy_budget("s3a://b/x.csv", 1, None, FREE_MARGIN - 1)


def test_a_full_local_disk_is_not_blamed_on_the_object_store(
    tmp_path: Path, store: ObjectStore, prefix: str
) -> None:
    _put(store, f"{prefix}/data/rows.csv")
    # The copy's file is the kernel's always-full device: each write fails with ENOSPC.
    (tmp_path / "00000").mkdir()
    (tmp_path / "00000" / "rows.csv").symlink_to("/dev/full")
    uri = f"s3a://{BUCKET}/{prefix}/data/rows.csv"
    with pytest.raises(JobFailed) as failed:
        copy_in(store, [ObjectPath(BUCKET, f"{prefix}/data/rows.csv")], str(tmp_path))
    assert failed.value.message == f"the worker's disk is full while copying {uri}"


def test_an_object_grown_since_its_listing_is_copied_no_further_than_checked(
    tmp_path: Path, store: ObjectStore, prefix: str
) -> None:
    # Listed (and checked) at 13 bytes, replaced by a larger object before the copy.
    _put(store, f"{prefix}/data/rows.csv", CSV * 100)
    uri = f"s3a://{BUCKET}/{prefix}/data/rows.csv"
    with pytest.raises(JobFailed) as failed:
        copy_in(store, [ObjectPath(BUCKET, f"{prefix}/data/rows.csv")], str(tmp_path), 13)
    assert failed.value.message == (
        f"cannot copy {uri}: the source grew past the 13 bytes"
        " this run may copy since it was listed"
    )
    # Exactly the budget: copied whole.
    _put(store, f"{prefix}/data/rows.csv")
    (copied,) = copy_in(store, [ObjectPath(BUCKET, f"{prefix}/data/rows.csv")], str(tmp_path), 13)
    assert Path(copied).read_text() == CSV


class ListWatched(CopyWatched):
    """The store, but `during` runs before each listing request."""

    watched = "list_objects_v2"


def ten_keys_paged(
    store: ObjectStore, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> tuple[ListWatched, list[int], str]:
    """Ten keys `f00.csv`... below `<prefix>/data`, listed two a page by a store counting pages."""
    monkeypatch.setattr(objects, "LIST_PAGE", 2)
    for n in range(10):
        _put(store, f"{prefix}/data/f{n:02d}.csv")
    pages: list[int] = []
    return ListWatched(store, lambda: pages.append(1)), pages, f"s3a://{BUCKET}/{prefix}/data"


def test_a_glob_over_the_cap_stops_listing_once_past_it(
    store: ObjectStore, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 10,001 keys took 6 s to refuse: the whole prefix was listed before the
    # cap was looked at. Two keys a listing page here, ten keys, a cap of 3:
    # the fourth match (page 2) refuses the glob; pages 3 to 5 are never asked.
    watched, pages, root = ten_keys_paged(store, prefix, monkeypatch)
    with pytest.raises(InvalidInput) as refused:
        objects.match_objects(watched, f"{root}/*.csv", (root,), limit=3)
    assert refused.value.message == f"source glob '{root}/*.csv' matches more than 3 files"
    assert len(pages) == 2
    # Under the cap, every page is read and every match found, in key order.
    pages.clear()
    found = objects.match_objects(watched, f"{root}/f0[2-8].csv", (root,), limit=7)
    assert [p.key.rsplit("/", 1)[1] for p, _ in found] == [f"f0{n}.csv" for n in range(2, 9)]
    assert {size for _, size in found} == {len(CSV)}
    assert len(pages) == 5
