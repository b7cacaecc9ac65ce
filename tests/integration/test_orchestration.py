"""Chains with a real worker: data-driven runs, sequential plans, schedules, limits."""

from __future__ import annotations

import datetime as dt
import itertools
import threading
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from datamill.bootstrap import Node
from datamill.domain.records import Execution
from datamill.domain.status import JobKind, JobStatus, TriggerType
from datamill.services.plans import sequential_trigger
from datamill.store import tables as t
from datamill.store.db import utcnow
from datamill.store.store import Store
from datamill.worker.worker import Worker
from tests.helpers import admin, define, execution, orders_import, wait_terminal, write_orders_csv

A = "/Data/ImportJobs/a.imp"
B = "/Analytics/Workbooks/b.wbk"
C = "/Analytics/Workbooks/c.wbk"
D = "/Analytics/Workbooks/d.wbk"


def _workbook(
    sources: list[tuple[str, str | None]], sql: str, mode: str = "DATA_DRIVEN"
) -> dict[str, Any]:
    sheets: list[dict[str, Any]] = []
    for index, (path, sheet) in enumerate(sources):
        source = {"importJob": path} if sheet is None else {"workbook": path, "sheet": sheet}
        sheets.append({"kind": "data", "name": f"s{index}", "source": source})
    sheets.append({"kind": "sql", "name": "out", "keep": True, "sql": sql})
    return {
        "triggering": {"mode": mode},
        "variables": {"min": {"type": "BIGINT", "default": 0}},
        "sheets": sheets,
    }


def _diamond(node: Node, files_root: Path, b_sql: str = "SELECT * FROM s0") -> None:
    source = write_orders_csv(files_root / "in", rows=30)
    define(node, A, orders_import(source))
    define(node, B, _workbook([(A, None)], b_sql))
    define(node, C, _workbook([(A, None)], "SELECT * FROM s0 WHERE amount >= ${min}"))
    define(
        node,
        D,
        _workbook(
            [(B, "out"), (C, "out")],
            "SELECT (SELECT count(*) FROM s0) AS b, (SELECT count(*) FROM s1) AS c",
        ),
    )


def _runs(node: Node) -> dict[str, list[Execution]]:
    with node.store.db.read() as conn:
        rows = conn.execute(
            sa.select(t.executions.c.id, t.files.c.path)
            .join(t.files, t.files.c.id == t.executions.c.file_id)
            .order_by(t.executions.c.id)
        ).all()
    runs: dict[str, list[Execution]] = {}
    for row in rows:
        runs.setdefault(row.path, []).append(execution(node, row.id))
    return runs


def _settle(node: Node) -> dict[str, list[Execution]]:
    for runs in _runs(node).values():
        for run in runs:
            wait_terminal(node, run.id)
    # Data-driven runs appear as earlier ones end; wait until nothing is left.
    while any(not r.status.is_terminal for runs in _runs(node).values() for r in runs):
        for runs in _runs(node).values():
            for run in runs:
                wait_terminal(node, run.id)
    return _runs(node)


def _before(first: Execution, then: Execution) -> bool:
    assert first.finished_at is not None and then.started_at is not None
    return first.finished_at <= then.started_at


def test_a_sequential_diamond_runs_each_member_once_in_order(
    node: Node, worker: Worker, files_root: Path
) -> None:
    _diamond(node, files_root)
    plan = sequential_trigger(node.jobs, [A], admin(node), {"min": 150})
    assert len(plan) == 4
    runs = _settle(node)
    assert {path: len(r) for path, r in runs.items()} == {A: 1, B: 1, C: 1, D: 1}
    a, b, c, d = runs[A][0], runs[B][0], runs[C][0], runs[D][0]
    assert all(r.status is JobStatus.COMPLETED for r in (a, b, c, d))
    assert all(r.trigger_type is TriggerType.SEQUENTIAL for r in (a, b, c, d))
    assert _before(a, b) and _before(a, c) and _before(b, d) and _before(c, d)
    # The plan's variable reached C's SQL: amounts are 10..300, so 16 are >= 150.
    assert c.success_count == 16 and b.success_count == 30


def test_a_failure_in_the_middle_cancels_exactly_its_downstream(
    node: Node, worker: Worker, files_root: Path
) -> None:
    _diamond(node, files_root, b_sql="SELECT CAST(region AS BIGINT) AS x FROM s0")
    sequential_trigger(node.jobs, [A], admin(node), {})
    runs = _settle(node)
    assert runs[A][0].status is JobStatus.COMPLETED
    assert runs[B][0].status is JobStatus.ERROR
    assert runs[C][0].status is JobStatus.COMPLETED
    assert runs[D][0].status is JobStatus.CANCELED
    assert runs[D][0].started_at is None
    assert "b.wbk" in (runs[D][0].error_message or "")


def test_data_driven_workbooks_follow_their_sources_once(
    node: Node, worker: Worker, files_root: Path
) -> None:
    _diamond(node, files_root)
    node.store.users.create("wb_owner", "x")
    node.jobs.trigger(A, admin(node))
    runs = _settle(node)
    assert {path: len(r) for path, r in runs.items()} == {A: 1, B: 1, C: 1, D: 1}
    for path in (B, C, D):
        run = runs[path][0]
        assert run.trigger_type is TriggerType.DATA_DRIVEN
        assert run.triggered_by == "admin"  # the workbook's owner
        assert run.status is JobStatus.COMPLETED
    assert _before(runs[B][0], runs[D][0]) and _before(runs[C][0], runs[D][0])


