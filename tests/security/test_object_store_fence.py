"""A stalled attempt's late publish never lands on top of a newer attempt's (attack review).

The attack: a worker checks that the run is still its own, then stalls
past `DATAMILL_WORKER_LOST_SECONDS` right before its object appears; the
run is declared lost, retried on another worker and published there; then
the stalled worker wakes and completes its publish. The sink must end with
the data of the attempt that COMPLETED. Each test forces its interleaving
with a hook on the S3 request that makes the object appear (real moto,
real SQLite and PostgreSQL), no timing.
"""

from __future__ import annotations

import datetime as dt
import socket
from pathlib import Path

import pytest

from datamill.bootstrap import Node
from datamill.domain.records import Execution
from datamill.domain.retry import RetryPolicy
from datamill.domain.status import JobKind, JobStatus
from datamill.engine import object_publish
from datamill.engine.object_publish import publish
from datamill.engine.objects import ObjectStore, temporary_uri, upload
from datamill.store.queue import Outcome
from tests.helpers import admin, execution
from tests.security.conftest import Actors
from tests.security.test_object_store_attacks import CopyWatched, _keys
from tests.security.test_object_store_attacks import prefix as prefix
from tests.security.test_object_store_attacks import settings as settings
from tests.security.test_object_store_attacks import source_cap as source_cap
from tests.security.test_object_store_attacks import store as store
from tests.spark.conftest import BUCKET
from tests.spark.conftest import s3_endpoint as s3_endpoint


class CompleteWatched(CopyWatched):
    """The store, but `during` runs right before each upload is completed (the object appears)."""

    watched = "complete_multipart_upload"


def _read(store: ObjectStore, key: str) -> str:
    with store.filesystem().open_input_stream(f"{BUCKET}/{key}") as read:
        return str(read.read().decode())


def _attempt(
    node: Node, tmp_path: Path, worker: str, sink: str, text: str
) -> tuple[Execution, Outcome]:
    """Claim the run for `worker` and upload its export (`text`) to its hidden object."""
    claimed = node.store.queue.claim_next_execution(worker)
    assert claimed is not None
    staged = tmp_path / f"{worker}.csv"
    staged.write_text(text)
    hidden = temporary_uri(sink, f"{worker}-{claimed.attempts}")
    assert node.settings.object_store is not None
    upload(node.settings.object_store, str(staged), hidden)
    return claimed, Outcome(JobStatus.COMPLETED, moves=((hidden, sink),))


def _declare_lost(node: Node) -> None:
    """The stalled worker's heartbeat is too old (it never registered): retried at once."""
    lost = node.store.queue.reconcile_lost_workers(
        dt.timedelta(seconds=60),
        is_local_pid_alive=lambda pid: True,
        hostname=socket.gethostname(),
        retry_policy=RetryPolicy(retries=1, delay_seconds=0),
    )
    assert len(lost) == 1


@pytest.fixture
def sink(actors: Actors, prefix: str) -> str:
    """The sink of a queued run of a workbook (what its export writes)."""
    workbook = {"sheets": [{"kind": "sql", "name": "out", "keep": True, "sql": "SELECT 1 AS n"}]}
    actors.node.jobs.define_job("/w/x.wbk", JobKind.WORKBOOK, workbook, "admin")
    actors.node.jobs.trigger("/w/x.wbk", admin(actors.node))
    return f"s3a://{BUCKET}/{prefix}/out/x.csv"


def test_a_stalled_attempts_late_publish_does_not_overwrite_its_retrys(
    actors: Actors, tmp_path: Path, store: ObjectStore, prefix: str, sink: str
) -> None:
    node = actors.node
    stale, stale_outcome = _attempt(node, tmp_path, "w1", sink, "id\n1\n")
    retried: list[bool] = []

    def retry_publishes_first() -> None:
        # w1 has checked the run is its own and is about to complete its
        # upload: it stalls here; the run is lost, retried and published by w2.
        if retried:
            return
        retried.append(True)
        _declare_lost(node)
        retry, retry_outcome = _attempt(node, tmp_path, "w2", sink, "id\n2\n")
        assert retry.attempts == stale.attempts + 1
        retried.append(node.store.queue.finish(retry, "w2", retry_outcome))

    node.store.queue.object_store = CompleteWatched(store, retry_publishes_first)
    # The stalled worker wakes: its publish and its finish do nothing.
    assert node.store.queue.finish(stale, "w1", stale_outcome) is False
    assert retried == [True, True]
    assert _read(store, f"{prefix}/out/x.csv") == "id\n2\n"
    ended = execution(node, stale.id)
    assert ended.status is JobStatus.COMPLETED and ended.attempts == 2
    # Neither attempt's hidden upload stays behind.
    assert _keys(store, f"{prefix}/out") == [f"{prefix}/out/x.csv"]


