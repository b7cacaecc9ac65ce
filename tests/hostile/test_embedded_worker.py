"""`datamill serve` runs its worker in a supervised child process (worker/supervisor.py).

What an operator relies on: a worker child that dies is started again and
the runs it held end truly (retried here, so COMPLETED, each run once); a
server stopped with SIGTERM leaves no process behind, one killed outright
takes its worker with it; the server's wake-ups (a trigger, a stop) reach the
child at once rather than at its next poll.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from datamill.bootstrap import Node
from datamill.domain.status import JobStatus
from datamill.processes import pid_alive
from datamill.store import tables as t
from tests.helpers import (
    define,
    execution,
    orders_import,
    wait_for,
    wait_terminal,
    write_orders_csv,
)
from tests.hostile.conftest import AUTH, Cluster, Proc
from tests.hostile.invariants import settled_problems
from tests.ops.test_metrics import value

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

SLOW = "/Analytics/Workbooks/slow.wbk"
QUICK = "/Data/ImportJobs/quick.imp"
# Several seconds of one DuckDB thread: long enough to kill or stop mid-run.
SPIN = "SELECT count(*) AS c FROM range(1500000000) r WHERE r.range % 7 = 3"


def _define(node: Node, files_root: Path) -> None:
    define(node, QUICK, orders_import(write_orders_csv(files_root / "q", rows=5)))
    define(node, SLOW, {"sheets": [{"kind": "sql", "name": "spin", "keep": True, "sql": SPIN}]})


def _trigger(server: Proc, path: str) -> int:
    with httpx.Client(base_url=server.base, auth=AUTH, timeout=30) as client:
        response = client.post(f"/api/job-execution{path}/trigger")
    assert response.status_code == 200, response.text
    execution_id: int = response.json()["job-execution-id"]
    return execution_id


def _serving_after_one_run(node: Node, cluster: Cluster, files_root: Path) -> Proc:
    """A server whose worker child has completed one quick run."""
    _define(node, files_root)
    server = cluster.serve()
    assert wait_terminal(node, _trigger(server, QUICK)).status is JobStatus.COMPLETED
    return server


def _workers(node: Node) -> dict[str, int]:
    """The registered workers: id -> pid."""
    with node.store.db.read() as conn:
        rows = conn.execute(sa.select(t.workers.c.id, t.workers.c.pid)).all()
    return {row.id: row.pid for row in rows}


def _children(pid: int) -> set[int]:
    """The descendants of `pid` (from /proc): the engine children are forked by a
    fork server, the worker child's own child, so they are its grandchildren."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:  # ended meanwhile
                continue
            # The command name (in parentheses) may hold spaces; the ppid follows it.
            parents[int(entry)] = int(stat.rpartition(")")[2].split()[1])
    found: set[int] = set()
    level = {pid}
    while level:
        level = {child for child, parent in parents.items() if parent in level} - found
        found |= level
    return found


def _gone(pids: set[int], timeout: float = 30.0) -> set[int]:
    """Those of `pids` still alive once they had `timeout` seconds to end."""
    deadline = time.monotonic() + timeout
    alive = {pid for pid in pids if pid_alive(pid)}
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = {pid for pid in alive if pid_alive(pid)}
    return alive


def _running_worker(node: Node, execution_id: int) -> tuple[str, int]:
    """The id and pid of the worker running this execution."""
    running = wait_for(node, execution_id, {JobStatus.RUNNING})
    assert running.worker_id is not None
    return running.worker_id, _workers(node)[running.worker_id]


def test_a_killed_worker_child_is_restarted_and_its_run_runs_again_once(
    node: Node, cluster: Cluster, files_root: Path
) -> None:
    cluster.env["DATAMILL_RUN_RETRIES"] = "1"
    cluster.env["DATAMILL_RUN_RETRY_DELAY_SECONDS"] = "0"
    _define(node, files_root)
    server = cluster.serve()
    run = _trigger(server, SLOW)
    first_id, first_pid = _running_worker(node, run)
    assert first_pid in _children(server.process.pid)  # the server's own child
    os.kill(first_pid, 9)

    ended = wait_terminal(node, run, timeout=120)
    assert ended.status is JobStatus.COMPLETED, ended
    assert ended.attempts == 2  # the lost attempt, then one more: never two at once
    assert ended.worker_id not in (None, first_id)
    assert server.alive  # the server went on serving throughout
    (second_pid,) = _workers(node).values()
    assert second_pid != first_pid and second_pid in _children(server.process.pid)
    # The restarted worker takes new work too.
    assert wait_terminal(node, _trigger(server, QUICK)).status is JobStatus.COMPLETED
    assert "restarting it" in server.log.read_text()
    assert cluster.stop(server) == 0
    # Claimed twice (the attempt the kill ended, the retry), published once.
    assert settled_problems(node, max_attempts=2).problems == []


def test_a_stopped_server_leaves_no_process_behind(
    node: Node, cluster: Cluster, files_root: Path
) -> None:
    server = _serving_after_one_run(node, cluster, files_root)
    (worker_pid,) = _workers(node).values()
    engines = _children(worker_pid)
    # The warm engine children, the worker child's own (through its fork server).
    assert "datamill-horse" in {Path(f"/proc/{pid}/comm").read_text().strip() for pid in engines}

    assert cluster.stop(server) == 0
    assert _gone({worker_pid, *engines}) == set()
    assert _workers(node) == {}  # the worker child unregistered: it stopped gracefully


