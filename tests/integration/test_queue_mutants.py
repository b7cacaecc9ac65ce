"""Publishing at the end of a run (store/queue.py) as its mutation run showed untested."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

from datamill.bootstrap import Node
from datamill.domain.status import JobKind, JobStatus
from datamill.services.plans import sequential_trigger
from datamill.store import data as data_store
from datamill.store import executions as ex
from datamill.store.queue import Outcome
from tests.helpers import admin

CSV_IMPORT = {"source": {"kind": "csv", "path": "/tmp/x.csv"}}


def _run_and_publish(node: Node, path: str, content: bytes) -> Path:
    """Trigger the job at `path`, finish its run with one staged file; the data's folder."""
    node.jobs.trigger(path, admin(node))
    queue = node.store.queue
    execution = queue.claim_next_execution("w1")
    assert execution is not None
    staging = node.settings.staging_root / str(execution.id)
    staging.mkdir(parents=True)
    (staging / "data.parquet").write_bytes(content)
    outcome = Outcome(JobStatus.COMPLETED, sheets={"data": 1}, staging_dir=str(staging))
    assert queue.finish(execution, "w1", outcome)
    with node.store.db.read() as conn:
        entry = node.store.files.find(conn, path)
        assert entry is not None
        config = node.store.jobs.for_file(conn, entry.id)
        assert config is not None
        result = data_store.newest_data(conn, config.id)
    assert result is not None
    return Path(result.location)


def test_each_publish_gets_its_own_folder_under_the_data_root_replacing_any_leftover(
    node: Node,
) -> None:
    root = node.settings.resolved_data_root
    for name in ("a", "b"):
        node.jobs.define_job(f"/Data/ImportJobs/{name}.imp", JobKind.IMPORT, CSV_IMPORT, "admin")
    node.store.queue.register_worker("w1", "host", os.getpid())
    first = _run_and_publish(node, "/Data/ImportJobs/a.imp", b"first")
    assert first.parent == root and first.name.isdigit()
    # A folder left where the next data goes (a publish whose commit never happened).
    leftover = root / str(int(first.name) + 1)
    leftover.mkdir()
    (leftover / "stale.parquet").write_bytes(b"stale")
    second = _run_and_publish(node, "/Data/ImportJobs/b.imp", b"second")
    assert second == leftover
    assert sorted(p.name for p in second.iterdir()) == ["data.parquet"]
    assert (second / "data.parquet").read_bytes() == b"second"
    assert (first / "data.parquet").read_bytes() == b"first"


def test_the_reconciling_worker_keeps_its_runs_even_when_its_row_is_gone(node: Node) -> None:
    """Another node may have dropped this worker's row; reconciling must not lose its own runs."""
    node.jobs.define_job("/Data/ImportJobs/a.imp", JobKind.IMPORT, CSV_IMPORT, "admin")
    node.jobs.trigger("/Data/ImportJobs/a.imp", admin(node))
    queue = node.store.queue
    queue.register_worker("w1", "host", os.getpid())
    claimed = queue.claim_next_execution("w1")
    assert claimed is not None
    queue.unregister_worker("w1")
    lost = queue.reconcile_lost_workers(
        dt.timedelta(hours=1),
        is_local_pid_alive=lambda _pid: True,
        hostname="host",
        alive_worker_id="w1",
    )
    assert lost == []
    with node.store.db.read() as conn:
        assert ex.get_execution(conn, claimed.id).status is JobStatus.RUNNING


def test_a_run_lost_with_its_worker_cancels_its_waiting_downstream(node: Node) -> None:
    """A sequential plan's member whose worker died ends in ERROR and its downstream is canceled."""
    upstream, downstream = "/Data/ImportJobs/a.imp", "/Analytics/Workbooks/b.wbk"
    node.jobs.define_job(upstream, JobKind.IMPORT, CSV_IMPORT, "admin")
    sheets = [
        {"kind": "data", "name": "s0", "source": {"importJob": upstream}},
        {"kind": "sql", "name": "out", "keep": True, "sql": "SELECT * FROM s0"},
    ]
    node.jobs.define_job(
        downstream,
        JobKind.WORKBOOK,
        {"triggering": {"mode": "DATA_DRIVEN"}, "sheets": sheets},
        "admin",
    )
    plan = {
        m.name: m.execution_id for m in sequential_trigger(node.jobs, [upstream], admin(node), {})
    }
    queue = node.store.queue
    queue.register_worker("w1", "host", os.getpid())
    claimed = queue.claim_next_execution("w1")
    assert claimed is not None and claimed.id == plan["a.imp"]
    lost = queue.reconcile_lost_workers(
        dt.timedelta(hours=1), is_local_pid_alive=lambda _pid: False, hostname="host"
    )
    assert lost == [claimed.id]
    with node.store.db.read() as conn:
        ended = ex.get_execution(conn, claimed.id)
        waiting = ex.get_execution(conn, plan["b.wbk"])  # type: ignore[arg-type]
    assert (ended.status, ended.progress) == (JobStatus.ERROR, None)
    assert waiting.status is JobStatus.CANCELED
    assert "a.imp" in (waiting.error_message or "") and "ERROR" in (waiting.error_message or "")
