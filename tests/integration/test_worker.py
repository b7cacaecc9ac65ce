"""The worker end to end: real store, real DuckDB, real child processes."""

from __future__ import annotations

import csv
import itertools
import os
import signal
import time
from pathlib import Path

from datamill.bootstrap import Node
from datamill.domain.status import JobStatus
from datamill.engine.windows import is_idle_window
from datamill.store import data as data_store
from datamill.store.queue import WORKER_LOST
from datamill.worker.worker import STOPPED_BY_USER, Worker
from tests.helpers import (
    a_dead_pid,
    admin,
    define,
    orders_import,
    totals_workbook,
    wait_for,
    wait_terminal,
    write_orders_csv,
)

IMP = "/Data/ImportJobs/orders.imp"
WBK = "/Analytics/Workbooks/totals.wbk"
EXP = "/Data/ExportJobs/totals.exp"


def _newest_data(node: Node, path: str):  # type: ignore[no-untyped-def]
    with node.store.db.read() as conn:
        entry = node.store.files.find(conn, path)
        assert entry is not None
        config = node.store.jobs.for_file(conn, entry.id)
        assert config is not None
        return data_store.newest_data(conn, config.id)


def test_import_workbook_export_chain_with_a_variable(
    node: Node, worker: Worker, files_root: Path
) -> None:
    source = write_orders_csv(files_root / "in", rows=30, bad_rows=2)
    define(node, IMP, orders_import(source))
    define(node, WBK, totals_workbook(IMP))
    out = files_root / "out" / "totals.csv"
    out.parent.mkdir()
    define(
        node,
        EXP,
        {"source": {"workbook": WBK, "sheet": "totals"}, "sink": {"kind": "csv", "path": str(out)}},
    )
    user = admin(node)

    imported = wait_terminal(node, node.jobs.trigger(IMP, user).id)
    assert imported.status is JobStatus.COMPLETED_WITH_WARNINGS
    assert (imported.success_count, imported.failure_count) == (30, 2)
    assert imported.counters["IMPORT_RECORDS"] == 30
    assert imported.counters["IMPORT_DROPPED_RECORDS"] == 2
    assert imported.counters["IMPORT_BYTES"] == source.stat().st_size
    assert imported.started_at is not None and imported.finished_at is not None

    run = node.jobs.trigger(WBK, user, variables={"min_amount": 150})
    workbook = wait_terminal(node, run.id)
    assert workbook.status is JobStatus.COMPLETED, workbook.error_message
    assert workbook.counters["WORKBOOK_RECORDS"] == 3

    exported = wait_terminal(node, node.jobs.trigger(EXP, user).id)
    assert exported.status is JobStatus.COMPLETED, exported.error_message
    assert exported.counters["EXPORT_RECORDS"] == 3
    with out.open() as handle:
        rows = {r["region"]: r for r in csv.DictReader(handle)}
    # amounts are 10*i for i in 1..30; those >= 150 are i = 15..30, split by i % 3.
    expected = {"north": 0, "south": 0, "east": 0}
    regions = ["north", "south", "east"]
    for i in range(15, 31):
        expected[regions[i % 3]] += 1
    assert {k: int(v["n"]) for k, v in rows.items()} == expected


def test_a_failed_run_publishes_nothing(node: Node, worker: Worker, files_root: Path) -> None:
    source = write_orders_csv(files_root / "in", rows=10)
    define(node, IMP, orders_import(source))
    user = admin(node)
    wait_terminal(node, node.jobs.trigger(IMP, user).id)
    before = _newest_data(node, IMP)
    define(node, WBK, totals_workbook(IMP, sql="SELECT CAST(region AS BIGINT) AS x FROM orders"))
    failed = wait_terminal(node, node.jobs.trigger(WBK, user).id)
    assert failed.status is JobStatus.ERROR
    assert failed.error_message
    assert _newest_data(node, WBK) is None
    assert _newest_data(node, IMP) == before
    # Nothing is left but the idle window of an engine (its empty folders).
    left = [p for p in node.settings.staging_root.iterdir() if not is_idle_window(str(p))]
    assert left == []


def test_killing_the_child_process_ends_the_run_in_error_and_the_worker_goes_on(
    node: Node, worker: Worker, files_root: Path
) -> None:
    source = write_orders_csv(files_root / "in", rows=10)
    define(node, IMP, orders_import(source))
    user = admin(node)
    wait_terminal(node, node.jobs.trigger(IMP, user).id)
    slow = "SELECT count(*) AS n FROM range(3000000000) a WHERE a.range % 7 = 3"
    define(node, WBK, totals_workbook(IMP, sql=slow))
    run = wait_for(node, node.jobs.trigger(WBK, user).id, {JobStatus.RUNNING})
    time.sleep(0.5)
    horses = _children()
    assert horses, "the run should execute in a child process"
    for pid in horses:
        os.kill(pid, signal.SIGKILL)
    ended = wait_terminal(node, run.id)
    assert ended.status is JobStatus.ERROR
    assert "SIGKILL" in (ended.error_message or "")
    assert _newest_data(node, WBK) is None
    again = wait_terminal(node, node.jobs.trigger(IMP, user).id)
    assert again.status is JobStatus.COMPLETED


