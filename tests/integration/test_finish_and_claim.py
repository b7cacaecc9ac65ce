"""A slot ends its run and claims its next one in one commit (store/queue.py finish_and_claim)."""

from __future__ import annotations

import os

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from datamill.bootstrap import Node
from datamill.domain import runlog as rl
from datamill.domain.records import Execution
from datamill.domain.status import JobKind, JobStatus
from datamill.store import executions as ex
from datamill.store import tables as t
from datamill.store.queue import Outcome
from datamill.store.runlog import read_log
from tests.helpers import admin

CSV_IMPORT = {"source": {"kind": "csv", "path": "/tmp/x.csv"}}


def _job(node: Node, name: str) -> str:
    entry, _ = node.jobs.define_job(
        f"/Data/ImportJobs/{name}.imp", JobKind.IMPORT, CSV_IMPORT, "admin"
    )
    return entry.path


def _run(node: Node, execution_id: int) -> Execution:
    with node.store.db.read() as conn:
        return ex.get_execution(conn, execution_id)


def _seen_in_transaction(conn: Connection, execution: Execution) -> tuple[int, str, str]:
    """What `prepare` sees: the claimed run and the ended one, in the claim's transaction."""
    statuses = dict(conn.execute(sa.select(t.executions.c.id, t.executions.c.status)).all())
    return execution.id, statuses[execution.id], statuses[execution.id - 1]


def test_the_finish_ends_the_run_and_claims_the_same_jobs_next_one_in_one_commit(
    node: Node,
) -> None:
    queue = node.store.queue
    queue.register_worker("w1", "host", os.getpid())
    path = _job(node, "a")
    first = node.jobs.trigger(path, admin(node))
    second = node.jobs.trigger(path, admin(node))
    claimed = queue.claim_next_execution("w1")
    assert claimed is not None and claimed.id == first.id
    changes: list[None] = []
    node.store.db.run_change_listeners.append(lambda: changes.append(None))

    ended, following = queue.finish_and_claim(
        claimed, "w1", Outcome(JobStatus.COMPLETED), _seen_in_transaction
    )

    assert ended is True
    assert following is not None
    execution, prepared = following
    # The same job's next run: startable because its previous one ended first,
    # in the same transaction, where `prepare` saw both.
    assert execution.id == second.id and execution.status is JobStatus.RUNNING
    assert prepared == (second.id, JobStatus.RUNNING.value, JobStatus.COMPLETED.value)
    done, running = _run(node, first.id), _run(node, second.id)
    assert (done.status, done.progress) == (JobStatus.COMPLETED, 1.0)
    assert (running.status, running.worker_id, running.attempts) == (JobStatus.RUNNING, "w1", 1)
    with node.store.db.read() as conn:
        assert [e.event for e in read_log(conn, first.id)] == [rl.FINISHED]
    # One commit: waiting requests are woken once, not once per change.
    assert changes == [None]


def test_with_nothing_startable_the_finish_claims_nothing(node: Node) -> None:
    queue = node.store.queue
    queue.register_worker("w1", "host", os.getpid())
    run = node.jobs.trigger(_job(node, "a"), admin(node))
    claimed = queue.claim_next_execution("w1")
    assert claimed is not None and claimed.id == run.id
    prepared: list[int] = []

    def prepare(_conn: Connection, execution: Execution) -> None:
        prepared.append(execution.id)

    assert queue.finish_and_claim(claimed, "w1", Outcome(JobStatus.ERROR), prepare) == (True, None)
    assert _run(node, run.id).status is JobStatus.ERROR
    assert prepared == []


def test_a_run_no_longer_ours_is_not_ended_and_nothing_is_claimed(node: Node) -> None:
    queue = node.store.queue
    queue.register_worker("w1", "host", os.getpid())
    path = _job(node, "a")
    first = node.jobs.trigger(path, admin(node))
    other = node.jobs.trigger(_job(node, "b"), admin(node))
    claimed = queue.claim_next_execution("w1")
    assert claimed is not None and claimed.id == first.id

    ended, following = queue.finish_and_claim(
        claimed, "w2", Outcome(JobStatus.COMPLETED), _seen_in_transaction
    )

    assert (ended, following) == (False, None)
    assert _run(node, first.id).status is JobStatus.RUNNING
    assert _run(node, other.id).status is JobStatus.QUEUED


def test_a_claim_that_fails_never_costs_the_run_its_end(node: Node) -> None:
    queue = node.store.queue
    queue.register_worker("w1", "host", os.getpid())
    path = _job(node, "a")
    first = node.jobs.trigger(path, admin(node))
    second = node.jobs.trigger(path, admin(node))
    claimed = queue.claim_next_execution("w1")
    assert claimed is not None

    def losing(_conn: Connection, _execution: Execution) -> None:
        # What a claim race on PostgreSQL raises (the unique index on running runs).
        raise IntegrityError("INSERT ...", {}, Exception("duplicate key"))

    ended, following = queue.finish_and_claim(claimed, "w1", Outcome(JobStatus.COMPLETED), losing)

    # Rolled back together, then ended alone: the run ends, the next one waits.
    assert (ended, following) == (True, None)
    assert _run(node, first.id).status is JobStatus.COMPLETED
    assert _run(node, second.id).status is JobStatus.QUEUED
    with node.store.db.read() as conn:
        assert [e.event for e in read_log(conn, first.id)] == [rl.FINISHED]


def test_any_other_failure_rolls_back_both_and_the_run_can_still_be_ended(node: Node) -> None:
    queue = node.store.queue
    queue.register_worker("w1", "host", os.getpid())
    path = _job(node, "a")
    first = node.jobs.trigger(path, admin(node))
    second = node.jobs.trigger(path, admin(node))
    claimed = queue.claim_next_execution("w1")
    assert claimed is not None

    def broken(_conn: Connection, _execution: Execution) -> None:
        raise RuntimeError("a bug in prepare")

    with pytest.raises(RuntimeError):
        queue.finish_and_claim(claimed, "w1", Outcome(JobStatus.COMPLETED), broken)
    # Nothing of the transaction stays: the worker retries the finish alone.
    assert _run(node, first.id).status is JobStatus.RUNNING
    assert _run(node, second.id).status is JobStatus.QUEUED
    with node.store.db.read() as conn:
        assert read_log(conn, first.id) == []
    assert queue.finish(claimed, "w1", Outcome(JobStatus.COMPLETED))
    assert _run(node, first.id).status is JobStatus.COMPLETED
