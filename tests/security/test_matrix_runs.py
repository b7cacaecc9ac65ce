"""Permission matrix: what a run did (log, lineage, file-job, trace, job details' failure
and warnings) and the session routes (rows; see matrix.py).

Every run route answers exactly what job details answers for the same run and
caller, so each is READ on the run's job: a stranger gets the answer for a run
that does not exist.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from datamill.domain import runlog as rl
from datamill.domain.status import JobKind, JobStatus
from datamill.store.data import record_inputs
from datamill.store.queue import Outcome
from tests.security.matrix import (
    ACTORS,
    EVERYONE,
    MISSING_ID,
    READ,
    Call,
    Row,
    Target,
    World,
    body_of,
    rows_by_name,
    run_cell,
)
from tests.security.matrix import world as world  # one node per backend for this module

FAILURE = "sheet totals: division by zero"
REASON = "not a number"


def _failed(staging: Path) -> Outcome:
    return Outcome(
        JobStatus.ERROR,
        success_count=5,
        failure_count=2,
        error_message=FAILURE,
        log=(
            rl.pending(rl.DROPPED, count=2, reason=REASON, sample=["x,y"]),
            rl.pending(rl.FAILED, message=FAILURE, sheet="totals"),
        ),
    )


def _failed_run(world: World) -> Target:
    return world.ended(world.job(), _failed)


def _events(items: list[dict[str, Any]]) -> list[str]:
    return [item["event"] for item in items]


def _log_ok(world: World, t: Target, actor: str, r: httpx.Response) -> None:
    items = body_of(r)
    assert _events(items) == ["queued", "dropped", "failed", "finished"], items
    assert items[0]["by"] == "admin" and items[1]["reason"] == REASON
    assert items[2]["message"] == FAILURE and items[3]["status"] == "ERROR"


def _jsonl_ok(world: World, t: Target, actor: str, r: httpx.Response) -> None:
    assert r.headers["content-type"].startswith("application/x-ndjson")
    items = [json.loads(line) for line in r.text.splitlines()]
    assert _events(items) == ["queued", "dropped", "failed", "finished"], items


def _since_target(world: World) -> Target:
    target = _failed_run(world)
    log = world.call("admin", Call("GET", f"/api/job-execution/{target.extra['execution']}/log"))
    target.extra["since"] = next(i["seq"] for i in log.json() if i["event"] == "dropped")
    return target


def _since_ok(world: World, t: Target, actor: str, r: httpx.Response) -> None:
    assert _events(body_of(r)) == ["failed", "finished"], r.text


def _lineage_ok(world: World, t: Target, actor: str, r: httpx.Response) -> None:
    body = body_of(r)
    assert body["job-execution-id"] == t.extra["execution"]
    assert body["job-configuration"]["id"] == t.config_id
    assert [d["data-id"] for d in body["wrote"]["data"]] == [t.extra["data"]]
    assert body["wrote"]["data"][0]["records"] == 3


def _run_reading_two(world: World) -> Target:
    """A workbook's run that read the data of a job the reader may read and of one she may not."""
    private = world.with_data(world.job(shared=False), "data")
    shared = world.with_data(world.job(), "data")
    sheets = [
        {"kind": "data", "name": f"s{i}", "source": {"importJob": source.path}}
        for i, source in enumerate((private, shared))
    ]
    sheets.append({"kind": "sql", "name": "out", "keep": True, "sql": "SELECT * FROM s0"})
    workbook = world.job(JobKind.WORKBOOK, {"sheets": sheets})

    def read_both(staging: Path) -> Outcome:
        run = int(staging.name)  # the staging folder is named for the run
        with world.node.store.db.write() as conn:
            record_inputs(conn, run, [private.extra["data"], shared.extra["data"]])
        return Outcome(JobStatus.COMPLETED)

    workbook.extra["private"], workbook.extra["shared"] = private, shared
    return world.ended(workbook, read_both)


def _inputs_named(world: World, t: Target, actor: str, r: httpx.Response) -> None:
    private, shared = t.extra["private"], t.extra["shared"]
    read = {item["data-id"]: item["job"] for item in body_of(r)["read"]}
    assert read[shared.extra["data"]] == {
        "file-id": shared.file_id,
        "path": shared.path,
        "job-configuration-id": shared.config_id,
    }
    if actor == "reader":  # the private job is neither named nor pointed at
        assert read[private.extra["data"]] is None
        assert private.path not in r.text
    else:
        assert read[private.extra["data"]]["path"] == private.path


def _file_job_ok(world: World, t: Target, actor: str, r: httpx.Response) -> None:
    lines = r.text.splitlines()
    assert [line.split()[2] for line in lines] == ["queued", "dropped", "failed", "finished"]
    assert f"message={json.dumps(FAILURE)}" in lines[2]


