"""Job service answers (services/jobs.py) that its mutation run showed unasserted."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import define, orders_import, write_orders_csv
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


def test_the_job_kill_route_records_who_stopped_and_refuses_an_ended_run(
    actors: Actors, files_root: Path
) -> None:
    define(actors.node, JOB, orders_import(write_orders_csv(files_root / "in", rows=3)))
    run = actors.call("admin", "POST", f"/api/job-execution{JOB}/trigger")
    assert run.status_code == 200, run.text
    run_id = run.json()["job-execution-id"]
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