def test_manual_workbooks_are_not_triggered_by_their_sources(
    node: Node, worker: Worker, files_root: Path
) -> None:
    source = write_orders_csv(files_root / "in", rows=3)
    define(node, A, orders_import(source))
    define(node, B, _workbook([(A, None)], "SELECT * FROM s0", mode="MANUAL"))
    node.jobs.trigger(A, admin(node))
    runs = _settle(node)
    assert list(runs) == [A]


def test_a_missed_schedule_runs_once_after_downtime(node: Node, files_root: Path) -> None:
    source = write_orders_csv(files_root / "in", rows=3)
    define(node, A, orders_import(source))
    wbk = _workbook([(A, None)], "SELECT * FROM s0", mode="SCHEDULED")
    wbk["triggering"]["cron"] = "* * * * *"
    file_id = define(node, B, wbk)
    with node.store.db.write() as conn:
        # As if the server had been down for three hours: 180 slots were missed.
        conn.execute(
            sa.update(t.job_configurations)
            .where(t.job_configurations.c.file_id == file_id)
            .values(next_fire_at=utcnow() - dt.timedelta(hours=3))
        )
    worker = Worker(node.store, node.settings, node.wakeup)
    fired = worker.fire_schedules()
    assert len(fired) == 1
    assert worker.fire_schedules() == []
    with node.store.db.read() as conn:
        next_at = conn.execute(
            sa.select(t.job_configurations.c.next_fire_at).where(
                t.job_configurations.c.file_id == file_id
            )
        ).scalar_one()
    assert utcnow() < next_at <= utcnow() + dt.timedelta(minutes=1)
    run = execution(node, fired[0])
    assert run.trigger_type is TriggerType.SCHEDULER and run.triggered_by == "admin"


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_two_schedulers_never_fire_the_same_slot(node: Node) -> None:
    count = 25
    for i in range(count):
        node.jobs.define_job(
            f"/Analytics/Workbooks/s{i}.wbk",
            JobKind.WORKBOOK,
            {
                "triggering": {"mode": "SCHEDULED", "cron": "0 0 1 1 *"},
                "sheets": [{"kind": "sql", "name": "x", "sql": "SELECT 1 AS one", "keep": True}],
            },
            "admin",
        )
    with node.store.db.write() as conn:
        conn.execute(
            sa.update(t.job_configurations).values(next_fire_at=utcnow() - dt.timedelta(days=1))
        )
    schedulers = [Worker(node.store, node.settings, node.wakeup) for _ in range(4)]
    fired: list[int] = []
    lock = threading.Lock()
    barrier = threading.Barrier(len(schedulers))

    def fire(worker: Worker) -> None:
        barrier.wait()
        created = worker.fire_schedules()
        with lock:
            fired.extend(created)

    threads = [threading.Thread(target=fire, args=(w,)) for w in schedulers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(fired) == len(set(fired)) == count
    with node.store.db.read() as conn:
        per_config = conn.execute(
            sa.select(t.executions.c.job_configuration_id, sa.func.count()).group_by(
                t.executions.c.job_configuration_id
            )
        ).all()
    assert all(n == 1 for _, n in per_config) and len(per_config) == count


def test_the_global_limit_keeps_runs_apart(node: Node, files_root: Path) -> None:
    source = write_orders_csv(files_root / "in", rows=3)
    paths = [f"/Data/ImportJobs/j{i}.imp" for i in range(6)]
    for path in paths:
        define(node, path, orders_import(source))
    limited = Store(
        node.settings.resolved_database_url, str(node.settings.resolved_data_root), max_running=1
    )
    worker = Worker(limited, node.settings, node.wakeup)
    worker.start()
    try:
        ids = [node.jobs.trigger(path, admin(node)).id for path in paths for _ in range(2)]
        runs = sorted((wait_terminal(node, i) for i in ids), key=lambda r: r.started_at)  # type: ignore[arg-type, return-value]
    finally:
        worker.shutdown(grace_seconds=1.0)
        limited.close()
    assert all(r.status is JobStatus.COMPLETED for r in runs)
    for earlier, later in itertools.pairwise(runs):
        assert _before(earlier, later)


def test_old_history_is_dropped_but_the_newest_run_and_runs_with_data_stay(
    node: Node, worker: Worker, files_root: Path
) -> None:
    source = write_orders_csv(files_root / "in", rows=3)
    define(node, A, orders_import(source))
    ids = [wait_terminal(node, node.jobs.trigger(A, admin(node)).id).id for _ in range(4)]
    with node.store.db.write() as conn:
        conn.execute(sa.update(t.executions).values(finished_at=utcnow() - dt.timedelta(days=40)))
    worker.housekeep()  # expires data beyond minKeepCount, then drops old history
    with node.store.db.read() as conn:
        left = conn.execute(sa.select(t.executions.c.id).order_by(t.executions.c.id)).scalars()
        left_ids = list(left)
    # Only the newest run is left: it is the job's status and holds the kept data.
    assert left_ids == [ids[-1]]
    status = node.jobs.status(A, admin(node))
    assert status.execution is not None and status.execution.id == ids[-1]
