"""Spark jobs through the real worker: a job's "engine" picks Spark, a stop cancels its work."""

from __future__ import annotations

import csv
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from datamill.bootstrap import Node, open_node
from datamill.domain import runlog as rl
from datamill.domain.status import JobStatus
from datamill.store.runlog import read_log
from datamill.worker.worker import STOPPED_BY_USER, Worker
from tests.helpers import (
    admin,
    define,
    orders_import,
    password_hash,
    totals_workbook,
    wait_for,
    wait_terminal,
    write_orders_csv,
)
from tests.spark.conftest import worker_settings

pytestmark = pytest.mark.spark
IMP = "/Data/ImportJobs/orders.imp"
WBK = "/Analytics/Workbooks/totals.wbk"
EXP = "/Data/ExportJobs/totals.exp"
# 3**32 rows of a cross join: years on this machine, unless cancelled.
ENDLESS = "SELECT count(*) AS n FROM " + ", ".join(f"orders AS o{i}" for i in range(32))


@pytest.fixture
def node(tmp_path: Path, spark_remote: str) -> Iterator[Node]:
    """A node whose worker runs DuckDB by default and knows where Spark is."""
    yield from _node(tmp_path, spark_remote, "duckdb")


@pytest.fixture
def spark_node(tmp_path: Path, spark_remote: str) -> Iterator[Node]:
    """A node whose worker runs Spark by default (DATAMILL_ENGINE=spark)."""
    yield from _node(tmp_path, spark_remote, "spark")


def _node(tmp_path: Path, spark_remote: str, engine: str) -> Iterator[Node]:
    settings = worker_settings(tmp_path, spark_remote, engine=engine)
    made = open_node(settings)
    made.store.users.create("admin", password_hash("secret"), roles=("ADMIN",))
    worker = Worker(made.store, made.settings, made.wakeup)
    worker.start()
    yield made
    worker.shutdown(grace_seconds=1.0)
    made.store.close()


def test_a_job_naming_spark_runs_on_spark_through_the_worker(node: Node) -> None:
    root = Path(node.settings.resolved_source_roots[0])
    source = write_orders_csv(root / "in", rows=30, bad_rows=2)
    define(node, IMP, orders_import(source))
    define(node, WBK, totals_workbook(IMP) | {"engine": "spark"})
    out = root / "out" / "totals.csv"
    out.parent.mkdir()
    sink = {"kind": "csv", "path": str(out)}
    define(
        node,
        EXP,
        {"source": {"workbook": WBK, "sheet": "totals"}, "sink": sink} | {"engine": "spark"},
    )
    user = admin(node)
    imported = wait_terminal(node, node.jobs.trigger(IMP, user).id)
    assert imported.counters["IMPORT_DROPPED_RECORDS"] == 2
    workbook = wait_terminal(
        node, node.jobs.trigger(WBK, user, variables={"min_amount": 150}).id, timeout=300
    )
    assert workbook.status is JobStatus.COMPLETED, workbook.error_message
    assert workbook.counters["WORKBOOK_RECORDS"] == 3
    exported = wait_terminal(node, node.jobs.trigger(EXP, user).id, timeout=300)
    assert exported.status is JobStatus.COMPLETED, exported.error_message
    with out.open() as handle:
        rows = {r["region"]: int(r["n"]) for r in csv.DictReader(handle)}
    # amounts are 10*i for i in 1..30; those >= 150 are i = 15..30, split by i % 3.
    assert rows == {"east": 5, "north": 6, "south": 5}
    # Both Spark runs worked in their work horse's Spark session (the worker
    # hands the horse's id over), not in one set up for each run.
    started = [_started(node, e.id) for e in (workbook, exported)]
    assert [s["session"] for s in started] == ["horse", "horse"]
    assert started[0]["pid"] == started[1]["pid"]


def test_stopping_a_spark_run_frees_spark_for_the_next_run(node: Node) -> None:
    root = Path(node.settings.resolved_source_roots[0])
    define(node, IMP, orders_import(write_orders_csv(root / "in", rows=3)))
    user = admin(node)
    wait_terminal(node, node.jobs.trigger(IMP, user).id)
    define(node, WBK, totals_workbook(IMP, sql=ENDLESS) | {"engine": "spark"})
    run = node.jobs.trigger(WBK, user)
    wait_for(node, run.id, {JobStatus.RUNNING})
    # Wait until the engine started it (its run log says so); Spark's own
    # progress of this endless join can lag for minutes on a loaded machine.
    wait_for_started(node, run.id)
    stopped = node.jobs.stop(WBK, user)
    assert (stopped.id, stopped.status) == (run.id, JobStatus.CANCELED)
    assert stopped.error_message == STOPPED_BY_USER
    # The local Spark has two task slots, both taken by the endless query
    # unless the stop cancelled it: only then can the next run finish.
    next_one = "/Analytics/Workbooks/next.wbk"
    define(node, next_one, totals_workbook(IMP) | {"engine": "spark"})
    after = wait_terminal(node, node.jobs.trigger(next_one, user).id, timeout=300)
    assert after.status is JobStatus.COMPLETED, after.error_message


def _started(node: Node, execution_id: int) -> dict[str, object]:
    with node.store.db.read() as conn:
        log = read_log(conn, execution_id)
    return dict(next(e.detail for e in log if e.event == rl.STARTED))


def _engine_of(node: Node, execution_id: int) -> str:
    return str(_started(node, execution_id)["engine"])


def test_the_workers_engine_runs_jobs_that_name_none(spark_node: Node) -> None:
    node = spark_node
    root = Path(node.settings.resolved_source_roots[0])
    define(node, IMP, orders_import(write_orders_csv(root / "in", rows=30)))
    define(node, WBK, totals_workbook(IMP))
    local = "/Analytics/Workbooks/local.wbk"
    define(node, local, totals_workbook(IMP) | {"engine": "duckdb"})
    user = admin(node)
    imported = wait_terminal(node, node.jobs.trigger(IMP, user).id, timeout=300)
    assert imported.status is JobStatus.COMPLETED, imported.error_message
    on_spark = wait_terminal(node, node.jobs.trigger(WBK, user).id, timeout=300)
    on_duckdb = wait_terminal(node, node.jobs.trigger(local, user).id, timeout=300)
    assert on_spark.status is on_duckdb.status is JobStatus.COMPLETED
    assert on_spark.counters["WORKBOOK_RECORDS"] == on_duckdb.counters["WORKBOOK_RECORDS"] == 3
    # The import of a file ran on Spark too (its log says so), and the DuckDB
    # workbook read the Parquet file Spark wrote.
    assert _engine_of(node, imported.id) == "spark"
    assert imported.counters["IMPORT_RECORDS"] == 30
    assert _engine_of(node, on_spark.id) == "spark"
    assert _engine_of(node, on_duckdb.id) == "duckdb"


def wait_for_started(node: Node, execution_id: int, timeout: float = 120.0) -> None:
    """Poll until the run log says the engine started the execution."""
    deadline = time.monotonic() + timeout
    while True:
        with node.store.db.read() as conn:
            if any(e.event == rl.STARTED for e in read_log(conn, execution_id)):
                return
        assert time.monotonic() < deadline, f"execution {execution_id} never started"
        time.sleep(0.1)
