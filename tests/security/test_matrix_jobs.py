"""Permission matrix: the job routes and the data routes (rows; see matrix.py)."""

from __future__ import annotations

import dataclasses
from typing import Any

import httpx
import pytest

from datamill.domain.status import JobKind, JobStatus
from datamill.store import executions as ex
from tests.security.matrix import (
    ACTORS,
    CHANGE,
    CHANGE_DENIED,
    DEFINITIONS,
    EVERYONE,
    MISSING_ID,
    READ,
    RUN_DENIED,
    SEES,
    Call,
    Row,
    Target,
    World,
    admin_get,
    body_of,
    check,
    id_of,
    job_with_queued_run,
    rows_by_name,
    run_cell,
    run_status,
)
from tests.security.matrix import world as world  # one node per backend for this module


def _still_queued(world: World, target: Target) -> None:
    assert run_status(world, target.extra["execution"]) is JobStatus.QUEUED


def _no_new_run(world: World, target: Target) -> None:
    with world.node.store.db.read() as conn:
        assert ex.active_execution_for_config(conn, target.config_id) is None


def _queue_members(body: dict[str, Any], position: str, start: str) -> dict[str, Any]:
    """The body without Datamill's queue members (issue 15), checked to be there."""
    assert isinstance(body.pop(position), int) and start in body, body
    body.pop(start)
    return body


def _status_ok(world: World, t: Target, actor: str, r: httpx.Response) -> None:
    assert _queue_members(body_of(r), "queue-position", "expected-start-time") == {
        "status": "success",
        "file-id": t.file_id,
        "job-execution-id": t.extra["execution"],
        "job-status": "QUEUED",
        "start-time": None,
    }


def _triggered(world: World, t: Target, actor: str, r: httpx.Response) -> None:
    body = body_of(r)
    assert body["status"] == "success" and body["job-execution-user"] == actor
    assert run_status(world, body["job-execution-id"]) is JobStatus.QUEUED


def _canceled(world: World, t: Target, actor: str, r: httpx.Response) -> None:
    assert r.text in ("", '{\n  "status": "success"\n}'), r.text
    assert run_status(world, t.extra["execution"]) is JobStatus.CANCELED


def _running_list(world: World, t: Target, actor: str, r: httpx.Response) -> None:
    seen = [item["jobExecutionId"] for item in body_of(r)]
    assert (t.extra["execution"] in seen) is SEES[actor], seen


def _sequential_target(world: World) -> Target:
    upstream = world.job()
    others = f"/api/filesystem/files/{upstream.file_id}/permission/others"
    opened = world.call("owner", Call("PUT", others, {"readable": True, "executable": True}))
    assert opened.status_code == 200, opened.text
    downstream = world.job(
        JobKind.WORKBOOK,
        {
            "triggering": {"mode": "DATA_DRIVEN"},
            "sheets": [
                {"kind": "data", "name": "src", "source": {"importJob": upstream.path}},
                {"kind": "sql", "name": "out", "keep": True, "sql": "SELECT * FROM src"},
            ],
        },
    )
    upstream.extra["downstream"] = downstream.config_id
    return upstream


def _plan(world: World, t: Target, actor: str, r: httpx.Response) -> None:
    body = body_of(r)
    assert body["status"] == "success"
    planned = [m["job-configuration-id"] for m in body["execution-plan"]]
    # Only who may read AND run the data-driven workbook downstream gets it planned.
    runs_downstream = actor in ("owner", "admin")
    assert planned == [t.config_id, t.extra["downstream"]][: 2 if runs_downstream else 1]
    assert all(m["trigger"] for m in body["execution-plan"])


def _plan_of_one(world: World, t: Target, actor: str, r: httpx.Response) -> None:
    [member] = body_of(r)["execution-plan"]
    assert member["job-configuration-id"] == t.config_id and member["trigger"] is True
    assert run_status(world, member["job-execution-id"]) is JobStatus.QUEUED


