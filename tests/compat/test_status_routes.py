"""Items 6, 7, 8 and 11 of issue 11: status spellings, the volume report, counters, the admin page.

Each request is replayed as the client sends it (the Nagios plugins' LWP GET
with Basic credentials, the Ruby client's HTTParty GET) and the assertion is
on what the client reads: the plugins grep a line, the Ruby client parses JSON.
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from fastapi.testclient import TestClient

from datamill.api.app import create_app
from datamill.domain.status import JobStatus
from datamill.store import executions as ex
from datamill.store import tables as t
from tests.compat.conftest import EXP, IMP, WBK, World
from tests.security.conftest import auth

NAGIOS_STATES = {
    # check_datameer_job_status.pl: the exact strings it sorts into OK / WARNING / CRITICAL.
    "OK": ["RUNNING", "WAITING_FOR_OTHER_JOB", "COMPLETED", "QUEUED"],
    "WARNING": ["COMPLETED_WITH_Warnings", "CANCELED", "CANCELLED"],
    "CRITICAL": ["ERROR"],
}


def _nagios_state(job_status: str) -> str:
    return next((s for s, names in NAGIOS_STATES.items() if job_status in names), "UNKNOWN")


def test_older_rest_routes_spell_the_warning_status_as_datameer_v1(world: World) -> None:
    run = world.run(IMP, JobStatus.COMPLETED_WITH_WARNINGS, bytes_read=40)
    config = world.configs[IMP]
    status = world.send("bob", "GET", f"/rest/job-configuration/job-status/{config}")
    assert '  "jobStatus": "COMPLETED_WITH_Warnings"\n' in status.text
    assert _nagios_state(status.json()["jobStatus"]) == "WARNING"
    assert status.json() == {"id": run, "jobStatus": "COMPLETED_WITH_Warnings"}
    history = world.send(
        "bob", "GET", f"/rest/job-configuration/job-history/{config}?start=0&length=10"
    )
    assert history.json() == [{"id": run, "jobStatus": "COMPLETED_WITH_Warnings"}]
    report = world.send("bob", "GET", f"/rest/job-configuration/volume-report/{config}")
    assert report.json()[0]["jobStatus"] == "COMPLETED_WITH_Warnings"

    # The /api routes keep the v2 spelling, on the fast path and on the route behind it.
    file_id = world.files[IMP]
    fast = world.send("bob", "GET", f"/api/job-execution/{file_id}/status")
    assert fast.json()["job-status"] == "COMPLETED_WITH_WARNINGS"
    node = world.actors.node
    with TestClient(create_app(node.settings, node.jobs, fast_status=False)) as slow:
        routed = slow.get(f"/api/job-execution/{file_id}/status", headers=auth("bob"))
    assert routed.json()["job-status"] == "COMPLETED_WITH_WARNINGS"
    details = world.send("bob", "GET", f"/rest/job-execution/job-details/{run}")
    assert details.json()["jobStatus"] == "COMPLETED_WITH_WARNINGS"
    # Every other status is spelled alike on both.
    world.run(IMP, JobStatus.ERROR, error_message="boom")
    status = world.send("bob", "GET", f"/rest/job-configuration/job-status/{config}")
    assert status.json()["jobStatus"] == "ERROR"


def test_volume_report_has_no_imported_volume_for_runs_that_published_nothing(
    world: World,
) -> None:
    done = world.run(IMP, JobStatus.COMPLETED, bytes_read=56765)
    failed = world.run(IMP, JobStatus.ERROR, error_message="boom", bytes_read=12)
    canceled = world.trigger(IMP)
    world.send("admin", "POST", f"/rest/job-execution/job-kill/{canceled}")
    warned = world.run(IMP, JobStatus.COMPLETED_WITH_WARNINGS, bytes_read=4098)
    report = world.send("bob", "GET", f"/rest/job-configuration/volume-report/{world.configs[IMP]}")
    assert report.status_code == 200
    assert report.json() == [
        {
            "id": warned,
            "jobStatus": "COMPLETED_WITH_Warnings",
            "importedVolume": 4098,
            "type": "NORMAL",
        },
        {"id": canceled, "jobStatus": "CANCELED", "type": "NORMAL"},
        {"id": failed, "jobStatus": "ERROR", "type": "NORMAL"},
        {"id": done, "jobStatus": "COMPLETED", "importedVolume": 56765, "type": "NORMAL"},
    ]
    # A "change since the last import" check reads the newest member that has one.
    volumes = [r["importedVolume"] for r in report.json() if "importedVolume" in r]
    assert volumes[:2] == [4098, 56765]


def test_job_details_of_running_and_canceled_runs_name_their_kinds_counters(
    world: World,
) -> None:
    running = world.trigger(IMP)
    world.start(running)
    details = world.send("bob", "GET", f"/rest/job-execution/job-details/{running}").json()
    assert details["jobStatus"] == "RUNNING"
    assert details["counters"] == {
        "IMPORT_RECORDS": 0,
        "IMPORT_BYTES": 0,
        "IMPORT_DROPPED_RECORDS": 0,
        "IMPORT_PREVIEW_RECORDS": 0,
        "IMPORT_OUTPUT_BYTES": 0,
        "IMPORT_DROPPED_SPLITS": 0,
        "IMPORT_OUTPUT_PARTITIONS": 0,
    }
    # Values a run reported so far are shown, the missing names as 0.
    world.finish(running, JobStatus.CANCELED, counters={"IMPORT_RECORDS": 7})
    canceled = world.send("bob", "GET", f"/rest/job-execution/job-details/{running}").json()
    assert canceled["jobStatus"] == "CANCELED"
    assert canceled["counters"]["IMPORT_RECORDS"] == 7
    assert canceled["counters"]["IMPORT_BYTES"] == 0
    # A canceled export (it never started) and a queued workbook: their own kinds' names.
    export = world.trigger(EXP)
    world.send("bob", "POST", f"/rest/job-execution/job-kill/{export}")
    exported = world.send("bob", "GET", f"/rest/job-execution/job-details/{export}").json()
    assert (exported["jobStatus"], list(exported["counters"])) == (
        "CANCELED",
        ["EXPORT_RECORDS", "EXPORT_DROPPED_RECORDS", "EXPORT_BYTES"],
    )
    workbook = world.trigger(WBK)
    queued = world.send("bob", "GET", f"/rest/job-execution/job-details/{workbook}").json()
    assert list(queued["counters"]) == [
        "WORKBOOK_RECORDS",
        "WORKBOOK_DROPPED_RECORDS",
        "WORKBOOK_OUTPUT_BYTES",
        "WORKBOOK_SHEETS",
    ]
    # An ERROR run keeps what it stored, {} as Datameer's may have (spec §4.3).
    world.send("bob", "POST", f"/rest/job-execution/job-kill/{workbook}")
    failed = world.run(IMP, JobStatus.ERROR, error_message="boom")
    error = world.send("bob", "GET", f"/rest/job-execution/job-details/{failed}").json()
    assert error["counters"] == {}


def test_the_admin_running_jobs_page_lists_running_then_queued_for_admin_only(
    world: World,
) -> None:
    running = world.trigger(IMP)
    world.start(running)
    queued = world.trigger(WBK)
    page = world.send("admin", "GET", "/admin/system-overview/runningJobs")
    assert page.status_code == 200 and page.headers["content-type"] == "application/json"
    body = page.json()
    assert list(body) == ["runningJobs", "queuedJobs"]
    [first] = body["runningJobs"]
    assert first["jobExecutionId"] == running and first["jobStatus"] == "RUNNING"
    assert first["fileName"] == "orders" and first["jobType"] == "import"
    assert first["user"] == "admin" and first["triggerType"] == "RESTAPI"
    assert first["progress"] == 0 and isinstance(first["startTime"], int)
    [second] = body["queuedJobs"]
    assert second["jobExecutionId"] == queued and second["jobStatus"] == "QUEUED"
    assert second["startTime"] is None and second["progress"] is None
    # The members of list-running are all there, with the same values.
    listed = world.send("admin", "GET", "/rest/jobs/list-running").json()
    # The queued run's expected start is computed from "now" on each request.
    assert second.pop("expectedStartTime") is not None
    assert listed[1].pop("expectedStartTime") is not None
    for item, listed_item in zip([first, second], listed, strict=True):
        assert {k: item[k] for k in listed_item} == listed_item
    assert second["queuePosition"] == 1

    # Owner, reader and stranger: the same 403, whatever runs.
    refusals = [
        world.send(u, "GET", "/admin/system-overview/runningJobs") for u in ("bob", "rita", "sam")
    ]
    for refused in refusals:
        assert refused.status_code == 403
        assert refused.json() == {
            "status": "failure",
            "reason": "only a user with the ADMIN role may read the system overview",
        }
    assert (
        world.send(
            "admin", "GET", "/admin/system-overview/runningJobs", Authorization=""
        ).status_code
        == 401
    )


def test_volume_consumed_counts_this_months_published_imports_only(world: World) -> None:
    world.run(IMP, JobStatus.COMPLETED, bytes_read=100)
    world.run(IMP, JobStatus.COMPLETED_WITH_WARNINGS, bytes_read=23)
    world.run(IMP, JobStatus.ERROR, error_message="boom", bytes_read=5)
    old = world.run(IMP, JobStatus.COMPLETED, bytes_read=1000)
    node = world.actors.node
    with node.store.db.write() as conn:
        month_start = dt.datetime.now(dt.UTC).replace(tzinfo=None, day=1, hour=0, minute=0)
        conn.execute(
            sa.update(t.executions)
            .where(t.executions.c.id == old)
            .values(finished_at=month_start - dt.timedelta(seconds=1))
        )
    with node.store.db.read() as conn:
        assert ex.bytes_imported_since(conn, month_start) == 123