def test_a_stalled_attempt_does_not_end_the_retry_its_own_worker_claimed(
    actors: Actors, tmp_path: Path, store: ObjectStore, prefix: str, sink: str
) -> None:
    # The whole worker stalled (its heartbeat too) and came back under the
    # same id; another of its slots claimed the retry before the stalled
    # slot's publish went on. That slot holds attempt 1, not the run.
    node = actors.node
    stale, stale_outcome = _attempt(node, tmp_path, "w1", sink, "id\n1\n")
    retried: list[tuple[Execution, Outcome]] = []

    def retried_on_the_same_worker() -> None:
        if not retried:
            _declare_lost(node)
            retried.append(_attempt(node, tmp_path, "w1", sink, "id\n2\n"))

    node.store.queue.object_store = CompleteWatched(store, retried_on_the_same_worker)
    assert node.store.queue.finish(stale, "w1", stale_outcome) is False
    retry, retry_outcome = retried[0]
    assert execution(node, stale.id).status is JobStatus.RUNNING
    assert node.store.queue.finish(retry, "w1", retry_outcome) is True
    assert _read(store, f"{prefix}/out/x.csv") == "id\n2\n"
    ended = execution(node, stale.id)
    assert ended.status is JobStatus.COMPLETED and ended.attempts == 2


def test_an_attempt_whose_upload_another_publisher_replaced_publishes_again(
    actors: Actors, tmp_path: Path, store: ObjectStore, prefix: str, sink: str
) -> None:
    # Another job writes the same sink right before this run's object would
    # appear, and its publish aborts this run's pending upload: the run is
    # still its worker's, so it publishes again, last, and COMPLETES.
    node = actors.node
    run, outcome = _attempt(node, tmp_path, "w1", sink, "id\n1\n")
    other = tmp_path / "other.csv"
    other.write_text("id\n9\n")
    interfered: list[bool] = []

    def another_job_publishes() -> None:
        if interfered:
            return
        interfered.append(True)
        hidden = temporary_uri(sink, "other-job")
        upload(store, str(other), hidden)
        interfered.append(publish(store, hidden, sink))

    node.store.queue.object_store = CompleteWatched(store, another_job_publishes)
    assert node.store.queue.finish(run, "w1", outcome) is True
    assert interfered == [True, True]
    assert _read(store, f"{prefix}/out/x.csv") == "id\n1\n"
    assert execution(node, run.id).status is JobStatus.COMPLETED
    assert _keys(store, f"{prefix}/out") == [f"{prefix}/out/x.csv"]


def test_an_attempt_replaced_at_every_try_ends_in_error_not_half_published(
    actors: Actors, tmp_path: Path, store: ObjectStore, prefix: str, sink: str
) -> None:
    _, outcome = _attempt(actors.node, tmp_path, "w1", sink, "id\n1\n")
    other = tmp_path / "other.csv"
    other.write_text("id\n9\n")

    tries: list[bool] = []

    def another_job_publishes_each_time() -> None:
        tries.append(True)
        hidden = temporary_uri(sink, "other-job")
        upload(store, str(other), hidden)
        assert publish(store, hidden, sink)

    watched = CompleteWatched(store, another_job_publishes_each_time)
    with pytest.raises(OSError) as failed:
        publish(watched, outcome.moves[0][0], sink)
    assert str(failed.value) == (
        f"cannot write {sink}: the object store refused or could not be reached"
    )
    assert tries == [True] * object_publish.TRIES
    assert _read(store, f"{prefix}/out/x.csv") == "id\n9\n"
    assert _keys(store, f"{prefix}/out") == [f"{prefix}/out/x.csv"]