def test_stopping_a_running_execution_cancels_it_without_data(
    node: Node, worker: Worker, files_root: Path
) -> None:
    source = write_orders_csv(files_root / "in", rows=10)
    define(node, IMP, orders_import(source))
    user = admin(node)
    wait_terminal(node, node.jobs.trigger(IMP, user).id)
    # Centuries of work: a run of it that ends was stopped.
    endless = "SELECT count(*) AS n FROM range(1000000000000000000) a WHERE a.range % 7 = 3"
    define(node, WBK, totals_workbook(IMP, sql=endless))
    run = wait_for(node, node.jobs.trigger(WBK, user).id, {JobStatus.RUNNING})
    stopped = node.jobs.stop(WBK, user)
    assert stopped.id == run.id
    assert stopped.status is JobStatus.CANCELED
    assert stopped.error_message == STOPPED_BY_USER
    assert _newest_data(node, WBK) is None


def test_a_trigger_while_one_runs_queues_behind_it(
    node: Node, worker: Worker, files_root: Path
) -> None:
    source = write_orders_csv(files_root / "in", rows=10)
    define(node, IMP, orders_import(source))
    user = admin(node)
    ids = [node.jobs.trigger(IMP, user).id for _ in range(4)]
    runs = [wait_terminal(node, i) for i in ids]
    assert all(r.status is JobStatus.COMPLETED for r in runs)
    for earlier, later in itertools.pairwise(runs):
        assert earlier.finished_at is not None and later.started_at is not None
        assert earlier.finished_at <= later.started_at


def test_a_restarted_worker_reconciles_runs_of_a_dead_one(node: Node, files_root: Path) -> None:
    source = write_orders_csv(files_root / "in", rows=10)
    # No retries: the lost run ends in ERROR (tests/hostile/test_retries.py retries).
    define(node, IMP, {**orders_import(source), "retries": 0})
    user = admin(node)
    run = node.jobs.trigger(IMP, user)
    dead_pid = a_dead_pid()
    node.store.queue.register_worker("gone", os.uname().nodename, dead_pid)
    claimed = node.store.queue.claim_next_execution("gone")
    assert claimed is not None and claimed.id == run.id
    worker = Worker(node.store, node.settings, node.wakeup)
    worker.start()
    try:
        lost = wait_terminal(node, run.id, timeout=10)
        assert lost.status is JobStatus.ERROR
        assert lost.error_message == WORKER_LOST
        assert wait_terminal(node, node.jobs.trigger(IMP, user).id).status is JobStatus.COMPLETED
    finally:
        worker.shutdown(grace_seconds=1.0)


def test_graceful_shutdown_hands_back_a_long_run(node: Node, files_root: Path) -> None:
    source = write_orders_csv(files_root / "in", rows=10)
    define(node, IMP, orders_import(source))
    user = admin(node)
    worker = Worker(node.store, node.settings, node.wakeup)
    worker.start()
    wait_terminal(node, node.jobs.trigger(IMP, user).id)
    slow = "SELECT count(*) AS n FROM range(3000000000) a WHERE a.range % 7 = 3"
    define(node, WBK, totals_workbook(IMP, sql=slow))
    run = wait_for(node, node.jobs.trigger(WBK, user).id, {JobStatus.RUNNING})
    worker.shutdown(grace_seconds=0.5)
    handed_back = wait_for(node, run.id, {JobStatus.QUEUED}, timeout=5)
    assert handed_back.started_at is None and handed_back.worker_id is None
    assert _newest_data(node, WBK) is None


def _children() -> list[int]:
    me = os.getpid()
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    fields = handle.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) != me:
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                cmdline = handle.read()
            # Work horses, not multiprocessing's resource tracker.
            if b"spawn_main" in cmdline and b"resource_tracker" not in cmdline:
                pids.append(int(entry))
    return pids


def test_a_claim_whose_answer_was_lost_is_handed_back_and_run(node: Node, files_root: Path) -> None:
    # The claim committed, but the connection dropped before the worker heard
    # of it: the run is RUNNING under a live worker that is not running it.
    source = write_orders_csv(files_root / "in", rows=10)
    define(node, IMP, orders_import(source))
    worker = Worker(node.store, node.settings, node.wakeup)
    run = node.jobs.trigger(IMP, admin(node))
    claimed = node.store.queue.claim_next_execution(worker.id)
    assert claimed is not None and claimed.id == run.id
    worker.start()
    try:
        done = wait_terminal(node, run.id, timeout=20)
        assert done.status is JobStatus.COMPLETED
        assert done.attempts == 2
    finally:
        worker.shutdown(grace_seconds=1.0)


def test_a_new_child_says_when_it_is_ready_for_work() -> None:
    # The worker claims for a child only once it has imported the engine.
    from datamill.worker.horse import Horse

    horse = Horse()
    try:
        assert not horse.wait_ready(0)  # spawning and importing take far longer
        deadline = time.monotonic() + 60
        while not horse.wait_ready(0.5):
            assert time.monotonic() < deadline and horse.alive
        assert horse.wait_ready(0)
    finally:
        horse.kill()
    assert not horse.alive