JOB_ROWS = [
    Row(
        "v2 status by id",
        READ,
        job_with_queued_run,
        lambda t: Call("GET", f"/api/job-execution/{t.file_id}/status", typed=id_of(t)),
        _status_ok,
        missing=lambda t: Call(
            "GET", f"/api/job-execution/{MISSING_ID}/status", typed=str(MISSING_ID)
        ),
    ),
    Row(
        "v2 status by path",
        READ,
        job_with_queued_run,
        lambda t: Call("GET", f"/api/job-execution{t.path}/status", typed=t.path),
        _status_ok,
        missing=lambda t: Call(
            "GET",
            "/api/job-execution/Data/ImportJobs/no.imp/status",
            typed="/Data/ImportJobs/no.imp",
        ),
    ),
    Row(
        "v2 schedule",
        READ,
        lambda w: w.job(),
        lambda t: Call("GET", f"/api/job-execution/{t.file_id}/schedule", typed=id_of(t)),
        lambda w, t, a, r: check(
            body_of(r)["file-id"] == t.file_id and body_of(r)["mode"] == "MANUAL"
        ),
        missing=lambda t: Call(
            "GET", f"/api/job-execution/{MISSING_ID}/schedule", typed=str(MISSING_ID)
        ),
    ),
    Row(
        "v2 trigger",
        CHANGE,
        lambda w: w.job(),
        lambda t: Call("POST", f"/api/job-execution/{t.file_id}/trigger", typed=id_of(t)),
        _triggered,
        missing=lambda t: Call(
            "POST", f"/api/job-execution/{MISSING_ID}/trigger", typed=str(MISSING_ID)
        ),
        denied=RUN_DENIED,
        intact=_no_new_run,
    ),
    Row(
        "v2 stop",
        CHANGE,
        job_with_queued_run,
        lambda t: Call("POST", f"/api/job-execution/{t.file_id}/stop", typed=id_of(t)),
        _canceled,
        missing=lambda t: Call(
            "POST", f"/api/job-execution/{MISSING_ID}/stop", typed=str(MISSING_ID)
        ),
        denied=RUN_DENIED,
        intact=_still_queued,
    ),
    Row(
        "job details",
        READ,
        job_with_queued_run,
        lambda t: Call(
            "GET",
            f"/rest/job-execution/job-details/{t.extra['execution']}",
            typed=str(t.extra["execution"]),
        ),
        lambda w, t, a, r: check(
            body_of(r)["jobStatus"] == "QUEUED" and body_of(r)["file"]["id"] == t.file_id
        ),
        missing=lambda t: Call(
            "GET", f"/rest/job-execution/job-details/{MISSING_ID}", typed=str(MISSING_ID)
        ),
    ),
    Row(
        "job history",
        READ,
        job_with_queued_run,
        lambda t: Call(
            "GET", f"/rest/job-configuration/job-history/{t.config_id}", typed=str(t.config_id)
        ),
        lambda w, t, a, r: check(
            body_of(r) == [{"id": t.extra["execution"], "jobStatus": "QUEUED"}]
        ),
        missing=lambda t: Call(
            "GET", f"/rest/job-configuration/job-history/{MISSING_ID}", typed=str(MISSING_ID)
        ),
    ),
    Row(
        "legacy status",
        READ,
        job_with_queued_run,
        lambda t: Call(
            "GET", f"/rest/job-configuration/job-status/{t.config_id}", typed=str(t.config_id)
        ),
        lambda w, t, a, r: check(
            _queue_members(body_of(r), "queuePosition", "expectedStartTime")
            == {"id": t.extra["execution"], "jobStatus": "QUEUED"}
        ),
        missing=lambda t: Call(
            "GET", f"/rest/job-configuration/job-status/{MISSING_ID}", typed=str(MISSING_ID)
        ),
    ),
    Row(
        "legacy trigger",
        CHANGE,
        lambda w: w.job(),
        lambda t: Call(
            "POST", f"/rest/job-execution?configuration={t.config_id}", typed=str(t.config_id)
        ),
        lambda w, t, a, r: check(
            run_status(w, body_of(r)["id"]) is JobStatus.QUEUED
            and body_of(r)["jobStatus"] == "QUEUED"
        ),
        missing=lambda t: Call(
            "POST", f"/rest/job-execution?configuration={MISSING_ID}", typed=str(MISSING_ID)
        ),
        denied=RUN_DENIED,
        intact=_no_new_run,
    ),
    Row(
        "legacy job-kill",
        CHANGE,
        job_with_queued_run,
        lambda t: Call(
            "POST",
            f"/rest/job-execution/job-kill/{t.extra['execution']}",
            typed=str(t.extra["execution"]),
        ),
        _canceled,
        missing=lambda t: Call(
            "POST", f"/rest/job-execution/job-kill/{MISSING_ID}", typed=str(MISSING_ID)
        ),
        denied=RUN_DENIED,
        intact=_still_queued,
    ),
    Row(
        "volume report",
        READ,
        lambda w: w.with_data(w.job(), "data"),
        lambda t: Call(
            "GET", f"/rest/job-configuration/volume-report/{t.config_id}", typed=str(t.config_id)
        ),
        lambda w, t, a, r: check([i["jobStatus"] for i in body_of(r)] == ["COMPLETED"]),
        missing=lambda t: Call(
            "GET", f"/rest/job-configuration/volume-report/{MISSING_ID}", typed=str(MISSING_ID)
        ),
    ),
    Row(
        "list running (v2)",
        EVERYONE,
        job_with_queued_run,
        lambda t: Call("GET", "/api/job-execution/list-running"),
        _running_list,
    ),
    Row(
        "list running (rest)",
        EVERYONE,
        job_with_queued_run,
        lambda t: Call("GET", "/rest/jobs/list-running"),
        _running_list,
    ),
    Row(
        "sequential trigger",
        CHANGE,
        lambda w: w.job(),
        lambda t: Call(
            "POST",
            "/api/job-execution/sequential-trigger",
            {"fileIds": [t.file_id]},
            typed=id_of(t),
        ),
        _plan_of_one,
        missing=lambda t: Call(
            "POST",
            "/api/job-execution/sequential-trigger",
            {"fileIds": [MISSING_ID]},
            typed=str(MISSING_ID),
        ),
        denied=RUN_DENIED,
        intact=_no_new_run,
    ),
    Row(
        "sequential trigger: downstream member",
        EVERYONE,
        _sequential_target,
        lambda t: Call("POST", "/api/job-execution/sequential-trigger", {"fileIds": [t.file_id]}),
        _plan,
    ),
]


