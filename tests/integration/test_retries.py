"""Runs started again after a lost worker or a passing failure (docs/jobs.md, "Retries").

The lost worker is a registered worker whose process does not exist: the
next reconciliation sees it gone at once (as after a kill -9 on this host).
"""

from __future__ import annotations

import datetime as dt
import socket
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from datamill.bootstrap import Node
from datamill.domain import runlog as rl
from datamill.domain.records import Execution
from datamill.domain.retry import RetryPolicy
from datamill.domain.status import JobStatus
from datamill.processes import pid_alive
from datamill.services.locations import policy_from_settings
from datamill.store import tables as t
from datamill.store.executions import request_stop
from datamill.store.queue import WORKER_LOST
from datamill.store.runlog import read_log
from datamill.worker.inputs import installation_key
from datamill.worker.worker import Worker
from tests.helpers import admin, define, execution, orders_import, wait_terminal, write_orders_csv

IMP = "/Data/ImportJobs/o.imp"
EXP = "/Data/ExportJobs/o.exp"
OTHER = "/Data/ImportJobs/other.imp"


def _dead_pid() -> int:
    pid = 4_000_000
    while pid_alive(pid):
        pid -= 1
    return pid


def _lose(node: Node, execution_id: int, name: str) -> None:
    """Claim the run for a worker whose process is gone (the run is RUNNING, attempt +1)."""
    node.store.queue.register_worker(name, socket.gethostname(), _dead_pid())
    claimed = node.store.queue.claim_next_execution(name)
    assert claimed is not None and claimed.id == execution_id


TWO_AT_ONCE = RetryPolicy(retries=2, delay_seconds=0)


def _reconcile(node: Node, policy: RetryPolicy = TWO_AT_ONCE) -> list[int]:
    return node.store.queue.reconcile_lost_workers(
        dt.timedelta(seconds=60),
        is_local_pid_alive=pid_alive,
        hostname=socket.gethostname(),
        retry_policy=policy,
    )


def _events(node: Node, execution_id: int) -> list[tuple[str, dict[str, Any]]]:
    with node.store.db.read() as conn:
        return [(e.event, e.detail) for e in read_log(conn, execution_id)]


@pytest.fixture
def worker(node: Node) -> Iterator[Worker]:
    started = Worker(node.store, node.settings, node.wakeup)
    started.start()
    yield started
    started.shutdown(grace_seconds=1.0)


def test_a_lost_run_is_retried_under_its_own_id_and_completes(node: Node, files_root: Path) -> None:
    define(
        node, IMP, {**orders_import(write_orders_csv(files_root / "in", rows=7)), "retryDelay": 0}
    )
    run = node.jobs.trigger(IMP, admin(node))
    _lose(node, run.id, "gone")
    worker = Worker(node.store, node.settings, node.wakeup)  # the default: 2 retries
    worker.start()
    try:
        ended = wait_terminal(node, run.id)
    finally:
        worker.shutdown(grace_seconds=1.0)
    assert (ended.status, ended.error_message, ended.attempts) == (JobStatus.COMPLETED, None, 2)
    assert ended.success_count == 7
    with node.store.db.read() as conn:
        published = conn.execute(sa.select(t.data).where(t.data.c.execution_id == run.id)).all()
    assert [d.record_count for d in published] == [7]
    names = [name for name, _ in _events(node, run.id)]
    assert names.count(rl.CLAIMED) == 1  # the lost claim's events died with its worker
    scheduled = [d for name, d in _events(node, run.id) if name == rl.RETRY_SCHEDULED]
    assert scheduled == [
        {"attempt": 1, "retries": 2, "delay": 0, "reason": f"{WORKER_LOST} (gone)"}
    ]
    assert names.index(rl.RETRY_SCHEDULED) < names.index(rl.RETRIED) < names.index(rl.FINISHED)
    assert rl.FAILED not in names


def test_a_run_out_of_retries_ends_in_error_naming_its_attempts(
    node: Node, files_root: Path
) -> None:
    source = write_orders_csv(files_root / "in", rows=3)
    define(node, IMP, {**orders_import(source), "retries": 1, "retryDelay": 0})
    run = node.jobs.trigger(IMP, admin(node))
    _lose(node, run.id, "gone-1")
    assert _reconcile(node) == [run.id]
    again = execution(node, run.id)
    assert (again.status, again.attempts, again.started_at) == (JobStatus.QUEUED, 1, None)
    _lose(node, run.id, "gone-2")
    _reconcile(node)
    ended = execution(node, run.id)
    assert ended.status is JobStatus.ERROR
    assert ended.error_message == (
        f"{WORKER_LOST}; given up after 2 attempts (the job allows 1 retries)"
    )
    failed = [d["message"] for name, d in _events(node, run.id) if name == rl.FAILED]
    assert failed == [ended.error_message]


