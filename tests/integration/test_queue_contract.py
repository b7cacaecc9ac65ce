"""The queue's per-run writes a worker relies on: progress and handing a run back.

Found by mutation testing (docs/testing.md): no test read what report_progress
and hand_back leave in the store.
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa

from datamill.bootstrap import Node
from datamill.domain import runlog as rl
from datamill.domain.records import Execution
from datamill.domain.status import JobKind, JobStatus
from datamill.store import data as data_store
from datamill.store import executions as ex
from datamill.store import tables as t
from datamill.store.queue import Outcome
from datamill.store.runlog import LogEvent, read_log
from tests.helpers import admin

CSV_IMPORT = {"source": {"kind": "csv", "path": "/tmp/x.csv"}}


def _claimed(node: Node, name: str, worker: str = "w1", *, register: bool = True) -> Execution:
    """A new job's run, claimed by `worker` (registered first unless it already is)."""
    entry, _ = node.jobs.define_job(
        f"/Data/ImportJobs/{name}.imp", JobKind.IMPORT, CSV_IMPORT, "admin"
    )
    run = node.jobs.trigger(entry.path, admin(node))
    queue = node.store.queue
    if register:
        queue.register_worker(worker, "host", os.getpid())
    claimed = queue.claim_next_execution(worker)
    assert claimed is not None and claimed.id == run.id
    return claimed


def _run(node: Node, execution_id: int) -> Execution:
    with node.store.db.read() as conn:
        return ex.get_execution(conn, execution_id)


def _events(node: Node, execution_id: int) -> list[LogEvent]:
    with node.store.db.read() as conn:
        return read_log(conn, execution_id)


def test_progress_is_kept_between_0_and_1_with_its_events_and_only_while_running(
    node: Node,
) -> None:
    queue = node.store.queue
    run = _claimed(node, "p")
    queue.report_progress(run.id, 0.25)
    assert _run(node, run.id).progress == 0.25
    assert _events(node, run.id) == []
    queue.report_progress(run.id, 1.5, [rl.pending(rl.SHEET, name="s", records=4)])
    assert _run(node, run.id).progress == 1.0
    [event] = _events(node, run.id)
    assert (event.event, event.detail) == (rl.SHEET, {"name": "s", "records": 4})
    queue.report_progress(run.id, -0.5)
    assert _run(node, run.id).progress == 0.0
    # A run that has ended keeps the progress it ended with.
    assert queue.finish(run, "w1", Outcome(JobStatus.COMPLETED))
    queue.report_progress(run.id, 0.5)
    assert _run(node, run.id).progress == 1.0


def _published(node: Node, tmp_path: Path) -> int:
    """The id of one published result (of a job of its own)."""
    run = _claimed(node, "source", worker="publisher")
    staging = tmp_path / "staging"
    staging.mkdir()
    pq.write_table(pa.table({"n": [1]}), staging / "data.parquet")
    outcome = Outcome(JobStatus.COMPLETED, sheets={"data": 1}, staging_dir=str(staging))
    assert node.store.queue.finish(run, "publisher", outcome)
    with node.store.db.read() as conn:
        [result] = data_store.outputs_of(conn, run.id)
    return result.id


def test_a_run_handed_back_is_queued_afresh_and_only_by_its_worker(
    node: Node, tmp_path: Path
) -> None:
    queue = node.store.queue
    data_id = _published(node, tmp_path)
    run = _claimed(node, "h")
    with node.store.db.write() as conn:
        data_store.record_inputs(conn, run.id, [data_id])
    queue.report_progress(run.id, 0.5)

    # Another worker cannot hand it back: nothing changes.
    assert queue.hand_back(run.id, "w2") is False
    kept = _run(node, run.id)
    assert (kept.status, kept.worker_id, kept.progress) == (JobStatus.RUNNING, "w1", 0.5)
    with node.store.db.read() as conn:
        assert [d.id for d in data_store.inputs_of(conn, run.id)] == [data_id]
    assert _events(node, run.id) == []

    assert queue.hand_back(run.id, "w1", reason="draining") is True
    back = _run(node, run.id)
    assert back.status is JobStatus.QUEUED
    assert (back.started_at, back.worker_id, back.heartbeat_at, back.progress) == (
        None,
        None,
        None,
        None,
    )
    with node.store.db.read() as conn:
        assert data_store.inputs_of(conn, run.id) == []
    [event] = _events(node, run.id)
    assert (event.event, event.detail) == (rl.HANDED_BACK, {"worker": "w1", "reason": "draining"})
    # Handed back twice: the second time it is no longer running.
    assert queue.hand_back(run.id, "w1") is False
    # Claimed again and handed back for the default reason.
    again = queue.claim_next_execution("w1")
    assert again is not None and again.id == run.id
    assert queue.hand_back(run.id, "w1") is True
    assert _events(node, run.id)[-1].detail == {"worker": "w1", "reason": "shutdown"}


def test_hand_back_returns_only_the_run_named_and_never_an_ended_one(node: Node) -> None:
    queue = node.store.queue
    first = _claimed(node, "one")
    second = _claimed(node, "two", register=False)
    assert queue.hand_back(first.id, "w1") is True
    assert _run(node, first.id).status is JobStatus.QUEUED
    # The worker's other run is untouched.
    kept = _run(node, second.id)
    assert (kept.status, kept.worker_id) == (JobStatus.RUNNING, "w1")
    # An ended run keeps its worker's name but is never queued again.
    assert queue.finish(second, "w1", Outcome(JobStatus.COMPLETED))
    assert queue.hand_back(second.id, "w1") is False
    assert _run(node, second.id).status is JobStatus.COMPLETED
    assert [e.event for e in _events(node, second.id)] == [rl.FINISHED]


def test_progress_of_one_run_leaves_the_others(node: Node) -> None:
    queue = node.store.queue
    first = _claimed(node, "a")
    second = _claimed(node, "b", register=False)
    queue.report_progress(first.id, 0.5)
    assert (_run(node, first.id).progress, _run(node, second.id).progress) == (0.5, 0.0)


def test_a_worker_forgotten_by_the_store_comes_back_as_itself_on_its_next_heartbeat(
    node: Node,
) -> None:
    queue = node.store.queue
    run = _claimed(node, "r", worker="w9")
    queue.unregister_worker("w9")  # as when another node declared it lost
    assert queue.heartbeat("w9") == {run.id: False}
    with node.store.db.read() as conn:
        rows = conn.execute(sa.select(t.workers)).all()
    assert [(r.id, r.hostname, r.pid) for r in rows] == [("w9", os.uname().nodename, os.getpid())]
