"""Housekeeping removes deleted and expired data, but never data a running execution reads."""

from __future__ import annotations

import os
import time
from pathlib import Path

import sqlalchemy as sa

from datamill.bootstrap import Node
from datamill.domain.status import JobStatus
from datamill.services.data import delete_data
from datamill.store import data as data_store
from datamill.store import tables as t
from datamill.store.queue import Outcome
from datamill.worker.worker import Worker
from tests.helpers import (
    admin,
    define,
    orders_import,
    totals_workbook,
    wait_for,
    wait_terminal,
    write_orders_csv,
)

IMP = "/Data/ImportJobs/o.imp"
SLOW = "SELECT count(*) AS n FROM range(3000000000) a WHERE a.range % 7 = 3"


def _publish(node: Node, path: str) -> int:
    """Run a job through the queue by hand, publishing one data result; returns its id."""
    execution = node.jobs.trigger(path, admin(node))
    queue = node.store.queue
    worker = f"w{execution.id}"
    queue.register_worker(worker, "host", os.getpid())
    claimed = queue.claim_next_execution(worker)
    assert claimed is not None
    staging = node.settings.staging_root / str(claimed.id)
    staging.mkdir(parents=True)
    (staging / "data.parquet").write_bytes(b"x")
    queue.finish(
        claimed, worker, Outcome(JobStatus.COMPLETED, sheets={"data": 1}, staging_dir=str(staging))
    )
    with node.store.db.read() as conn:
        result = data_store.data_for_configuration(conn, claimed.job_configuration_id)[0]
    return result.id


def _location(node: Node, data_id: int) -> str:
    with node.store.db.read() as conn:
        result = data_store.get_data(conn, data_id)
    assert result is not None
    return result.location


def test_deleted_data_is_hidden_at_once_and_its_files_removed(node: Node) -> None:
    define(node, IMP, {"source": {"kind": "csv", "path": "/x.csv"}})
    data_id = _publish(node, IMP)
    folder = Path(_location(node, data_id))
    assert folder.is_dir()
    assert delete_data(node.store, data_id, admin(node)) is True
    with node.store.db.read() as conn:
        assert data_store.data_for_configuration(conn, 1) == []
    Worker(node.store, node.settings, node.wakeup).housekeep()
    assert not folder.exists()
    assert delete_data(node.store, data_id, admin(node)) is False


def test_results_beyond_min_keep_count_expire(node: Node) -> None:
    define(node, IMP, {"source": {"kind": "csv", "path": "/x.csv"}, "minKeepCount": 2})
    ids = [_publish(node, IMP) for _ in range(4)]
    folders = [Path(_location(node, i)) for i in ids]
    Worker(node.store, node.settings, node.wakeup).housekeep()
    with node.store.db.read() as conn:
        kept = [d.id for d in data_store.data_for_configuration(conn, 1)]
    assert kept == ids[:1:-1]
    assert [f.exists() for f in folders] == [False, False, True, True]


def test_data_a_running_execution_reads_survives_until_it_ends(
    node: Node, files_root: Path
) -> None:
    source = write_orders_csv(files_root / "in", rows=10)
    define(node, IMP, orders_import(source))
    define(node, "/Analytics/Workbooks/slow.wbk", totals_workbook(IMP, sql=SLOW))
    user = admin(node)
    worker = Worker(node.store, node.settings, node.wakeup)
    worker.start()
    try:
        wait_terminal(node, node.jobs.trigger(IMP, user).id)
        with node.store.db.read() as conn:
            data_id = data_store.data_for_configuration(conn, 1)[0].id
        folder = Path(_location(node, data_id))
        run = wait_for(
            node, node.jobs.trigger("/Analytics/Workbooks/slow.wbk", user).id, {JobStatus.RUNNING}
        )
        # RUNNING comes with the claim; the inputs are recorded just after it.
        _wait_until_reading(node, run.id, data_id)
        assert delete_data(node.store, data_id, user) is True
        worker.housekeep()
        assert folder.is_dir(), "a running execution still reads it"
        node.jobs.stop("/Analytics/Workbooks/slow.wbk", user)
        assert wait_terminal(node, run.id).status is JobStatus.CANCELED
        worker.housekeep()
        assert not folder.exists()
    finally:
        worker.shutdown(grace_seconds=1.0)


def _wait_until_reading(node: Node, execution_id: int, data_id: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with node.store.db.read() as conn:
            reads = (
                conn.execute(
                    sa.select(t.execution_inputs.c.data_id).where(
                        t.execution_inputs.c.execution_id == execution_id
                    )
                )
                .scalars()
                .all()
            )
        if data_id in reads:
            return
        time.sleep(0.02)
    raise AssertionError(f"execution {execution_id} never recorded that it reads {data_id}")


def test_the_orphan_sweep_keeps_a_fresh_folder_by_default(node: Node) -> None:
    """A data folder no row names yet may be a publish committing right now: it stays."""
    define(node, IMP, {"source": {"kind": "csv", "path": "/x.csv"}})
    named = Path(_location(node, _publish(node, IMP)))
    root = Path(node.store.data_root)
    fresh, old = root / "900001", root / "900002"
    for folder in (fresh, old):
        folder.mkdir()
        (folder / "data.parquet").write_bytes(b"x")
    an_hour_ago = time.time() - 3600
    for path in (old, named):
        os.utime(path, (an_hour_ago, an_hour_ago))
    # The worker's own call, with the default age guard.
    Worker(node.store, node.settings, node.wakeup).housekeep()
    assert (fresh / "data.parquet").read_bytes() == b"x"
    assert not old.exists()
    assert named.is_dir(), "a folder a data row names is never an orphan"
