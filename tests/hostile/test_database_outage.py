"""PostgreSQL connections cut under a running worker.

The less intrusive form of a database restart: pg_terminate_backend on every
backend of the test's database, from a separate connection, several times
while a `datamill worker` process works through a stream of executions. (A
real `pg_ctlcluster restart` would also cut every other test's database on a
shared server.) The worker must reconnect, and no execution may be lost,
stranded or run twice. Two further tests cut the one connection that is in the
middle of preparing or of finishing a run, held there by a lock.
"""

from __future__ import annotations

import dataclasses
import os
import random
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError

from datamill.bootstrap import Node
from datamill.domain.status import JobStatus
from datamill.services.plans import sequential_trigger
from datamill.store import tables as t
from datamill.worker.housekeeping import remove_orphaned_data_folders
from tests.helpers import admin, define, execution, orders_import, wait_terminal, write_orders_csv
from tests.hostile.conftest import (
    Cluster,
    fail_setup,
    finish_gate,
    libpq,
    terminate_backends,
    wait_for_blocked_backend,
)
from tests.hostile.invariants import settled_problems, wait_until_settled

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.parametrize("database_url", ["postgres"], indirect=True),
]

SEED = int(os.environ.get("DATAMILL_HOSTILE_SEED", "20240607"))
CUTS = 6
IMPORTS = [f"/Data/ImportJobs/i{n}.imp" for n in range(4)]
W0, W1 = "/Analytics/Workbooks/w0.wbk", "/Analytics/Workbooks/w1.wbk"
SPIN = "SELECT count(*) AS c FROM range(60000000) r WHERE r.range % 7 = 3"


def _workbook(source: dict[str, str], mode: str, sql: str) -> dict[str, Any]:
    return {
        "triggering": {"mode": mode},
        "sheets": [
            {"kind": "data", "name": "s0", "source": source},
            {"kind": "sql", "name": "spin", "sql": SPIN},
            {"kind": "sql", "name": "out", "keep": True, "sql": sql},
        ],
    }


def _define_jobs(node: Node, files_root: Path) -> None:
    """Four imports; w0 follows i0 (data-driven), w1 reads w0 (manual)."""
    for n, path in enumerate(IMPORTS):
        define(node, path, orders_import(write_orders_csv(files_root / f"i{n}", rows=20)))
    define(
        node,
        W0,
        _workbook(
            {"importJob": IMPORTS[0]},
            "DATA_DRIVEN",
            "SELECT s0.*, (SELECT c FROM spin) AS spin FROM s0",
        ),
    )
    define(node, W1, _workbook({"workbook": W0, "sheet": "out"}, "MANUAL", "SELECT * FROM s0"))


@dataclasses.dataclass
class _Calls:
    """What the caller of the triggers saw: the runs it was given, and the calls that were cut."""

    accepted: list[int] = dataclasses.field(default_factory=list)
    cut: list[str] = dataclasses.field(default_factory=list)


def _some_work(node: Node, rng: random.Random, count: int, calls: _Calls) -> None:
    """Triggers and sequential plans; a call cut by a termination is simply not retried."""
    user = admin(node)
    for _ in range(count):
        try:
            if rng.random() < 0.2:
                plan = sequential_trigger(node.jobs, [IMPORTS[0], W1], user, {})
                calls.accepted += [m.execution_id for m in plan if m.execution_id is not None]
            else:
                calls.accepted.append(node.jobs.trigger(rng.choice(IMPORTS), user).id)
        except DBAPIError as error:
            # Only our own connection being cut may end a call; an IntegrityError
            # or any other store error is a bug and fails the test.
            if not error.connection_invalidated:
                raise
            calls.cut.append(str(error.orig).splitlines()[0])


