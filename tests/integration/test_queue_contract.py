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

from datamill.bootstrap import Node, open_node
from datamill.domain import runlog as rl
from datamill.domain.records import Execution, User
from datamill.domain.status import JobKind, JobStatus
from datamill.settings import Settings
from datamill.store import data as data_store
from datamill.store import executions as ex
from datamill.store import tables as t
from datamill.store.queue import Outcome
from datamill.store.runlog import LogEvent, read_log
from datamill.store.store import Store
from tests.helpers import admin, password_hash

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
    assert rows[0].started_at is not None and rows[0].started_at == rows[0].heartbeat_at


# ---------------------------------------------------------------- claims (mutants of _claiming)


def _user(node: Node, name: str) -> User:
    """A user who may run every job (ADMIN): fair shares count runs by who triggered them."""
    node.store.users.create(name, password_hash("pw"), roles=("ADMIN",))
    with node.store.db.read() as conn:
        found = node.store.users.get(conn, name)
    assert found is not None
    return found


def _job(node: Node, name: str) -> str:
    path = f"/Data/ImportJobs/{name}.imp"
    node.jobs.define_job(path, JobKind.IMPORT, CSV_IMPORT, "admin")
    return path


def test_a_claim_starts_the_run_now_on_its_worker(node: Node) -> None:
    run = _claimed(node, "now", worker="w3")
    assert run.status is JobStatus.RUNNING and run.worker_id == "w3" and run.attempts == 1
    assert run.started_at is not None and run.heartbeat_at == run.started_at
    assert run.started_at >= run.created_at
    assert _run(node, run.id).started_at == run.started_at


def test_runs_of_one_job_start_in_order_even_when_a_fair_share_prefers_the_newer(
    node: Node,
) -> None:
    """eve holds a slot and waits with bob; bob's run of the same job is newer than eve's.

    Fair shares look for bob's run first, but it may not overtake the older
    queued run of its own job (the guard the issue's audit removed).
    """
    eve, bob = _user(node, "eve"), _user(node, "bob")
    queue = node.store.queue
    queue.register_worker("w", "host", os.getpid())
    busy = node.jobs.trigger(_job(node, "busy"), eve)
    assert (queue.claim_next_execution("w") or busy).id == busy.id
    shared = _job(node, "shared")
    older = node.jobs.trigger(shared, eve)
    node.jobs.trigger(shared, bob)
    claimed = queue.claim_next_execution("w")
    assert claimed is not None and claimed.id == older.id


def test_a_user_holding_one_slot_yields_to_one_holding_none(node: Node) -> None:
    eve, bob = _user(node, "eve"), _user(node, "bob")
    queue = node.store.queue
    queue.register_worker("w", "host", os.getpid())
    first = node.jobs.trigger(_job(node, "e1"), eve)
    assert (queue.claim_next_execution("w") or first).id == first.id
    node.jobs.trigger(_job(node, "e2"), eve)
    bobs = node.jobs.trigger(_job(node, "b1"), bob)
    claimed = queue.claim_next_execution("w")
    assert claimed is not None and claimed.id == bobs.id


def test_without_fair_shares_the_oldest_run_starts_whoever_queued_it(settings: Settings) -> None:
    node = open_node(Settings(**{**settings.model_dump(), "fair_slot_shares": False}))
    try:
        zoe, amy = _user(node, "zoe"), _user(node, "amy")
        runs = [
            node.jobs.trigger(_job(node, f"j{i}"), who) for i, who in enumerate((zoe, amy, zoe))
        ]
        queue = node.store.queue
        queue.register_worker("w", "host", os.getpid())
        claimed = [queue.claim_next_execution("w") for _ in runs]
        assert [c.id if c else None for c in claimed] == [r.id for r in runs]
    finally:
        node.store.close()


def test_the_global_limit_holds_claims_back_until_a_run_ends(node: Node) -> None:
    limited = Store(
        node.settings.resolved_database_url, str(node.settings.resolved_data_root), max_running=1
    )
    try:
        runs = [node.jobs.trigger(_job(node, f"g{i}"), admin(node)) for i in range(2)]
        limited.queue.register_worker("w", "host", os.getpid())
        first = limited.queue.claim_next_execution("w")
        assert first is not None and first.id == runs[0].id
        assert limited.queue.claim_next_execution("w") is None
        assert limited.queue.finish(first, "w", Outcome(JobStatus.COMPLETED))
        second = limited.queue.claim_next_execution("w")
        assert second is not None and second.id == runs[1].id
    finally:
        limited.close()


def test_a_user_holding_a_slot_yields_to_one_sorting_after_her_too(node: Node) -> None:
    """'Another user waits' is asked both ways (names before and after hers)."""
    eve, zoe = _user(node, "eve"), _user(node, "zoe")
    queue = node.store.queue
    queue.register_worker("w", "host", os.getpid())
    first = node.jobs.trigger(_job(node, "e1"), eve)
    assert (queue.claim_next_execution("w") or first).id == first.id
    node.jobs.trigger(_job(node, "e2"), eve)
    zoes = node.jobs.trigger(_job(node, "z1"), zoe)
    claimed = queue.claim_next_execution("w")
    assert claimed is not None and claimed.id == zoes.id


def test_finish_needs_that_very_run_running_on_that_worker(node: Node) -> None:
    queue = node.store.queue
    first = _claimed(node, "f1")
    second = _claimed(node, "f2", register=False)
    # Another worker cannot finish it, nor can w1 once it was handed back.
    assert queue.finish(first, "w2", Outcome(JobStatus.COMPLETED)) is False
    assert queue.hand_back(first.id, "w1")
    assert queue.finish(first, "w1", Outcome(JobStatus.COMPLETED)) is False
    assert _run(node, first.id).status is JobStatus.QUEUED
    assert _run(node, second.id).status is JobStatus.RUNNING