def test_a_job_with_no_retries_ends_in_error_as_before(node: Node, files_root: Path) -> None:
    define(node, IMP, {**orders_import(write_orders_csv(files_root / "in", rows=3)), "retries": 0})
    run = node.jobs.trigger(IMP, admin(node))
    _lose(node, run.id, "gone")
    _reconcile(node)
    ended = execution(node, run.id)
    assert (ended.status, ended.error_message, ended.attempts) == (JobStatus.ERROR, WORKER_LOST, 1)


def test_a_run_asked_to_stop_before_its_worker_died_is_not_retried(
    node: Node, files_root: Path
) -> None:
    define(node, IMP, orders_import(write_orders_csv(files_root / "in", rows=3)))
    run = node.jobs.trigger(IMP, admin(node))
    _lose(node, run.id, "gone")
    with node.store.db.write() as conn:
        assert request_stop(conn, run.id, by="admin") is JobStatus.RUNNING
    _reconcile(node)
    ended = execution(node, run.id)
    assert (ended.status, ended.attempts) == (JobStatus.ERROR, 1)
    assert ended.error_message == f"{WORKER_LOST}; not retried: a stop was asked for"


def test_a_stop_during_the_retry_delay_cancels_the_run_for_good(
    node: Node, worker: Worker, files_root: Path
) -> None:
    source = write_orders_csv(files_root / "in", rows=3)
    define(node, IMP, {**orders_import(source), "retries": 2, "retryDelay": 3600})
    define(node, OTHER, orders_import(source))
    user = admin(node)
    # Stopped first, so the run is claimed by the dead worker, not this one: a
    # warm worker claims within milliseconds (its horses are forked ready).
    worker.shutdown(grace_seconds=1.0)
    run = node.jobs.trigger(IMP, user)
    _lose(node, run.id, "gone")
    restarted = Worker(node.store, node.settings, node.wakeup)
    restarted.start()
    try:
        assert run.id in restarted.reconcile() or execution(node, run.id).status is JobStatus.QUEUED
        # The delay holds: another job's runs go by while this one waits, unclaimed.
        for _ in range(3):
            other = wait_terminal(node, node.jobs.trigger(OTHER, user).id)
            assert other.status is JobStatus.COMPLETED
        waiting = execution(node, run.id)
        assert (waiting.status, waiting.attempts) == (JobStatus.QUEUED, 1)
        stopped = node.jobs.stop_execution(run.id, user)
        assert stopped.status is JobStatus.CANCELED
        # Whatever the workers do next, it never starts again.
        after = wait_terminal(node, node.jobs.trigger(IMP, user).id)
        assert after.status is JobStatus.COMPLETED
    finally:
        restarted.shutdown(grace_seconds=1.0)
    ended = execution(node, run.id)
    assert (ended.status, ended.attempts, ended.started_at) == (JobStatus.CANCELED, 1, None)
    assert ended.error_message == "Canceled while waiting for its next attempt."
    assert [n for n, _ in _events(node, run.id)][-2:] == [rl.STOPPED, rl.FINISHED]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_database_source_that_refuses_the_connection_is_retried(
    node: Node, worker: Worker
) -> None:
    node.settings.database_hosts = ["127.0.0.1"]
    node.store.file_policy = policy_from_settings(node.settings)
    with socket.socket() as sock:  # a port nothing listens on, once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"postgresql://u:p@127.0.0.1:{port}/db"
    source = {"kind": "database", "url": url, "table": "t"}
    define(node, IMP, {"source": source, "retries": 1, "retryDelay": 0})
    run = wait_terminal(node, node.jobs.trigger(IMP, admin(node)).id)
    assert (run.status, run.attempts) == (JobStatus.ERROR, 2)
    assert run.error_message is not None
    assert "Connection refused" in run.error_message
    assert run.error_message.endswith("(given up after 2 attempts (the job allows 1 retries))")
    scheduled = [d for name, d in _events(node, run.id) if name == rl.RETRY_SCHEDULED]
    assert len(scheduled) == 1 and "Connection refused" in scheduled[0]["reason"]
    assert scheduled[0]["attempt"] == 1


def test_a_failure_that_does_not_pass_is_not_retried(
    node: Node, worker: Worker, files_root: Path
) -> None:
    define(node, IMP, {**orders_import(files_root / "missing.csv"), "retries": 2, "retryDelay": 0})
    run = wait_terminal(node, node.jobs.trigger(IMP, admin(node)).id)
    assert (run.status, run.attempts) == (JobStatus.ERROR, 1)
    assert rl.RETRY_SCHEDULED not in [n for n, _ in _events(node, run.id)]


# ---------------------------------------------------------------- database sinks


def _sink_rows(db: Path, table: str) -> list[Any]:
    with sqlite3.connect(db) as conn:
        return conn.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()


