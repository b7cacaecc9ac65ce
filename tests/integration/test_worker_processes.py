"""Several workers on one database: killed workers, workers on other hosts, claim order."""

from __future__ import annotations

import datetime as dt
import itertools
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from datamill.bootstrap import Node
from datamill.domain.records import Execution
from datamill.domain.status import JobStatus
from datamill.services.plans import sequential_trigger
from datamill.store import tables as t
from datamill.store.db import utcnow
from datamill.store.queue import WORKER_LOST
from datamill.worker.worker import Worker
from tests.helpers import (
    a_dead_pid,
    admin,
    define,
    execution,
    orders_import,
    totals_workbook,
    wait_for,
    wait_terminal,
    write_orders_csv,
)

SLOW_SQL = "SELECT count(*) AS n FROM range(3000000000) a WHERE a.range % 7 = 3"


class WorkerProcesses:
    """Starts `datamill worker` processes against the node's database and home."""

    def __init__(self, node: Node, log_dir: Path) -> None:
        self._node = node
        self._log_dir = log_dir
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, concurrency: int = 2, poll_seconds: float = 0.2) -> subprocess.Popen[bytes]:
        """One more worker process."""
        settings = self._node.settings
        env = dict(
            os.environ,
            DATAMILL_HOME=str(settings.resolved_home),
            DATAMILL_DATABASE_URL=settings.resolved_database_url,
            DATAMILL_CONCURRENCY=str(concurrency),
            DATAMILL_HEARTBEAT_SECONDS="0.2",
            DATAMILL_WORKER_LOST_SECONDS="2",
            DATAMILL_POLL_SECONDS=str(poll_seconds),
            DATAMILL_ENGINE_MEMORY_LIMIT="256MB",
            DATAMILL_ENGINE_THREADS="1",
        )
        log = (self._log_dir / f"worker-{len(self.processes)}.log").open("w")
        process = subprocess.Popen(
            [sys.executable, "-m", "datamill.cli.main", "worker"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.processes.append(process)
        return process

    def stop_all(self) -> None:
        """SIGTERM every worker and wait."""
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.fixture
def workers(node: Node, tmp_path: Path) -> Iterator[WorkerProcesses]:
    """A factory of worker processes, all stopped after the test."""
    pool = WorkerProcesses(node, tmp_path)
    yield pool
    pool.stop_all()


def test_a_killed_worker_leaves_no_run_stuck(
    node: Node, workers: WorkerProcesses, files_root: Path
) -> None:
    source = write_orders_csv(files_root / "in", rows=10)
    define(node, "/Data/ImportJobs/o.imp", orders_import(source))
    # No retries: this is the lost run ending in ERROR (tests/hostile/test_retries.py retries).
    slow = {**totals_workbook("/Data/ImportJobs/o.imp", SLOW_SQL), "retries": 0}
    define(node, "/Analytics/Workbooks/slow.wbk", slow)
    user = admin(node)
    first = workers.start()
    wait_terminal(node, node.jobs.trigger("/Data/ImportJobs/o.imp", user).id)
    run = wait_for(
        node, node.jobs.trigger("/Analytics/Workbooks/slow.wbk", user).id, {JobStatus.RUNNING}
    )
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    workers.start()
    lost = wait_terminal(node, run.id, timeout=30)
    assert lost.status is JobStatus.ERROR
    assert lost.error_message == WORKER_LOST
    # The replacement worker runs new work normally.
    again = wait_terminal(node, node.jobs.trigger("/Data/ImportJobs/o.imp", user).id)
    assert again.status is JobStatus.COMPLETED


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_two_workers_on_postgres_never_run_an_execution_twice(
    node: Node, workers: WorkerProcesses, files_root: Path
) -> None:
    user = admin(node)
    jobs = []
    for i in range(6):
        source = write_orders_csv(files_root / f"in{i}", rows=5)
        jobs.append(f"/Data/ImportJobs/o{i}.imp")
        define(node, jobs[-1], orders_import(source))
    ids = [node.jobs.trigger(jobs[i % len(jobs)], user).id for i in range(120)]
    workers.start()
    workers.start()
    runs = [wait_terminal(node, i, timeout=120) for i in ids]
    assert all(r.status is JobStatus.COMPLETED for r in runs), {
        r.id: r.error_message for r in runs if r.status is not JobStatus.COMPLETED
    }
    assert len({r.worker_id for r in runs}) == 2, "both workers should have taken work"
    with node.store.db.read() as conn:
        attempts = dict(conn.execute(sa.select(t.executions.c.id, t.executions.c.attempts)).all())
        published = conn.execute(
            sa.select(t.data.c.execution_id, sa.func.count()).group_by(t.data.c.execution_id)
        ).all()
    assert all(attempts[i] == 1 for i in ids)
    assert sorted(e for e, _ in published) == sorted(ids)
    assert all(n == 1 for _, n in published)
    by_config: dict[int, list[tuple[object, object]]] = {}
    for r in runs:
        by_config.setdefault(r.job_configuration_id, []).append((r.started_at, r.finished_at))
    for intervals in by_config.values():
        intervals.sort()
        for (_, end), (start, _) in itertools.pairwise(intervals):
            assert end <= start  # type: ignore[operator]


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_three_workers_run_hundreds_of_chained_executions_correctly(
    node: Node, workers: WorkerProcesses, files_root: Path
) -> None:
    user = admin(node)
    chains = 8
    for c in range(chains):
        source = write_orders_csv(files_root / f"c{c}", rows=5)
        imp = f"/Data/ImportJobs/c{c}.imp"
        define(node, imp, orders_import(source))
        previous: tuple[str, str | None] = (imp, None)
        for step in range(2):
            path = f"/Analytics/Workbooks/c{c}_{step}.wbk"
            source_ref = (
                {"importJob": previous[0]}
                if previous[1] is None
                else {"workbook": previous[0], "sheet": previous[1]}
            )
            define(
                node,
                path,
                {
                    "triggering": {"mode": "DATA_DRIVEN"},
                    "sheets": [
                        {"kind": "data", "name": "src", "source": source_ref},
                        {"kind": "sql", "name": "out", "sql": "SELECT * FROM src", "keep": True},
                    ],
                },
            )
            previous = (path, "out")
    for _ in range(3):
        workers.start(concurrency=2)
    plans = []
    for _ in range(12):
        for c in range(chains):
            plan = sequential_trigger(node.jobs, [f"/Data/ImportJobs/c{c}.imp"], user, {})
            plans.append([m.execution_id for m in plan])
    ids = [i for plan in plans for i in plan if i is not None]
    assert len(ids) == 12 * chains * 3
    runs = {i: wait_terminal(node, i, timeout=240) for i in ids}
    assert all(r.status is JobStatus.COMPLETED for r in runs.values()), {
        i: (r.status, r.error_message)
        for i, r in runs.items()
        if r.status is not JobStatus.COMPLETED
    }
    with node.store.db.read() as conn:
        attempts = dict(conn.execute(sa.select(t.executions.c.id, t.executions.c.attempts)).all())
        total = conn.execute(sa.select(sa.func.count()).select_from(t.executions)).scalar_one()
    # No extra data-driven runs on top of the plans, and none ran twice.
    assert total == len(ids)
    assert all(attempts[i] == 1 for i in ids)
    assert len({r.worker_id for r in runs.values()}) == 3
    for plan in plans:
        members = [runs[i] for i in plan if i is not None]
        for earlier, later in itertools.pairwise(members):
            assert earlier.finished_at is not None and later.started_at is not None
            assert earlier.finished_at <= later.started_at
    by_config: dict[int, list[tuple[object, object]]] = {}
    for r in runs.values():
        by_config.setdefault(r.job_configuration_id, []).append((r.started_at, r.finished_at))
    for intervals in by_config.values():
        intervals.sort()
        for (_, end), (start, _) in itertools.pairwise(intervals):
            assert end <= start  # type: ignore[operator]


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_a_worker_on_another_node_is_woken_by_notify_not_polling(
    node: Node, workers: WorkerProcesses, files_root: Path
) -> None:
    source = write_orders_csv(files_root / "in", rows=3)
    define(node, "/Data/ImportJobs/o.imp", orders_import(source))
    workers.start(poll_seconds=600)
    user = admin(node)
    # Let the worker settle into its long wait first; then only a NOTIFY can wake it soon.
    first = wait_terminal(node, node.jobs.trigger("/Data/ImportJobs/o.imp", user).id, 60)
    assert first.status is JobStatus.COMPLETED
    second = wait_terminal(node, node.jobs.trigger("/Data/ImportJobs/o.imp", user).id, 60)
    assert second.status is JobStatus.COMPLETED


# ---------------------------------------------------------------- claim order under locks


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_a_newer_run_waits_while_another_worker_holds_the_older_one_locked(
    node: Node, files_root: Path
) -> None:
    """Worker w1's fair-share search locks admin's older run of A, then claims bob's run.

    Until w1 commits, that older run stays QUEUED but locked: w2's claim skips
    it (SKIP LOCKED) and must not start the newer run of A in its place.
    """
    user = admin(node)
    for name in ("a", "b", "c"):
        define(
            node,
            f"/Data/ImportJobs/{name}.imp",
            orders_import(write_orders_csv(files_root / name, rows=3)),
        )
    queue = node.store.queue
    for worker in ("w0", "w1", "w2"):
        queue.register_worker(worker, "host", os.getpid())
    busy = node.jobs.trigger("/Data/ImportJobs/b.imp", user)
    claimed = queue.claim_next_execution("w0")
    assert claimed is not None and claimed.id == busy.id  # admin now holds a slot
    older = node.jobs.trigger("/Data/ImportJobs/a.imp", user)
    newer = node.jobs.trigger("/Data/ImportJobs/a.imp", user)
    bobs = node.jobs.trigger("/Data/ImportJobs/c.imp", user)
    with node.store.db.write() as conn:
        conn.execute(
            sa.update(t.executions).where(t.executions.c.id == bobs.id).values(triggered_by="bob")
        )

    holding, release = threading.Event(), threading.Event()
    first: list[Execution | None] = []

    def prepare(_conn: object, _execution: Execution) -> None:
        holding.set()
        release.wait(60)

    def claim_as_w1() -> None:
        result = queue.claim_and_prepare("w1", prepare)  # type: ignore[arg-type]
        first.append(result[0] if result is not None else None)

    thread = threading.Thread(target=claim_as_w1)
    thread.start()
    try:
        assert holding.wait(60), "w1 never reached its prepare step"
        second = queue.claim_next_execution("w2")
    finally:
        release.set()
        thread.join(60)
    assert first and first[0] is not None and first[0].id == bobs.id, first
    assert second is None, f"w2 started run {second.id} while run {older.id} of its job waited"
    assert execution(node, newer.id).status is JobStatus.QUEUED
    # Once w1 has committed, the older run is the one that starts.
    after = queue.claim_next_execution("w2")
    assert after is not None and after.id == older.id
    assert execution(node, newer.id).status is JobStatus.QUEUED


# ---------------------------------------------------------------- a worker on another host


def _running_on_another_host(node: Node, silent_for: dt.timedelta) -> int:
    """A run claimed by a worker of another host whose last heartbeat was `silent_for` ago.

    Its pid is one no local process has: on another host a pid says nothing,
    so only the heartbeat may decide.
    """
    queue = node.store.queue
    queue.register_worker("remote", "elsewhere.invalid", a_dead_pid())
    run = node.jobs.trigger("/Data/ImportJobs/o.imp", admin(node))
    claimed = queue.claim_next_execution("remote")
    assert claimed is not None and claimed.id == run.id
    last = utcnow() - silent_for
    with node.store.db.write() as conn:
        conn.execute(
            sa.update(t.workers).where(t.workers.c.id == "remote").values(heartbeat_at=last)
        )
        conn.execute(
            sa.update(t.executions).where(t.executions.c.id == run.id).values(heartbeat_at=last)
        )
    return run.id


@pytest.mark.parametrize("silent", ["within the timeout", "past the timeout"])
def test_a_worker_on_another_host_is_lost_only_once_its_heartbeat_is_older_than_the_timeout(
    node: Node, files_root: Path, silent: str
) -> None:
    define(
        node,
        "/Data/ImportJobs/o.imp",
        # No retries: the run that is lost ends in ERROR, where the timeout is seen.
        {**orders_import(write_orders_csv(files_root / "in", rows=3)), "retries": 0},
    )
    timeout = dt.timedelta(seconds=node.settings.worker_lost_seconds)
    margin = dt.timedelta(seconds=5)
    past = silent == "past the timeout"
    run_id = _running_on_another_host(node, timeout + margin if past else timeout - margin)
    lost = Worker(node.store, node.settings, node.wakeup).reconcile()
    after = execution(node, run_id)
    with node.store.db.read() as conn:
        workers = conn.execute(sa.select(t.workers.c.id)).scalars().all()
    if past:
        assert lost == [run_id]
        assert (after.status, after.error_message) == (JobStatus.ERROR, WORKER_LOST)
        assert after.finished_at is not None
        assert "remote" not in workers
    else:
        assert lost == []
        assert (after.status, after.error_message, after.worker_id) == (
            JobStatus.RUNNING,
            None,
            "remote",
        )
        assert "remote" in workers
