"""kill -9 of the server and of workers mid-chain, with retries on: every run finishes once.

The chains of test_crash.py (import -> data-driven workbook -> workbook, as
sequential plans and plain triggers); each round SIGKILLs a process while
something runs and starts it again. With retries on, no run may end other
than COMPLETED, none may publish twice, and every published result is whole.
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from datamill.bootstrap import Node
from datamill.store import tables as t
from tests.hostile.conftest import Cluster, Proc
from tests.hostile.invariants import wait_until_settled
from tests.hostile.test_crash import (
    SEED,
    _define_chains,
    _settled_and_swept,
    _start_work,
    _wait_until_something_runs,
    _warm_up,
)

ROUNDS = 3
RETRIES = 5
ROWS = 200  # every job of the chains carries write_orders_csv's 200 rows


def _retrying(cluster: Cluster) -> None:
    cluster.env["DATAMILL_RUN_RETRIES"] = str(RETRIES)
    cluster.env["DATAMILL_RUN_RETRY_DELAY_SECONDS"] = "0"


def _kill_rounds(node: Node, cluster: Cluster, server: Proc, workers: list[Proc]) -> None:
    rng = random.Random(SEED)
    began = time.monotonic()
    _warm_up(node, server.base)
    print(f"warm-up {time.monotonic() - began:.1f} s")
    for _ in range(ROUNDS):
        _start_work(server.base, rng)
        _wait_until_something_runs(node)
        time.sleep(rng.uniform(0.0, 0.8))
        victim = rng.choice([server, *workers])
        cluster.kill9(victim)
        if victim is server:
            server = cluster.serve()
        else:
            workers[workers.index(victim)] = cluster.worker()
    print(f"rounds {time.monotonic() - began:.1f} s")
    wait_until_settled(node, 150, cluster.logs)
    print(f"settled {time.monotonic() - began:.1f} s")
    for proc in [server, *workers]:
        assert cluster.stop(proc) == 0, cluster.logs()


def _assert_every_run_finished_once(node: Node, cluster: Cluster) -> None:
    report = _settled_and_swept(node, cluster)
    # A run may be claimed once per attempt; no run ends in ERROR (no allowed errors).
    strict = report.problems
    with node.store.db.read() as conn:
        runs = conn.execute(sa.select(t.executions)).all()
        data = conn.execute(sa.select(t.data)).all()
    retried = [r.id for r in runs if r.attempts > 1]
    assert retried, f"no kill landed on a running execution: {report.statuses}"
    assert set(report.statuses) == {"COMPLETED"}, (report.statuses, cluster.logs())
    assert all(r.attempts <= 1 + RETRIES for r in runs), [(r.id, r.attempts) for r in runs]
    problems = [p for p in strict if "was claimed" not in p]
    assert problems == [], "\n".join(problems) + cluster.logs()
    # Published once: one data row per run, each whole (every sheet's rows on disk).
    assert sorted(d.execution_id for d in data) == sorted(r.id for r in runs)
    for row in data:
        assert row.record_count == ROWS, row
        if row.deleted:  # expired past minKeepCount: its folder is gone by design
            continue
        for sheet, count in row.sheets.items():
            path = os.path.join(row.location, f"{sheet}.parquet")
            assert pq.ParquetFile(path).metadata.num_rows == count == ROWS, path
    print(f"seed {SEED}: {len(runs)} runs, retried {retried}")


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_kill_9_of_the_server_mid_chain_with_retries_completes_every_run_once(
    node: Node, cluster: Cluster, files_root: Path
) -> None:
    _retrying(cluster)
    _define_chains(node, files_root)
    _kill_rounds(node, cluster, cluster.serve(), [])
    _assert_every_run_finished_once(node, cluster)


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_kill_9_of_server_and_workers_with_retries_completes_every_run_once(
    node: Node, cluster: Cluster, files_root: Path
) -> None:
    _retrying(cluster)
    _define_chains(node, files_root)
    cluster.env["DATAMILL_CONCURRENCY"] = "1"
    server = cluster.serve()
    workers = [cluster.worker(), cluster.worker()]
    _kill_rounds(node, cluster, server, workers)
    _assert_every_run_finished_once(node, cluster)
