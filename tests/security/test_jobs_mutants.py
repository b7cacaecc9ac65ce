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