# ---------------------------------------------------------------- data


def _with_import_data(world: World) -> Target:
    return world.with_data(world.job(), "data")


def _with_sheet_data(world: World) -> Target:
    return world.with_data(world.job(JobKind.WORKBOOK), "totals")


def _listing_ok(world: World, t: Target, actor: str, r: httpx.Response) -> None:
    [output] = body_of(r)
    assert output["path"].startswith(t.path) and output["record-count"] == 3
    assert [d["id"] for d in output["datas"]] == [t.extra["data"]]


def _csv_ok(world: World, t: Target, actor: str, r: httpx.Response) -> None:
    assert r.headers["content-type"].startswith("text/csv")
    assert r.text.splitlines() == ['"n"', "1", "2", "3"]


def _data_still_listed(world: World, t: Target) -> None:
    listing = admin_get(world, f"/rest/data/import-job/{t.config_id}").json()
    assert [d["id"] for d in listing[0]["datas"]] == [t.extra["data"]]


DATA_ROWS = [
    Row(
        "data listing: import job",
        READ,
        _with_import_data,
        lambda t: Call("GET", f"/rest/data/import-job/{t.config_id}", typed=str(t.config_id)),
        _listing_ok,
        missing=lambda t: Call("GET", f"/rest/data/import-job/{MISSING_ID}", typed=str(MISSING_ID)),
    ),
    Row(
        "data listing: workbook",
        READ,
        _with_sheet_data,
        lambda t: Call("GET", f"/rest/data/workbook/{t.config_id}", typed=str(t.config_id)),
        _listing_ok,
        missing=lambda t: Call("GET", f"/rest/data/workbook/{MISSING_ID}", typed=str(MISSING_ID)),
    ),
    Row(
        "data download: import job",
        READ,
        _with_import_data,
        lambda t: Call(
            "GET", f"/rest/data/import-job/{t.config_id}/download", typed=str(t.config_id)
        ),
        _csv_ok,
        missing=lambda t: Call(
            "GET", f"/rest/data/import-job/{MISSING_ID}/download", typed=str(MISSING_ID)
        ),
    ),
    Row(
        "data download: workbook sheet",
        READ,
        _with_sheet_data,
        lambda t: Call(
            "GET", f"/rest/data/workbook/{t.config_id}/totals/download", typed=str(t.config_id)
        ),
        _csv_ok,
        missing=lambda t: Call(
            "GET", f"/rest/data/workbook/{MISSING_ID}/totals/download", typed=str(MISSING_ID)
        ),
    ),
    Row(
        "data deletion",
        CHANGE,
        _with_import_data,
        lambda t: Call("DELETE", f"/rest/data/{t.extra['data']}", typed=str(t.extra["data"])),
        lambda w, t, a, r: check(
            body_of(r) == {"status": True}
            and admin_get(w, f"/rest/data/import-job/{t.config_id}").json()[0]["datas"] == []
        ),
        missing=lambda t: Call("DELETE", f"/rest/data/{MISSING_ID}", typed=str(MISSING_ID)),
        denied=CHANGE_DENIED,
        intact=_data_still_listed,
    ),
]