def test_a_worker_rides_out_repeated_backend_terminations(
    node: Node, cluster: Cluster, files_root: Path
) -> None:
    rng = random.Random(SEED)
    _define_jobs(node, files_root)
    user = admin(node)
    _start_worker_with_data(node, cluster)
    calls = _Calls()
    _some_work(node, rng, 30, calls)
    for _ in range(CUTS):
        time.sleep(rng.uniform(0.2, 0.8))
        terminate_backends(node)
        _some_work(node, rng, 3, calls)
    wait_until_settled(node, 120, cluster.logs)
    # Every run a call answered with was kept and completed; the calls that
    # failed failed only because their connection was cut.
    answered = {run: execution(node, run).status for run in calls.accepted}
    assert set(answered.values()) == {JobStatus.COMPLETED}, answered
    print(f"{len(calls.accepted)} runs accepted, {len(calls.cut)} calls cut: {set(calls.cut)}")
    worker = cluster.procs[0]
    assert worker.alive, cluster.logs()
    # Reconnected: new work still gets done.
    after = wait_terminal(node, node.jobs.trigger(IMPORTS[1], user).id, timeout=60)
    assert after.status is JobStatus.COMPLETED, after
    # Housekeeping's sweep of unnamed data folders, without its wait for them to age.
    remove_orphaned_data_folders(node.store, min_age_seconds=0)
    # A run whose preparation lost its connection is handed back and runs again.
    report = settled_problems(node, allowed_errors=(), handed_back=cluster.handed_back())
    print(f"seed {SEED}: {report.statuses}, handed back {cluster.handed_back()}")
    report.assert_clean(cluster.logs())


def _start_worker_with_data(node: Node, cluster: Cluster) -> None:
    """Start the worker; run i0 (and so w0) and w1 once, so every workbook has data to read."""
    cluster.worker()
    user = admin(node)
    with fail_setup("the first runs"):
        assert wait_terminal(node, node.jobs.trigger(IMPORTS[0], user).id, 60).status.is_success
        wait_until_settled(node, 60, cluster.logs)
        assert wait_terminal(node, node.jobs.trigger(W1, user).id, 60).status.is_success


# ---------------------------------------------------------------- one connection, cut on cue


def _read_i0_workbook(node: Node, files_root: Path) -> str:
    """i0 with data, and a manual workbook w that reads it."""
    define(node, IMPORTS[0], orders_import(write_orders_csv(files_root / "i0", rows=20)))
    path = "/Analytics/Workbooks/w.wbk"
    define(node, path, _workbook({"importJob": IMPORTS[0]}, "MANUAL", "SELECT * FROM s0"))
    return path


def test_a_connection_lost_while_preparing_a_run_does_not_fail_it(
    node: Node, cluster: Cluster, files_root: Path
) -> None:
    with fail_setup("cutting the connection that prepares a run"):
        workbook = _read_i0_workbook(node, files_root)
        user = admin(node)
        cluster.worker()
        assert wait_terminal(node, node.jobs.trigger(IMPORTS[0], user).id).status.is_success
        with node.store.db.read() as conn:
            data_id = conn.execute(sa.select(sa.func.max(t.data.c.id))).scalar_one()
        with psycopg.connect(libpq(node)) as lock:
            # The worker reads the data it will use FOR SHARE: it waits behind us.
            lock.execute("SELECT id FROM data WHERE id = %s FOR UPDATE", (data_id,))
            run = node.jobs.trigger(workbook, user)
            assert terminate_backends(node, [wait_for_blocked_backend(node, "SELECT data.")])
            lock.rollback()
        ended = wait_terminal(node, run.id, timeout=60)
    assert (ended.status, ended.error_message) == (JobStatus.COMPLETED, None)
    report = settled_problems(node, allowed_errors=(), handed_back=cluster.handed_back())
    assert report.problems == []


def test_a_connection_lost_while_publishing_keeps_the_run_and_its_data(
    node: Node, cluster: Cluster, files_root: Path
) -> None:
    with fail_setup("cutting the connection that publishes a run"):
        workbook = _read_i0_workbook(node, files_root)
        user = admin(node)
        cluster.worker()
        assert wait_terminal(node, node.jobs.trigger(IMPORTS[0], user).id).status.is_success
        with finish_gate(node):
            run = node.jobs.trigger(workbook, user)
            assert terminate_backends(
                node, [wait_for_blocked_backend(node, "UPDATE executions SET status")]
            )
        ended = wait_terminal(node, run.id, timeout=60)
    assert (ended.status, ended.error_message) == (JobStatus.COMPLETED, None)
    remove_orphaned_data_folders(node.store, min_age_seconds=0)
    report = settled_problems(node, allowed_errors=())
    assert report.problems == []
