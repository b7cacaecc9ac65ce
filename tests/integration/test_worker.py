"""The worker end to end: real store, real DuckDB, real child processes."""

from __future__ import annotations

import contextlib
import csv
import itertools
import os
import signal
import threading
import time
from pathlib import Path

from datamill.bootstrap import Node
from datamill.domain.status import JobStatus
from datamill.engine.windows import is_idle_window
from datamill.store import data as data_store
from datamill.store.queue import WORKER_LOST
from datamill.worker.horse import Horse
from datamill.worker.worker import STOPPED_BY_USER, Worker, _Slot
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


def _slot_step(worker: Worker, horse: Horse) -> list[BaseException]:
    """One step of a slot's loop (claim, or wait for work), in a thread; what it raised."""
    raised: list[BaseException] = []

    def step() -> None:
        try:
            worker._claim_and_run(horse, _Slot())
        except BaseException as error:
            raised.append(error)

    thread = threading.Thread(target=step, daemon=True)
    thread.start()
    thread.join(60)  # a bound for a broken build only: the poll is an hour
    assert not thread.is_alive(), "the slot slept its poll after the shutdown"
    return raised


def test_a_slot_that_reaches_its_claim_after_the_shutdown_began_neither_claims_nor_sleeps(
    node: Node, files_root: Path
) -> None:
    # The race the embedded worker's hour-long polls met: a slot past its
    # loop's "closing?" test (waiting for a new horse) when the shutdown
    # announced work, then reading that announcement's generation, claimed
    # nothing and slept the poll, so the server killed the child after the
    # grace. Here the slot's step runs after the shutdown's announcement.
    source = write_orders_csv(files_root / "in", rows=3)
    define(node, IMP, orders_import(source))
    settings = node.settings.model_copy(update={"poll_seconds": 3600.0})
    worker = Worker(node.store, settings, node.wakeup)
    worker.shutdown(grace_seconds=0.5)
    horse = Horse(settings.engine)
    try:
        assert _slot_step(worker, horse) == []  # nothing queued: it did not sleep
        # Nor does it start a queued run that the worker would have to hand back.
        queued = node.jobs.trigger(IMP, admin(node))
        assert _slot_step(worker, horse) == []
        assert execution(node, queued.id).status is JobStatus.QUEUED
    finally:
        horse.kill()


def _children() -> list[int]:
    # This process's work horses: named so by themselves, and forked by the
    # worker's fork server, so this process's grandchildren.
    def parent(pid: str) -> int:
        with open(f"/proc/{pid}/stat") as handle:
            return int(handle.read().rsplit(")", 1)[1].split()[1])

    me = os.getpid()
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/comm") as handle:
                if handle.read().strip() != "datamill-horse":
                    continue
            up = parent(entry)
            if up == me or parent(str(up)) == me:
                pids.append(int(entry))
        except OSError:
            continue
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
        deadline = time.monotonic() + 60
        while not horse.wait_ready(0.5):
            assert time.monotonic() < deadline and horse.alive
        assert horse.wait_ready(0)
    finally:
        horse.kill()
    assert not horse.alive


_HOLDS_HORSES = """
import sys, time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from datamill.domain.status import JobKind
from datamill.worker.horse import Horse
from tests.integration.engine_fixtures import make_area

SLOW = "SELECT count(*) AS n FROM orders, range(4000000000000000000) t(i) WHERE i % 7 = 3"

if __name__ == "__main__":
    horses = [Horse(), Horse()]
    for index, horse in enumerate(horses):
        assert horse.wait_ready(120)
        # Busy with a long query, as a horse is when its worker dies: it does
        # not read its pipe then, so only the kill with its parent ends it.
        folder = Path(sys.argv[1]) / str(index)
        folder.mkdir()
        area = make_area(folder)
        orders = str(area.data / "orders.parquet")
        pq.write_table(pa.table({"id": [1]}), orders)
        sheets = [
            {"kind": "data", "name": "orders", "source": {"importJob": "/Data/o.imp"}},
            {"kind": "sql", "name": "out", "sql": SLOW, "keep": True},
        ]
        definition = {"kind": "workbook", "sheets": sheets}
        horse.send(area.request(JobKind.WORKBOOK, definition, inputs={"orders": orders}))
    heard = [False, False]
    while not all(heard):  # each reports progress: it is running the query
        heard = [seen or h.receive(0.5) is not None for seen, h in zip(heard, horses)]
    print(" ".join(str(h.process.pid) for h in horses), flush=True)
    time.sleep(600)
"""


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] == "Z"  # dead, not yet reaped
    except OSError:
        return True


def test_work_horses_end_when_their_worker_is_killed(tmp_path: Path) -> None:
    # kill -9 of a worker must not leave its engine processes running (holding
    # memory, DuckDB files, source files): they die with it, forked or spawned.
    import subprocess
    import sys

    script = tmp_path / "worker.py"
    script.write_text(_HOLDS_HORSES)
    worker = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(Path(__file__).parents[2])),
    )
    try:
        assert worker.stdout is not None
        pids = [int(p) for p in worker.stdout.readline().split()]
        assert len(pids) == 2 and not any(_gone(p) for p in pids)
        with open(f"/proc/{pids[0]}/comm") as handle:
            assert handle.read().strip() == "datamill-horse"
    finally:
        worker.kill()
        worker.wait()
    deadline = time.monotonic() + 30
    try:
        while not all(_gone(p) for p in pids):
            assert time.monotonic() < deadline, f"work horses outlived their worker: {pids}"
            time.sleep(0.1)
    finally:
        for pid in pids:  # only if this failed: the query would run for ages
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
