"""Items 13 and 14 of issue 11: empty dashboards and infographics, the licence routes.

The requests are those of the Ruby client (`get_system_info`, `get_product_id`
with its doubled slash, `get_infographics`), the Nagios licence plugin and the
artifact-patching shell script (`$(curl .../license/product-id/)`).
"""

from __future__ import annotations

import datetime as dt
import re
import tomllib
import uuid
from pathlib import Path

from datamill.api.wire import Clock
from datamill.domain.status import JobStatus
from datamill.store import tables as t
from datamill.store.db import utcnow
from tests.compat.conftest import IMP, World

PYPROJECT = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
TIME = re.compile(r"^[A-Z][a-z]{2} \d{1,2}, \d{4} \d{1,2}:\d{2}:\d{2} (AM|PM)$")
USERS = ("bob", "rita", "sam", "admin")


def test_dashboards_and_infographics_are_empty_lists(world: World) -> None:
    for path in ("/rest/dashboard", "/rest/infographics"):
        for user in USERS:
            answer = world.send(user, "GET", path)
            assert (answer.status_code, answer.text) == (200, "[]")
            assert answer.headers["content-type"] == "application/json"
        anonymous = world.actors.client.get(path)
        assert anonymous.status_code == 401 and anonymous.json()["status"] == "failure"


def test_license_details_answer_honestly_for_admin(world: World) -> None:
    world.run(IMP, JobStatus.COMPLETED, bytes_read=38758720)
    world.run(IMP, JobStatus.ERROR, error_message="boom", bytes_read=99)
    answer = world.send("admin", "GET", "/rest/license-details")
    assert answer.status_code == 200
    details = answer.json()
    assert details["ProductVersion"] == PYPROJECT["project"]["version"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", details["ProductVersion"])
    assert PYPROJECT["project"]["license"] in details["LicenseType"]
    assert TIME.match(details["LicenseStartDate"]) and TIME.match(details["LicenseExpirationDate"])
    assert details["LicenseExpirationDate"] == "Dec 31, 9999 11:59:59 PM"
    assert TIME.match(details["LicenseVolumePeriodStartDate"])
    # check_datameer_license_volume.pl: these three must be there; a negative limit is unlimited.
    assert details["LicenseVolumePeriodInMonths"] == 1
    assert details["LicenseVolumelimitInBytes"] == -1
    assert details["TotalVolumeConsumedInBytes"] == 38758720
    assert str(uuid.UUID(details["ProductId"])) == details["ProductId"]
    assert '  "LicenseVolumelimitInBytes": -1,\n' in answer.text


def test_license_details_are_for_admin_only(world: World) -> None:
    for user in ("bob", "rita", "sam"):
        refused = world.send(user, "GET", "/rest/license-details")
        assert refused.status_code == 403
        assert refused.json() == {
            "status": "failure",
            "reason": "only a user with the ADMIN role may read the licence details",
        }


def test_product_id_is_plain_text_stable_and_the_licence_documents(world: World) -> None:
    # The Ruby client doubles the slash; the shell script adds a trailing one.
    first = world.send("admin", "GET", "//license/product-id")
    assert first.status_code == 200
    assert first.headers["content-type"].startswith("text/plain")
    product_id = first.text
    assert str(uuid.UUID(product_id)) == product_id  # no line end, nothing around it
    for user in USERS:
        again = world.send(user, "GET", "/license/product-id/")
        assert (again.status_code, again.text) == (200, product_id)
    assert world.send("admin", "GET", "/rest/license-details").json()["ProductId"] == product_id
    assert world.actors.client.get("/license/product-id").status_code == 401


def test_the_volume_period_is_the_calendar_month_from_its_first_instant(world: World) -> None:
    # Runs that ended exactly when the month began count; one a microsecond
    # earlier belongs to the month before (the period the licence plugin sums).
    now = utcnow()
    month = dt.datetime(now.year, now.month, 1)
    runs = {
        world.run(IMP, JobStatus.COMPLETED, bytes_read=1000): month,
        world.run(IMP, JobStatus.COMPLETED, bytes_read=20): month - dt.timedelta(microseconds=1),
        world.run(IMP, JobStatus.COMPLETED, bytes_read=3): now,
    }
    with world.actors.node.store.db.write() as conn:
        for execution_id, finished in runs.items():
            conn.execute(
                t.executions.update()
                .where(t.executions.c.id == execution_id)
                .values(finished_at=finished)
            )
    details = world.send("admin", "GET", "/rest/license-details").json()
    assert details["TotalVolumeConsumedInBytes"] == 1003
    clock = Clock(world.actors.node.settings.timezone)
    assert details["LicenseVolumePeriodStartDate"] == clock.datameer(month)