def test_a_server_killed_outright_takes_its_worker_and_engines_with_it(
    node: Node, cluster: Cluster, files_root: Path
) -> None:
    _define(node, files_root)
    server = cluster.serve()
    run = _trigger(server, SLOW)
    _, worker_pid = _running_worker(node, run)
    engines = _children(worker_pid)

    cluster.kill9(server)
    assert _gone({worker_pid, *engines}) == set()
    # Its run is lost, as with one process, and the next server's worker says so.
    server = cluster.serve()
    lost = wait_terminal(node, run, timeout=120)
    assert lost.status is JobStatus.ERROR, lost
    assert cluster.stop(server) == 0


def test_a_trigger_and_a_stop_reach_the_worker_child_without_its_polling(
    node: Node, cluster: Cluster, files_root: Path
) -> None:
    # Polling and heartbeats an hour apart: only the server's wake-ups can
    # start the run and deliver the stop within the test's time.
    cluster.env["DATAMILL_POLL_SECONDS"] = "3600"
    cluster.env["DATAMILL_HEARTBEAT_SECONDS"] = "3600"
    cluster.env["DATAMILL_WORKER_LOST_SECONDS"] = "7200"
    _define(node, files_root)
    server = cluster.serve()
    quick = _trigger(server, QUICK)
    assert wait_terminal(node, quick).status is JobStatus.COMPLETED
    # Both slots now wait for work (the one that ran found none after it).
    slow = _trigger(server, SLOW)
    wait_for(node, slow, {JobStatus.RUNNING})
    with httpx.Client(base_url=server.base, auth=AUTH, timeout=60) as client:
        response = client.post(f"/api/job-execution{SLOW}/stop")
    assert response.status_code == 200, response.text
    assert execution(node, slow).status is JobStatus.CANCELED
    assert cluster.stop(server) == 0
    # The child stopped when told to, not killed once its grace ran out: its
    # heartbeat thread, asleep for the hour, woke for the shutdown.
    assert "did not stop in time" not in server.log.read_text()


def test_the_servers_metrics_and_readiness_count_its_worker_child_once(
    node: Node, cluster: Cluster, files_root: Path
) -> None:
    server = _serving_after_one_run(node, cluster, files_root)
    with httpx.Client(base_url=server.base, auth=AUTH, timeout=30) as client:
        # The slot is freed just after the run's end is recorded.
        deadline = time.monotonic() + 30
        while True:
            scraped = client.get("/metrics")
            assert scraped.status_code == 200, scraped.text
            text = scraped.text
            busy = value(text, "datamill_worker_slots", state="busy")
            if busy == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        ready = client.get("/ready")
    # Counted by the child, served by the server: the run, the slots and the heartbeat.
    assert value(text, "datamill_runs_finished_total", kind="import", status="COMPLETED") == 1
    assert value(text, "datamill_runs_started_total", kind="import") == 1
    assert value(text, "datamill_run_duration_seconds_count", kind="import") == 1
    assert value(text, "datamill_worker_slots", state="idle") == 2  # DATAMILL_CONCURRENCY
    assert value(text, "datamill_worker_slots", state="busy") == 0
    # Counted by the server: the trigger request.
    trigger = "/api/job-execution/{reference:path}/trigger"
    assert value(text, "datamill_trigger_requests_total", route=trigger, status="200") == 1
    # One family per name, as one process would expose it.
    types = [line for line in text.splitlines() if line.startswith("# TYPE ")]
    assert len(types) == len(set(types))
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"]["worker"] == "ok"
    assert cluster.stop(server) == 0


def test_the_server_is_unready_while_its_worker_child_stops_beating(
    node: Node, cluster: Cluster, files_root: Path
) -> None:
    server = _serving_after_one_run(node, cluster, files_root)
    (worker_pid,) = _workers(node).values()
    with httpx.Client(base_url=server.base, timeout=30) as client:
        assert client.get("/ready").json()["checks"]["worker"] == "ok"
        os.kill(worker_pid, signal.SIGSTOP)  # alive, but its heartbeats stop
        try:
            deadline = time.monotonic() + 60
            while (answer := client.get("/ready")).status_code == 200:
                assert time.monotonic() < deadline, "still ready while the worker is frozen"
                time.sleep(0.1)
            assert answer.status_code == 503
            assert answer.json()["checks"]["worker"].startswith("the worker's last heartbeat is")
        finally:
            os.kill(worker_pid, signal.SIGCONT)
        deadline = time.monotonic() + 60
        while (answer := client.get("/ready")).status_code != 200:
            assert time.monotonic() < deadline, answer.text
            time.sleep(0.1)
    assert answer.json()["checks"]["worker"] == "ok"
    assert cluster.stop(server) == 0


def test_ctrl_c_to_the_terminals_process_group_stops_server_and_worker_cleanly(
    node: Node, cluster: Cluster, files_root: Path
) -> None:
    # As a terminal's Ctrl-C: SIGINT to every process of the group at once.
    _define(node, files_root)
    server = cluster.serve(new_session=True)
    process = server.process
    try:
        assert wait_terminal(node, _trigger(server, QUICK)).status is JobStatus.COMPLETED
        (worker_pid,) = _workers(node).values()
        engines = _children(worker_pid)

        os.killpg(process.pid, signal.SIGINT)
        assert process.wait(timeout=60) == 0, server.log.read_text()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert _gone({worker_pid, *engines}) == set()
    assert _workers(node) == {}  # the child stopped gracefully, once, when the server said so
