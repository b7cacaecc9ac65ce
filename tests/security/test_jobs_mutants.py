"""Job service answers (services/jobs.py) that its mutation run showed unasserted."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from datamill.bootstrap import Node
from datamill.domain.status import JobKind, JobStatus
from datamill.services.wakeup import Wakeup
from datamill.settings import Settings
from datamill.worker.worker import Worker
from tests.helpers import (
    define,
    execution,
    orders_import,
    pg_sessions,
    wait_for,
    write_orders_csv,
)
from tests.security.conftest import Actors

JOB = "/Data/ImportJobs/idle.imp"


def test_stopping_a_job_with_nothing_queued_or_running_says_so(
    actors: Actors, files_root: Path
) -> None:
    define(actors.node, JOB, orders_import(write_orders_csv(files_root / "in", rows=3)))
    answer = actors.call("admin", "POST", f"/api/job-execution{JOB}/stop")
    assert answer.status_code == 409, answer.text
    assert answer.json() == {
        "status": "failure",
        "reason": "There is no queued or running execution of this job to stop.",
    }


def _queued(actors: Actors, files_root: Path) -> int:
    """admin's import job, triggered (no worker runs here): the id of its QUEUED run."""
    define(actors.node, JOB, orders_import(write_orders_csv(files_root / "in", rows=3)))
    run = actors.call("admin", "POST", f"/api/job-execution{JOB}/trigger")
    assert run.status_code == 200, run.text
    return int(run.json()["job-execution-id"])


def test_the_job_kill_route_records_who_stopped_and_refuses_an_ended_run(
    actors: Actors, files_root: Path
) -> None:
    run_id = _queued(actors, files_root)
    killed = actors.call("admin", "POST", f"/rest/job-execution/job-kill/{run_id}")
    assert killed.status_code == 200, killed.text
    log = actors.call("admin", "GET", f"/api/job-execution/{run_id}/log").json()
    asked = [e for e in log if e["event"] == "stop-requested"]
    assert [e["by"] for e in asked] == ["admin"]
    again = actors.call("admin", "POST", f"/rest/job-execution/job-kill/{run_id}")
    assert (again.status_code, again.json()) == (
        409,
        {"status": "failure", "reason": f"Execution {run_id} has already ended (CANCELED)."},
    )


# A stop takes effect when the worker's heartbeat loop reads the stop flag.
# The heartbeat here is an hour, so only the wake-up that the stop sends can
# make the worker see it before the stop's wait (20 s) gives up: the stop
# answers 200 with the run CANCELED, never "still running".
ENDLESS = "SELECT sum(hash(x)) AS s FROM range(1000000000000) AS t(x)"
HOUR = 3600.0


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The usual settings with an hour between heartbeats (and one engine thread)."""
    return settings.model_copy(
        update={"heartbeat_seconds": HOUR, "worker_lost_seconds": 2 * HOUR, "engine_threads": 1}
    )


@contextlib.contextmanager
def _worker_of(node: Node, wakeup: Wakeup) -> Iterator[Worker]:
    """A worker on the node's database, woken through `wakeup`."""
    worker = Worker(node.store, node.settings, wakeup)
    worker.start()
    try:
        yield worker
    finally:
        # Its heartbeat thread sleeps an hour unless woken: wake it until it has seen the close.
        closing = threading.Thread(target=worker.shutdown, kwargs={"grace_seconds": 1.0})
        closing.start()
        while closing.is_alive():
            wakeup.notify_stop()
            closing.join(0.05)


def _endless(actors: Actors) -> int:
    """eve's endless workbook; its file id."""
    document = {"sheets": [{"kind": "sql", "name": "out", "keep": True, "sql": ENDLESS}]}
    entry, _ = actors.node.jobs.define_job(
        "/Users/eve/endless.wbk", JobKind.WORKBOOK, document, "eve"
    )
    return entry.id


def _running(actors: Actors, file_id: int) -> int:
    """A new run of the job, once it is RUNNING."""
    answer = actors.call("eve", "POST", f"/api/job-execution/{file_id}/trigger")
    assert answer.status_code == 200, answer.text
    execution_id = int(answer.json()["job-execution-id"])
    wait_for(actors.node, execution_id, {JobStatus.RUNNING})
    return execution_id


def _stopped_by(actors: Actors, execution_id: int) -> tuple[JobStatus, dict[str, Any]]:
    """The run's status right after the stop answered, and who its report says stopped it."""
    details = actors.call("eve", "GET", f"/rest/job-execution/job-details/{execution_id}").json()
    return execution(actors.node, execution_id).status, details["failure"]


def test_a_stop_wakes_the_worker_of_this_node_at_once(actors: Actors) -> None:
    with _worker_of(actors.node, actors.node.wakeup):
        file_id = _endless(actors)
        first = _running(actors, file_id)
        stopped = actors.call("eve", "POST", f"/api/job-execution/{file_id}/stop")
        assert (stopped.status_code, stopped.text) == (200, "")
        assert _stopped_by(actors, first) == (
            JobStatus.CANCELED,
            {"message": "Stopped by user.", "by": "eve"},
        )
        # The older job-kill route, by execution id.
        second = _running(actors, file_id)
        killed = actors.call("eve", "POST", f"/rest/job-execution/job-kill/{second}")
        assert killed.status_code == 200, killed.text
        assert _stopped_by(actors, second) == (
            JobStatus.CANCELED,
            {"message": "Stopped by user.", "by": "eve"},
        )


def _listening(node: Node) -> bool:
    """Whether some connection of the test database has run LISTEN (a worker's listener)."""
    return pg_sessions(node, "query LIKE 'LISTEN %'") > 0


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_a_stop_wakes_a_worker_on_another_node(actors: Actors) -> None:
    # The worker's own Wakeup: only the database's NOTIFY reaches it, as on another host.
    with _worker_of(actors.node, Wakeup()):
        for _ in range(3000):
            if _listening(actors.node):
                break
            time.sleep(0.01)
        assert _listening(actors.node)
        file_id = _endless(actors)
        first = _running(actors, file_id)
        stopped = actors.call("eve", "POST", f"/api/job-execution/{file_id}/stop")
        assert (stopped.status_code, stopped.text) == (200, "")
        assert _stopped_by(actors, first)[0] is JobStatus.CANCELED
        second = _running(actors, file_id)
        killed = actors.call("eve", "POST", f"/rest/job-execution/job-kill/{second}")
        assert killed.status_code == 200, killed.text
        assert _stopped_by(actors, second)[0] is JobStatus.CANCELED


def test_the_job_kill_route_answers_an_unreadable_run_like_a_missing_one(
    actors: Actors, files_root: Path
) -> None:
    # _visible_execution 19: the answer names the run's id in Datameer's words, the
    # same for a run bob may not read as for none at all, and it stops nothing.
    run_id = _queued(actors, files_root)
    for user, asked in (("bob", run_id), ("bob", 999999), ("admin", 999999)):
        answer = actors.call(user, "POST", f"/rest/job-execution/job-kill/{asked}")
        reason = f"Entity of type 'JobExecution' with id '{asked}' not found."
        assert (answer.status_code, answer.json()) == (
            404,
            {"status": "failure", "reason": reason},
        ), user
    assert execution(actors.node, run_id).status is JobStatus.QUEUED
