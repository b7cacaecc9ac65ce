"""A schedule's cron is read in the operator's timezone (DATAMILL_TIMEZONE): the schedule route.

Killed with it: services/jobs.py `refresh_job` mutant 34 (the timezone dropped
when a job is saved: the cron read as UTC), docs/testing.md "Surviving mutants".
"""

from __future__ import annotations

from pathlib import Path

import pytest

from datamill.settings import Settings
from tests.helpers import define, orders_import, totals_workbook, write_orders_csv
from tests.security.conftest import Actors

SOURCE = "/Data/ImportJobs/nine.imp"
JOB = "/Data/Workbooks/nine.wbk"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The usual test settings, on a server in Berlin."""
    return settings.model_copy(update={"timezone": "Europe/Berlin"})


def test_a_cron_runs_at_its_hour_in_the_operators_timezone(
    actors: Actors, files_root: Path
) -> None:
    define(actors.node, SOURCE, orders_import(write_orders_csv(files_root / "in", rows=3)))
    nine = {"triggering": {"mode": "SCHEDULED", "cron": "0 9 * * *"}}
    define(actors.node, JOB, totals_workbook(SOURCE) | nine)
    schedule = actors.call("admin", "GET", f"/api/job-execution{JOB}/schedule").json()
    assert (schedule["mode"], schedule["cron"], schedule["enabled"]) == (
        "SCHEDULED",
        "0 9 * * *",
        True,
    )
    # Nine in Berlin, shown in Berlin time (Datameer's format): not nine UTC.
    assert schedule["next-run"].endswith(" 9:00:00 AM"), schedule