# ---------------------------------------------------------------- session cookies


def _with_cookie(row: Row) -> Row:
    """The row sent with the actor's session cookie alone: it carries exactly their rights."""
    missing = row.missing

    def call(t: Target) -> Call:
        return dataclasses.replace(row.call(t), cookie=True)

    def nothing(t: Target) -> Call:
        assert missing is not None
        return dataclasses.replace(missing(t), cookie=True)

    return dataclasses.replace(
        row, name=f"{row.name} (cookie)", call=call, missing=nothing if missing else None
    )


COOKIE_ROWS = [
    _with_cookie(row)
    for row in JOB_ROWS
    if row.name in ("v2 status by id", "v2 trigger", "v2 stop", "job details", "list running (v2)")
]


ROWS = rows_by_name([*JOB_ROWS, *DATA_ROWS, *COOKIE_ROWS])


@pytest.mark.parametrize("actor", ACTORS)
@pytest.mark.parametrize("row_name", list(ROWS))
def test_matrix(world: World, row_name: str, actor: str) -> None:
    run_cell(world, ROWS[row_name], actor)


def _not_found(response: httpx.Response, reason: str) -> None:
    assert (response.status_code, body_of(response)) == (
        404,
        {"status": "failure", "reason": reason},
    ), response.text


def test_data_routes_name_what_is_missing_and_the_download(world: World) -> None:
    """The missing answers the HIDDEN cells are compared with, and the download's file name.

    (A HIDDEN cell only proves unreadable == missing; these prove what missing says.)
    """
    get = lambda url: admin_get(world, url)  # noqa: E731
    job = "Entity of type 'JobConfiguration' with id '{}' not found."
    _not_found(get(f"/rest/data/import-job/{MISSING_ID}"), job.format(MISSING_ID))
    _not_found(get(f"/rest/data/workbook/{MISSING_ID}/s/download"), job.format(MISSING_ID))
    _not_found(
        world.call("admin", Call("DELETE", f"/rest/data/{MISSING_ID}")),
        f"Entity of type 'Data' with id '{MISSING_ID}' not found.",
    )
    empty = world.job()
    _not_found(
        get(f"/rest/data/import-job/{empty.config_id}/download"), f"{empty.path} has no data yet"
    )
    # A name with dots keeps all but its extension; a workbook's names its sheet.
    for kind, sheet, url, expected in (
        (JobKind.IMPORT, "data", "/rest/data/import-job/{}/download", "q3.sales{}.csv"),
        (
            JobKind.WORKBOOK,
            "totals",
            "/rest/data/workbook/{}/totals/download",
            "q3.sales{}-totals.csv",
        ),
    ):
        name = world.name("")
        folder = "/Data/ImportJobs" if kind is JobKind.IMPORT else "/Analytics/Workbooks"
        path = f"{folder}/q3.sales{name}{kind.extension}"
        definition = DEFINITIONS[kind](world)
        entry, config = world.node.jobs.define_job(path, kind, definition, "owner")
        target = world.with_data(Target(entry.id, path, config.id), sheet)
        download = get(url.format(target.config_id))
        assert download.status_code == 200, download.text
        filename = expected.format(name)
        assert download.headers["content-disposition"] == f'attachment; filename="{filename}"'