def _trace_ok(world: World, t: Target, actor: str, r: httpx.Response) -> None:
    execution = t.extra["execution"]
    assert r.headers["content-disposition"] == (
        f'attachment; filename="job-execution-{execution}-trace.txt"'
    )
    lines = r.text.splitlines()
    assert lines[:2] == [f"Job execution {execution} of {t.path}", "Status: ERROR"]
    assert "Records written: 5, dropped: 2" in lines
    assert lines[lines.index("== Failure ==") + 1] == FAILURE
    assert f"== Warning: dropped 2 record(s): {REASON} ==" in lines


def _details_ok(world: World, t: Target, actor: str, r: httpx.Response) -> None:
    body = body_of(r)
    assert body["jobStatus"] == "ERROR" and body["file"]["id"] == t.file_id
    assert body["failure"] == {"message": FAILURE, "sheet": "totals"}
    [warning] = body["warnings"]
    assert warning["message"] == f"dropped 2 record(s): {REASON}"
    assert warning["sample"] == ["x,y"]


def _run_row(name: str, tail: str, ok: Any, make: Any = _failed_run, query: str = "") -> Row:
    """A READ row on a run's route; the missing answer is the same route on an unknown run."""
    return Row(
        name,
        READ,
        make,
        lambda t: Call(
            "GET", tail.format(str(t.extra["execution"])) + query, typed=str(t.extra["execution"])
        ),
        ok,
        missing=lambda t: Call("GET", tail.format(MISSING_ID) + query, typed=str(MISSING_ID)),
    )


RUN_ROWS = [
    _run_row("run log", "/api/job-execution/{}/log", _log_ok),
    _run_row(
        "run log as JSON lines", "/api/job-execution/{}/log", _jsonl_ok, query="?format=jsonl"
    ),
    Row(
        "run log since a seq",
        READ,
        _since_target,
        lambda t: Call(
            "GET",
            f"/api/job-execution/{t.extra['execution']}/log?since={t.extra['since']}",
            typed=str(t.extra["execution"]),
        ),
        _since_ok,
        missing=lambda t: Call(
            "GET", f"/api/job-execution/{MISSING_ID}/log?since=1", typed=str(MISSING_ID)
        ),
    ),
    _run_row(
        "run lineage",
        "/api/job-execution/{}/lineage",
        _lineage_ok,
        make=lambda w: w.with_data(w.job(), "data"),
    ),
    _run_row(
        "run lineage: an input's job named only to who may read it",
        "/api/job-execution/{}/lineage",
        _inputs_named,
        make=_run_reading_two,
    ),
    _run_row("file-job (Datameer's job log)", "/file-job?jobExecutionId={}", _file_job_ok),
    _run_row("download-trace", "/job/download-trace/{}", _trace_ok),
    _run_row(
        "job details: failure and warnings", "/rest/job-execution/job-details/{}", _details_ok
    ),
]


# ---------------------------------------------------------------- sessions


def _browser_ok(world: World, t: Target, actor: str, r: httpx.Response) -> None:
    assert body_of(r) == {"status": "success", "username": actor}
    assert r.cookies.get("JSESSIONID")
    world.client.cookies.clear()


def _who_ok(world: World, t: Target, actor: str, r: httpx.Response) -> None:
    # Called with the cookie alone: who is logged in, and no new cookie.
    assert body_of(r) == {"status": "success", "username": actor}
    assert "set-cookie" not in r.headers


def _logged_out(world: World, t: Target, actor: str, r: httpx.Response) -> None:
    assert body_of(r) == {"status": "success"}
    assert 'JSESSIONID=""' in r.headers["set-cookie"]
    # The cookie the actor logged out with no longer names anyone.
    again = world.client.get(
        "/rest/user-management/logged-in-user",
        headers={"Cookie": f"JSESSIONID={world.last_cookie}"},
    )
    assert again.status_code == 401, again.text


SESSION_ROWS = [
    Row(
        "browser login",
        EVERYONE,
        lambda w: Target(0, ""),
        lambda t: Call("GET", "/browser"),
        _browser_ok,
    ),
    Row(
        "browser: who holds the cookie",
        EVERYONE,
        lambda w: Target(0, ""),
        lambda t: Call("GET", "/browser", cookie=True),
        _who_ok,
    ),
    Row(
        "logged-in user (cookie)",
        EVERYONE,
        lambda w: Target(0, ""),
        lambda t: Call("GET", "/rest/user-management/logged-in-user", cookie=True),
        lambda w, t, a, r: _named(r, a),
    ),
    Row(
        "logout (cookie)",
        EVERYONE,
        lambda w: Target(0, ""),
        lambda t: Call("POST", "/logout", cookie=True),
        _logged_out,
    ),
]


def _named(r: httpx.Response, actor: str) -> None:
    assert body_of(r)["username"] == actor, r.text


ROWS = rows_by_name([*RUN_ROWS, *SESSION_ROWS])


@pytest.mark.parametrize("actor", ACTORS)
@pytest.mark.parametrize("row_name", list(ROWS))
def test_matrix(world: World, row_name: str, actor: str) -> None:
    run_cell(world, ROWS[row_name], actor)
