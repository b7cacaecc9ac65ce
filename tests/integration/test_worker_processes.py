"""Workers as separate processes: killed workers, and several workers on one database."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from datamill.bootstrap import Node
from datamill.domain.status import JobStatus
from datamill.services.plans import sequential_trigger
from datamill.store import tables as t
from datamill.store.queue import WORKER_LOST
from tests.helpers import (
    admin,
    define,
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
    define(
        node, "/Analytics/Workbooks/slow.wbk", totals_workbook("/Data/ImportJobs/o.imp", SLOW_SQL)
    )
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