def _export(node: Node, files_root: Path, **sink: Any) -> tuple[Path, int]:
    """An import with data, and an export of it appending to a SQLite table: (file, export id)."""
    define(node, IMP, orders_import(write_orders_csv(files_root / "in", rows=4)))
    assert wait_terminal(node, node.jobs.trigger(IMP, admin(node)).id).status.is_success
    target = files_root / "out" / "sink.db"
    target.parent.mkdir(parents=True, exist_ok=True)
    definition = {
        "source": {"importJob": IMP},
        "sink": {
            "kind": "database",
            "url": f"sqlite:///{target}",
            "table": "orders",
            "mode": "append",
            **sink,
        },
        "retryDelay": 0,
    }
    return target, define(node, EXP, definition)


def _plant_marker(node: Node, target: Path, execution_id: int, attempt: int) -> None:
    """A marker row of the run in the sink's database, as an attempt would commit it."""
    with sqlite3.connect(target) as conn:
        conn.execute(
            "INSERT INTO datamill_sink_marks VALUES (?, ?, 'orders', 4, '2026-12-01 00:00:00')",
            (f"{installation_key(node.settings)}:{execution_id}", attempt),
        )


def _run_on_a_new_worker(node: Node, execution_id: int) -> Execution:
    restarted = Worker(node.store, node.settings, node.wakeup)
    restarted.start()
    try:
        return wait_terminal(node, execution_id)
    finally:
        restarted.shutdown(grace_seconds=1.0)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_retried_export_whose_lost_attempt_committed_writes_nothing_again(
    node: Node, worker: Worker, files_root: Path
) -> None:
    target, _ = _export(node, files_root)
    first = wait_terminal(node, node.jobs.trigger(EXP, admin(node)).id)
    assert first.status is JobStatus.COMPLETED
    rows = _sink_rows(target, "orders")
    assert len(rows) == 4
    marks = _sink_rows(target, "datamill_sink_marks")
    assert [(m[0], m[1], m[2], m[3]) for m in marks] == [
        (f"{installation_key(node.settings)}:{first.id}", 1, "orders", 4)
    ]
    # A second run whose first attempt "committed" (rows and marker, as a lost
    # worker would leave them) and then lost its worker before the run ended.
    worker.shutdown(grace_seconds=1.0)
    run = node.jobs.trigger(EXP, admin(node))
    _lose(node, run.id, "gone")
    with sqlite3.connect(target) as conn:
        conn.executemany("INSERT INTO orders SELECT * FROM orders WHERE rowid <= 4", [()])
    _plant_marker(node, target, run.id, attempt=1)
    ended = _run_on_a_new_worker(node, run.id)
    assert (ended.status, ended.attempts, ended.success_count) == (JobStatus.COMPLETED, 2, 4)
    assert len(_sink_rows(target, "orders")) == 8  # 4 + the lost attempt's 4, not 12
    exported = [d for name, d in _events(node, run.id) if name == rl.EXPORTED]
    assert exported[-1]["written-by-attempt"] == 1 and exported[-1]["bytes"] == 0


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("planted", [1, 0])  # the attempt the planted marker claims
def test_a_marker_already_there_on_the_first_attempt_fails_the_run_writing_nothing(
    node: Node, worker: Worker, files_root: Path, planted: int
) -> None:
    target, _ = _export(node, files_root)
    assert wait_terminal(node, node.jobs.trigger(EXP, admin(node)).id).status.is_success
    # Someone who may write the sink's database guesses the next run's key
    # (installation:execution id) and plants its marker before the run starts.
    worker.shutdown(grace_seconds=1.0)
    run = node.jobs.trigger(EXP, admin(node))
    _plant_marker(node, target, run.id, attempt=planted)
    ended = _run_on_a_new_worker(node, run.id)
    assert (ended.status, ended.attempts) == (JobStatus.ERROR, 1)
    assert ended.error_message is not None
    assert ended.error_message.endswith(
        "database table 'orders' was not written: datamill_sink_marks already holds the"
        f" marker of this run (attempt {planted}), which no earlier attempt of this run"
        " (this is attempt 1) wrote; someone else did"
    )
    assert len(_sink_rows(target, "orders")) == 4  # the first run's rows only
    assert rl.EXPORTED not in [n for n, _ in _events(node, run.id)]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_lost_export_without_a_marker_ends_in_error_saying_why(
    node: Node, worker: Worker, files_root: Path
) -> None:
    target, _ = _export(node, files_root, marker=False)
    worker.shutdown(grace_seconds=1.0)
    run = node.jobs.trigger(EXP, admin(node))
    _lose(node, run.id, "gone")
    _reconcile(node)
    ended = execution(node, run.id)
    assert (ended.status, ended.attempts) == (JobStatus.ERROR, 1)
    assert ended.error_message == (
        f"{WORKER_LOST}; not retried: it may have written to database table orders and,"
        " without a marker (sink.marker is false), Datamill cannot tell whether that write"
        " committed"
    )
    assert not target.exists() or "datamill_sink_marks" not in str(_tables(target))


def _tables(db: Path) -> list[Any]:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT name FROM sqlite_master").fetchall()
