"""Remaining-time estimates read each job's own earlier runs, several jobs at once."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from datamill.bootstrap import Node
from datamill.domain.status import JobKind, JobStatus
from datamill.store import tables as t
from datamill.store.db import utcnow
from datamill.store.queue import Outcome
from tests.helpers import admin, execution

WORKBOOK = {
    "kind": "workbook",
    "sheets": [{"kind": "sql", "name": "out", "keep": True, "sql": "SELECT 1 AS one"}],
}


def _run_once(node: Node, path: str, seconds: float | None) -> int:
    """A run of `path` that is left RUNNING (seconds None) or took `seconds`."""
    queued = node.jobs.trigger(path, admin(node))
    claimed = node.store.queue.claim_next_execution("w")
    assert claimed is not None and claimed.id == queued.id
    if seconds is not None:
        node.store.queue.finish(claimed, "w", Outcome(JobStatus.COMPLETED))
    start = utcnow() - dt.timedelta(seconds=5 if seconds is None else 1000)
    values: dict[str, object] = {"started_at": start}
    if seconds is not None:
        values["finished_at"] = start + dt.timedelta(seconds=seconds)
    with node.store.db.write() as conn:
        conn.execute(sa.update(t.executions).where(t.executions.c.id == queued.id).values(values))
    return queued.id


def test_each_running_job_is_estimated_from_its_own_history(node: Node) -> None:
    durations = {
        "/w/fast.wbk": [10.0, 20.0],
        "/w/slow.wbk": [100.0, 140.0, 120.0],
        "/w/new.wbk": [],
    }
    running = {}
    for path, past in durations.items():
        node.jobs.define_job(path, JobKind.WORKBOOK, WORKBOOK, "admin")
        for seconds in past:
            _run_once(node, path, seconds)
        running[path] = _run_once(node, path, None)
    before = utcnow()
    with node.store.db.read() as conn:
        runs = [execution(node, i) for i in running.values()]
        estimates = node.jobs.remaining_many(conn, runs)
    after = utcnow()
    by_path = {path: estimates[i] for path, i in running.items()}
    # No progress yet: the mean of earlier runs minus the time since the start,
    # read at some instant between `before` and `after`.
    assert _within(node, by_path["/w/fast.wbk"], 15.0, running["/w/fast.wbk"], before, after)
    assert _within(node, by_path["/w/slow.wbk"], 120.0, running["/w/slow.wbk"], before, after)
    assert by_path["/w/new.wbk"] is None
    before = utcnow()
    with node.store.db.read() as conn:
        single = node.jobs.remaining(conn, execution(node, running["/w/slow.wbk"]))
    assert _within(node, single, 120.0, running["/w/slow.wbk"], before, utcnow())


def _within(
    node: Node,
    estimate: float | None,
    mean: float,
    run_id: int,
    before: dt.datetime,
    after: dt.datetime,
) -> bool:
    """Whether `estimate` is `mean` minus the run's age at an instant between before and after."""
    started = execution(node, run_id).started_at
    assert started is not None and estimate is not None
    return (
        mean - (after - started).total_seconds()
        <= estimate
        <= mean - (before - started).total_seconds()
    )