@pytest.mark.parametrize("size", [0, 5 * 1024 * 1024 + 3])
def test_an_object_is_published_whole_in_one_or_many_parts(
    tmp_path: Path, store: ObjectStore, prefix: str, size: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Parts of 5 MiB (S3's smallest but the last): the object is two parts.
    monkeypatch.setattr(object_publish, "PART_BYTES", 5 * 1024 * 1024)
    data = bytes(i % 251 for i in range(size))
    staged = tmp_path / "big.bin"
    staged.write_bytes(data)
    sink = f"s3a://{BUCKET}/{prefix}/out/big.bin"
    hidden = temporary_uri(sink, "attempt-1")
    upload(store, str(staged), hidden)
    assert publish(store, hidden, sink) is True
    with store.filesystem().open_input_stream(f"{BUCKET}/{prefix}/out/big.bin") as read:
        assert read.read() == data
    assert _keys(store, f"{prefix}/out") == [f"{prefix}/out/big.bin"]


@pytest.mark.parametrize("object_store", [True, False])
def test_a_sink_named_like_a_temporary_upload_is_refused_at_save(
    actors: Actors, prefix: str, object_store: bool
) -> None:
    # The bucket lifecycle rule docs/scale-out.md recommends deletes
    # `.datamill-*` objects: a sink so named would lose its data a day later.
    home = actors.node.settings.resolved_home
    folder = f"s3a://{BUCKET}/{prefix}/out" if object_store else str(home / "files")
    made = actors.call(
        "admin", "POST", "/rest/location", {"path": "/Connections/out.loc", "folder": folder}
    )
    assert made.status_code == 200, made.text
    source = {"kind": "csv", "path": f"s3a://{BUCKET}/{prefix}/data/a.csv"}
    imported = {"source": source, "schema": [{"name": "id", "type": "BIGINT"}]}
    actors.node.jobs.define_job("/Users/bob/rows.imp", JobKind.IMPORT, imported, "bob")
    for user, sink in (
        ("admin", {"kind": "csv", "path": f"{folder}/.datamill-x.csv"}),
        ("admin", {"kind": "csv", "path": f"{folder}/sub/.datamill-"}),
        ("bob", {"kind": "csv", "location": "/Connections/out.loc", "path": ".datamill-a.csv"}),
    ):
        export = {"path": f"/Users/{user}/x.exp", "source": {"importJob": "/Users/bob/rows.imp"}}
        refused = actors.call(user, "POST", "/rest/export-job", export | {"sink": sink})
        assert refused.status_code == 400, refused.text
        name = str(sink["path"]).rsplit("/", 1)[-1]
        assert refused.json()["reason"] == (
            f"sink: the file name {name!r} is reserved: names starting with"
            " '.datamill-' are Datamill's temporary uploads"
        )
    # The same folder and a name that only contains it are fine.
    export = {"path": "/Users/admin/x.exp", "source": {"importJob": "/Users/bob/rows.imp"}}
    sink = {"kind": "csv", "path": f"{folder}/x.datamill-a.csv"}
    assert (
        actors.call("admin", "POST", "/rest/export-job", export | {"sink": sink}).status_code == 200
    )


class AbortRefused(CopyWatched):
    """The store, but it refuses every abort of a multipart upload (no permission for it)."""

    watched = "abort_multipart_upload"


def test_a_publish_that_cannot_abort_a_pending_upload_does_not_publish(
    tmp_path: Path, store: ObjectStore, prefix: str
) -> None:
    # A pending upload to the sink may be a stalled attempt's: left there, it
    # could still land on top. Unable to abort it, the publish fails (the run
    # ends in ERROR) rather than going on without the fence.
    from botocore.exceptions import ClientError

    sink = f"s3a://{BUCKET}/{prefix}/out/x.csv"
    pending = store.client().create_multipart_upload(Bucket=BUCKET, Key=f"{prefix}/out/x.csv")
    staged = tmp_path / "x.csv"
    staged.write_text("id\n1\n")
    hidden = temporary_uri(sink, "attempt-1")
    upload(store, str(staged), hidden)

    def refuse() -> None:
        raise ClientError({"Error": {"Code": "AccessDenied"}}, "AbortMultipartUpload")

    with pytest.raises(OSError) as failed:
        publish(AbortRefused(store, refuse), hidden, sink)
    assert str(failed.value) == (
        f"cannot write {sink}: the object store refused or could not be reached"
    )
    assert _keys(store, f"{prefix}/out") == []
    store.client().abort_multipart_upload(
        Bucket=BUCKET, Key=f"{prefix}/out/x.csv", UploadId=pending["UploadId"]
    )


def test_a_finish_retried_after_its_object_was_published_completes_the_run(
    actors: Actors, tmp_path: Path, store: ObjectStore, prefix: str, sink: str
) -> None:
    """The first finish published the object, then lost its transaction (the database went away).

    The worker's retried finish finds the object published and does not copy
    it again: the hidden upload is gone by then, and a second copy failed the
    run that had written its sink.
    """
    node = actors.node
    claimed, outcome = _attempt(node, tmp_path, "w1", sink, "id\n1\n")
    node.store.queue._publish_objects_first(claimed, "w1", outcome)  # no commit followed
    assert node.store.queue.finish(claimed, "w1", outcome)
    assert execution(node, claimed.id).status is JobStatus.COMPLETED
    assert _read(store, f"{prefix}/out/x.csv") == "id\n1\n"
    assert _keys(store, f"{prefix}/out") == [f"{prefix}/out/x.csv"]
