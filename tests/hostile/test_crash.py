"""kill -9 of the server and of workers while chains of runs are in flight.

Each round starts sequential plans (import -> data-driven workbook ->
workbook) and plain triggers over HTTP, waits until something runs, sleeps a
seeded random moment and SIGKILLs a process (in one round: SIGTERM, so that
running executions are handed back), then starts it again. Once everything
has settled, tests/hostile/invariants.py checks that every execution is
terminal and tells the truth about itself, and that the data root holds
exactly the published results. On SQLite the victim is the server; on
PostgreSQL the server or one of two separate workers.

The random moments rarely hit the narrow windows where such bugs live, so
further tests below put a process exactly there.

DATAMILL_HOSTILE_SEED picks other moments (the default keeps runs repeatable).
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from datamill.bootstrap import Node
from datamill.domain.status import JobStatus
from datamill.engine.windows import remove_dead_windows
from datamill.store import tables as t
from datamill.store.queue import WORKER_LOST
from datamill.worker.housekeeping import remove_orphaned_data_folders
from datamill.worker.worker import Worker
from tests.helpers import admin, define, orders_import, wait_terminal, write_orders_csv
from tests.hostile.conftest import (
    AUTH,
    Cluster,
    Proc,
    fail_setup,
    finish_gate,
    wait_for_blocked_backend,
)
from tests.hostile.invariants import Report, settled_problems, wait_until_settled

SEED = int(os.environ.get("DATAMILL_HOSTILE_SEED", "20240607"))
ROUNDS = 3

A, B, C = "/Data/ImportJobs/a.imp", "/Analytics/Workbooks/b.wbk", "/Analytics/Workbooks/c.wbk"
X, Y, Z = "/Data/ImportJobs/x.imp", "/Analytics/Workbooks/y.wbk", "/Analytics/Workbooks/z.wbk"
# About a second of one DuckDB thread: long enough for a kill to land mid-run.
SPIN = "SELECT count(*) AS c FROM range(300000000) r WHERE r.range % 7 = 3"


def _workbook(source: dict[str, str], mode: str, slow: bool) -> dict[str, Any]:
    sheets: list[dict[str, Any]] = [{"kind": "data", "name": "s0", "source": source}]
    if slow:
        sheets.append({"kind": "sql", "name": "spin", "sql": SPIN})
        out = "SELECT s0.*, (SELECT c FROM spin) AS spin FROM s0"
    else:
        out = "SELECT * FROM s0"
    sheets.append({"kind": "sql", "name": "out", "keep": True, "sql": out})
    return {"triggering": {"mode": mode}, "sheets": sheets}


def _define_chains(node: Node, files_root: Path) -> None:
    """a.imp -> b.wbk (data-driven, slow) -> c.wbk (manual); x.imp -> y.wbk -> z.wbk."""
    for imp, folder in ((A, "a"), (X, "x")):
        define(node, imp, orders_import(write_orders_csv(files_root / folder, rows=200)))
    define(node, B, _workbook({"importJob": A}, "DATA_DRIVEN", slow=True))
    define(node, C, _workbook({"workbook": B, "sheet": "out"}, "MANUAL", slow=False))
    define(node, Y, _workbook({"importJob": X}, "DATA_DRIVEN", slow=True))
    define(node, Z, _workbook({"workbook": Y, "sheet": "out"}, "DATA_DRIVEN", slow=False))


def _start_work(base: str, rng: random.Random) -> None:
    """Two sequential plans (both body forms) and a few plain triggers."""
    with httpx.Client(base_url=base, auth=AUTH, timeout=30) as client:
        plan = client.post(
            "/api/job-execution/sequential-trigger", content=f"{{fileIds: ['{A}', '{C}'],}}"
        )
        assert plan.status_code == 200, plan.text
        assert [m["job-configuration-name"] for m in plan.json()["execution-plan"]] == [
            "a",
            "b",
            "c",
        ]
        plan = client.post("/api/job-execution/sequential-trigger", json=[X])
        assert plan.status_code == 200, plan.text
        for path in rng.sample([A, X, B, C, Y], k=rng.randint(1, 3)):
            response = client.post(f"/api/job-execution{path}/trigger")
            assert response.status_code == 200, response.text


def _wait_until_something_runs(node: Node, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with node.store.db.read() as conn:
            running = conn.execute(
                sa.select(t.executions.c.id).where(t.executions.c.status == JobStatus.RUNNING.value)
            ).first()
        if running is not None:
            return
        time.sleep(0.02)


def _warm_up(node: Node, base: str) -> None:
    """One clean pass through both chains, so every workbook has data to read."""
    with httpx.Client(base_url=base, auth=AUTH, timeout=30) as client:
        for body in ([A, C], [X]):
            response = client.post("/api/job-execution/sequential-trigger", json=body)
            assert response.status_code == 200, response.text
    wait_until_settled(node, 60)
    report = settled_problems(node)
    assert report.statuses == {"COMPLETED": 6}, report


def _crash_rounds(node: Node, cluster: Cluster, server: Proc, workers: list[Proc]) -> None:
    """ROUNDS rounds of work and a kill -9; in one of them, a graceful stop instead."""
    rng = random.Random(SEED)
    graceful = rng.randrange(ROUNDS)
    _warm_up(node, server.base)
    for round_ in range(ROUNDS):
        _start_work(server.base, rng)
        _wait_until_something_runs(node)
        time.sleep(rng.uniform(0.0, 0.8))
        victim = rng.choice([server, *workers])
        if round_ == graceful:
            # SIGTERM with a short grace: running executions are handed back and rerun.
            assert cluster.stop(victim) == 0, cluster.logs()
        else:
            cluster.kill9(victim)
        if victim is server:
            server = cluster.serve()
        else:
            workers[workers.index(victim)] = cluster.worker()
    wait_until_settled(node, 150, cluster.logs)
    # A clean stop after all those crashes, and nothing left running to hand back.
    for proc in [server, *workers]:
        assert cluster.stop(proc) == 0, cluster.logs()


def _settled_and_swept(node: Node, cluster: Cluster) -> Report:
    """The invariants, once housekeeping has swept what interrupted publishes left.

    Housekeeping removes unnamed data folders only once they are old enough that
    no publish can still be committing them; every process is stopped now, so
    any age is old enough.
    """
    remove_orphaned_data_folders(node.store, min_age_seconds=0)
    # A work horse killed mid-run leaves its workbook window (links to its
    # inputs); housekeeping removes the windows of ended processes.
    remove_dead_windows(str(node.settings.staging_root))
    return settled_problems(node, handed_back=cluster.handed_back())


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_kill_9_of_the_server_mid_chain_leaves_every_execution_true(
    node: Node, cluster: Cluster, files_root: Path
) -> None:
    _define_chains(node, files_root)
    _crash_rounds(node, cluster, cluster.serve(), [])
    report = _settled_and_swept(node, cluster)
    print(
        f"seed {SEED}: {report.statuses}, {report.lost} lost, {cluster.handed_back()} handed back"
    )
    assert report.lost > 0, f"no kill landed on a running execution: {report.statuses}"
    report.assert_clean(cluster.logs())


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_kill_9_of_server_and_workers_on_postgres_leaves_every_execution_true(
    node: Node, cluster: Cluster, files_root: Path
) -> None:
    _define_chains(node, files_root)
    cluster.env["DATAMILL_CONCURRENCY"] = "1"
    server = cluster.serve()
    workers = [cluster.worker(), cluster.worker()]
    _crash_rounds(node, cluster, server, workers)
    report = _settled_and_swept(node, cluster)
    print(
        f"seed {SEED}: {report.statuses}, {report.lost} lost, {cluster.handed_back()} handed back"
    )
    assert report.lost > 0, f"no kill landed on a running execution: {report.statuses}"
    report.assert_clean(cluster.logs())


# ---------------------------------------------------------------- the publish window
#
# Between moving a run's staged folder into the data root and committing its
# data row, a crash leaves a folder that no row names. Random kills rarely land
# in that window, so these tests put a process exactly there.


def _publish_window_jobs(node: Node, files_root: Path) -> None:
    define(node, A, orders_import(write_orders_csv(files_root / "a", rows=20)))
    define(node, B, _workbook({"importJob": A}, "MANUAL", slow=True))


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_a_kill_9_while_publishing_leaves_no_orphan_data_folder(
    node: Node, cluster: Cluster, files_root: Path
) -> None:
    with fail_setup("running into the publish window"):
        _publish_window_jobs(node, files_root)
        worker = cluster.worker()
        user = admin(node)
        assert wait_terminal(node, node.jobs.trigger(A, user).id).status is JobStatus.COMPLETED
        data_root = node.settings.resolved_data_root
        before = set(os.listdir(data_root))
        with finish_gate(node):
            run = node.jobs.trigger(B, user)
            wait_for_blocked_backend(node, "UPDATE executions SET status")
            moved = set(os.listdir(data_root)) - before
            assert len(moved) == 1, moved  # the folder is in place, the commit is not
            cluster.kill9(worker)
        cluster.worker()
        lost = wait_terminal(node, run.id)
        assert lost.status is JobStatus.ERROR and lost.error_message == WORKER_LOST
    # Housekeeping sweeps unnamed folders once they are old enough that no publish can
    # still be committing them; nothing publishes now, so "old enough" is any age.
    remove_orphaned_data_folders(node.store, min_age_seconds=0)
    report = settled_problems(node)
    assert report.problems == []


def _next_data_id(node: Node) -> int:
    """The id the next data row gets, exactly as an interrupted insert got it."""
    with node.store.db.write() as conn:
        if node.store.db.is_sqlite:
            # Past max(rowid), and past sqlite_sequence with AUTOINCREMENT; a rolled-back
            # insert rolls back its sqlite_sequence update too, so its id comes again.
            ids = [conn.execute(sa.select(sa.func.max(t.data.c.id))).scalar() or 0]
            if conn.execute(
                sa.text("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_sequence'")
            ).first():
                ids.append(
                    conn.execute(
                        sa.text("SELECT seq FROM sqlite_sequence WHERE name = 'data'")
                    ).scalar()
                    or 0
                )
            return int(max(ids)) + 1
        return int(
            conn.execute(
                sa.text("SELECT nextval(pg_get_serial_sequence('data', 'id'))")
            ).scalar_one()
        )


@pytest.mark.parametrize(
    "database_url",
    [
        pytest.param("sqlite"),
        pytest.param("postgres", marks=pytest.mark.postgres),
    ],
    indirect=True,
)
def test_what_an_interrupted_publish_leaves_does_not_fail_later_runs(
    node: Node, files_root: Path
) -> None:
    """The store after a kill between the folder move and the commit: the row rolled back
    (on PostgreSQL its id consumed), the folder at <data_root>/<that id> left behind."""
    define(node, A, orders_import(write_orders_csv(files_root / "a", rows=20)))
    leftover = node.settings.resolved_data_root / str(_next_data_id(node))
    leftover.mkdir(parents=True)
    (leftover / "data.parquet").write_bytes(b"PAR1 half of an interrupted publish")
    worker = Worker(node.store, node.settings, node.wakeup)
    worker.start()
    try:
        with fail_setup("running the import twice"):
            runs = [wait_terminal(node, node.jobs.trigger(A, admin(node)).id) for _ in range(2)]
    finally:
        worker.shutdown(grace_seconds=1.0)
    assert [(r.status, r.error_message) for r in runs] == [(JobStatus.COMPLETED, None)] * 2


# ---------------------------------------------------------------- a graceful stop mid-run

# Two seconds or more of one DuckDB thread: still running when the 0.5 s grace ends.
LONG_SPIN = "SELECT count(*) AS c FROM range(600000000) r WHERE r.range % 7 = 3"


def test_a_run_handed_back_at_shutdown_runs_again_to_completion(
    node: Node, cluster: Cluster, files_root: Path
) -> None:
    with fail_setup("handing a running workbook back"):
        define(node, A, orders_import(write_orders_csv(files_root / "a", rows=20)))
        workbook = _workbook({"importJob": A}, "MANUAL", slow=True)
        workbook["sheets"][1]["sql"] = LONG_SPIN
        define(node, B, workbook)
        user = admin(node)
        first = cluster.worker()
        assert wait_terminal(node, node.jobs.trigger(A, user).id).status is JobStatus.COMPLETED
        run = node.jobs.trigger(B, user)
        _wait_until_something_runs(node)
        assert cluster.stop(first) == 0
        assert cluster.handed_back() == {run.id: 1}, cluster.logs()
        cluster.worker()
        ended = wait_terminal(node, run.id, timeout=90)
    assert (ended.status, ended.error_message, ended.attempts) == (JobStatus.COMPLETED, None, 2)
