"""Why a run failed and what it did (issue #12): run logs, failure reasons, warnings, lineage.

Real worker, real DuckDB, both metadata backends. bob owns the jobs, carol
(group `readers`) may only read them, eve has no rights, admin is ADMIN.
Every route answers carol and admin what it answers bob, and eve what it
answers for a run that does not exist.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from datamill.domain.status import JobKind, JobStatus, TriggerType
from datamill.store import data as data_store
from datamill.store import executions as ex
from tests.helpers import password_hash, wait_for, wait_terminal, write_orders_csv
from tests.security.conftest import Actors, auth

IMP = "/Data/ImportJobs/orders.imp"
WBK = "/Analytics/Workbooks/totals.wbk"
BOBS = "/Users/bob/files.loc"
ROUTES = (
    "/rest/job-execution/job-details/{id}",
    "/api/job-execution/{id}/log",
    "/api/job-execution/{id}/lineage",
    "/file-job?jobExecutionId={id}",
    "/job/download-trace/{id}",
)
TOTALS = (
    "SELECT region, count(*) AS n, sum(amount) AS total FROM orders GROUP BY region ORDER BY region"
)


@pytest.fixture
def world(running: Actors, files_root: Path) -> Actors:
    """The running world plus carol, who may read what is shared with `readers`."""
    running.node.store.users.create("carol", password_hash("pw"), groups=("readers",))
    (files_root / "users" / "bob").mkdir(parents=True, exist_ok=True)
    return running


def _define(actors: Actors, path: str, definition: dict[str, Any], *, shared: bool = True) -> int:
    """A job of bob's, readable by the group `readers` if `shared`; its file id."""
    kind = {".imp": JobKind.IMPORT, ".wbk": JobKind.WORKBOOK, ".exp": JobKind.EXPORT}[path[-4:]]
    node = actors.node
    entry, _ = node.jobs.define_job(path, kind, definition, "bob")
    if shared:
        with node.store.db.write() as conn:
            node.store.files.set_group_flags(
                conn, entry.id, "readers", readable=True, writable=False, executable=False
            )
    return entry.id


def _import(path: str = "orders.csv") -> dict[str, Any]:
    return {
        "source": {"kind": "csv", "location": BOBS, "path": path},
        "schema": [
            {"name": "order_id", "type": "BIGINT"},
            {"name": "region", "type": "VARCHAR"},
            {"name": "amount", "type": "DOUBLE"},
        ],
        "errorMode": "DROP_RECORD",
    }


def _workbook(sql: str, sheet: str = "totals") -> dict[str, Any]:
    return {
        "sheets": [
            {"kind": "data", "name": "orders", "source": {"importJob": IMP}},
            {"kind": "sql", "name": sheet, "keep": True, "sql": sql},
        ]
    }


def _run(actors: Actors, file_id: int) -> int:
    """Trigger as bob and wait for the end; the execution id."""
    answer = actors.call("bob", "POST", f"/api/job-execution/{file_id}/trigger")
    assert answer.status_code == 200, answer.text
    execution_id = int(answer.json()["job-execution-id"])
    wait_terminal(actors.node, execution_id)
    return execution_id


def _get(actors: Actors, user: str, url: str, **headers: str) -> httpx.Response:
    return actors.client.get(url, headers={**auth(user), **headers})


def _events(actors: Actors, execution_id: int, user: str = "bob") -> list[dict[str, Any]]:
    answer = _get(actors, user, f"/api/job-execution/{execution_id}/log")
    assert answer.status_code == 200, answer.text
    events: list[dict[str, Any]] = answer.json()
    return events


def _details(actors: Actors, execution_id: int) -> dict[str, Any]:
    answer = _get(actors, "bob", f"/rest/job-execution/job-details/{execution_id}")
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def _same_for_every_reader(actors: Actors, execution_id: int) -> None:
    """carol and admin read what bob reads; eve reads what a missing run gives."""
    for route in ROUTES:
        url = route.format(id=execution_id)
        mine = _get(actors, "bob", url)
        assert mine.status_code == 200, (url, mine.text)
        for reader in ("carol", "admin"):
            theirs = _get(actors, reader, url)
            assert (theirs.status_code, theirs.content) == (200, mine.content), (reader, url)
        hidden = _get(actors, "eve", url)
        missing = _get(actors, "eve", route.format(id=999_999))
        assert hidden.status_code == missing.status_code == 404, url
        assert hidden.json()["reason"].replace(str(execution_id), "N") == missing.json()[
            "reason"
        ].replace("999999", "N")
        assert str(execution_id) not in hidden.text.replace(f"'{execution_id}'", "")


# ---------------------------------------------------------------- reasons


def test_dropped_records_show_in_details_log_file_job_and_trace(
    world: Actors, files_root: Path
) -> None:
    write_orders_csv(files_root / "users" / "bob", rows=5, bad_rows=2)
    execution_id = _run(world, _define(world, IMP, _import()))

    details = _details(world, execution_id)
    assert details["jobStatus"] == "COMPLETED_WITH_WARNINGS"
    assert details["failure"] is None
    [warning] = details["warnings"]
    assert warning["count"] == 2 and warning["reason"] == "the record does not match the schema"
    assert warning["message"] == "dropped 2 record(s): the record does not match the schema"
    assert "'not-a-number' is not a DOUBLE" in warning["sample"][0]["record"]
    assert len(warning["sample"]) == 2

    events = _events(world, execution_id)
    names = [e["event"] for e in events]
    assert names == [
        "queued",
        "claimed",
        "started",
        "dropped",
        "read",
        "published",
        "finished",
    ]
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)
    read = events[names.index("read")]
    # The source as the definition names it, never the location's real folder.
    assert read["source"] == f"{BOBS}/orders.csv"
    assert (read["records"], read["files"]) == (7, 1)
    assert read["bytes"] == (files_root / "users" / "bob" / "orders.csv").stat().st_size
    assert events[0]["by"] == "bob" and events[0]["trigger"] == "RESTAPI"
    claimed = events[1]
    assert claimed["attempt"] == 1 and claimed["worker"] and claimed["pid"] > 0
    assert events[-1]["status"] == "COMPLETED_WITH_WARNINGS" and events[-1]["dropped"] == 2
    everything = json.dumps(events)
    assert str(files_root) not in everything
    assert str(world.node.settings.resolved_data_root) not in everything

    text = _get(world, "bob", f"/file-job?jobExecutionId={execution_id}")
    assert text.headers["content-type"] == "text/plain; charset=utf-8"
    lines = text.text.splitlines()
    assert [line.split(" ")[2] for line in lines] == names
    assert 'reason="the record does not match the schema"' in lines[3]

    trace = _get(world, "bob", f"/job/download-trace/{execution_id}")
    assert trace.headers["content-disposition"] == (
        f'attachment; filename="job-execution-{execution_id}-trace.txt"'
    )
    assert f"Job execution {execution_id} of {IMP}" in trace.text
    assert "== Warning: dropped 2 record(s): the record does not match the schema ==" in trace.text
    assert "== Failure ==" not in trace.text
    _same_for_every_reader(world, execution_id)


def test_unreadable_csv_lines_are_quoted_with_their_line_numbers(
    world: Actors, files_root: Path
) -> None:
    source = files_root / "users" / "bob" / "broken.csv"
    source.write_text("order_id,region,amount\n1,north,10\n2,south,20,surplus\n3,east,30\n")
    execution_id = _run(world, _define(world, IMP, _import("broken.csv")))
    [warning] = _details(world, execution_id)["warnings"]
    assert warning["count"] == 1 and warning["reason"] == "the CSV line could not be read"
    [line] = warning["sample"]
    assert (line["file"], line["line"], line["text"]) == ("broken.csv", 3, "2,south,20,surplus")
    assert line["reason"]


def test_a_failing_cast_names_its_sheet_and_value(world: Actors, files_root: Path) -> None:
    write_orders_csv(files_root / "users" / "bob", rows=3)
    _run(world, _define(world, IMP, _import()))
    bad = "SELECT CAST(region AS INTEGER) AS r FROM orders"
    execution_id = _run(world, _define(world, WBK, _workbook(bad, sheet="casting")))

    details = _details(world, execution_id)
    assert details["jobStatus"] == "ERROR" and details["counters"] == {}
    failure = details["failure"]
    assert failure["sheet"] == "casting" and failure["index"] == 1
    assert "Could not convert string" in failure["message"] and "to INT32" in failure["message"]
    assert failure["message"].startswith('sheets[1] "casting": Conversion Error')
    assert str(world.node.settings.resolved_data_root) not in failure["message"]
    failed = [e for e in _events(world, execution_id) if e["event"] == "failed"]
    assert [(e["sheet"], e["message"]) for e in failed] == [("casting", failure["message"])]
    trace = _get(world, "bob", f"/job/download-trace/{execution_id}").text
    # The message in full, its further lines indented (no fake sections).
    indented = "\n  ".join(failure["message"].splitlines())
    assert trace.split("== Failure ==\n")[1].startswith(indented)
    assert "sheet: casting" in trace
    _same_for_every_reader(world, execution_id)


def test_a_missing_source_file_names_the_path_as_defined(world: Actors, files_root: Path) -> None:
    execution_id = _run(world, _define(world, IMP, _import("missing.csv")))
    failure = _details(world, execution_id)["failure"]
    assert failure["source"] == f"{BOBS}/missing.csv"
    assert f"{BOBS}/missing.csv" in failure["message"]
    events = _events(world, execution_id)
    assert [e["event"] for e in events][-2:] == ["failed", "finished"]
    assert events[-2]["message"] == failure["message"]
    # The location's real folder is the operator's business, not the reader's.
    assert str(files_root) not in json.dumps(events)
    assert str(files_root) not in _get(world, "bob", f"/job/download-trace/{execution_id}").text


def test_a_stopped_run_says_who_stopped_it(world: Actors, files_root: Path) -> None:
    write_orders_csv(files_root / "users" / "bob", rows=3)
    _run(world, _define(world, IMP, _import()))
    slow = "SELECT count(*) AS n FROM range(3000000000) a WHERE a.range % 7 = 3"
    file_id = _define(world, WBK, _workbook(slow))
    answer = world.call("bob", "POST", f"/api/job-execution/{file_id}/trigger")
    execution_id = int(answer.json()["job-execution-id"])
    wait_for(world.node, execution_id, {JobStatus.RUNNING})
    # Tailing a running job: the engine's events show before the run ends.
    deadline = time.monotonic() + 30
    while "started" not in [e["event"] for e in _events(world, execution_id)]:
        assert time.monotonic() < deadline, _events(world, execution_id)
        time.sleep(0.1)
    seen = _events(world, execution_id)[-1]["seq"]
    assert wait_for(world.node, execution_id, {JobStatus.RUNNING}).status is JobStatus.RUNNING
    assert world.call("bob", "POST", f"/api/job-execution/{file_id}/stop").status_code == 200
    assert wait_terminal(world.node, execution_id).status is JobStatus.CANCELED
    tail = _get(world, "bob", f"/api/job-execution/{execution_id}/log?since={seen}").json()
    assert [e["event"] for e in tail] == ["stop-requested", "stopped", "finished"]

    failure = _details(world, execution_id)["failure"]
    assert failure == {"message": "Stopped by user.", "by": "bob"}
    names = [e["event"] for e in _events(world, execution_id)]
    stopping = ["stop-requested", "stopped", "finished"]
    assert names == ["queued", "claimed", "read", "started", *stopping]
    asked = [e for e in _events(world, execution_id) if e["event"] == "stop-requested"]
    assert [e["by"] for e in asked] == ["bob"]


def test_a_run_stopped_before_it_started_says_so(world: Actors, files_root: Path) -> None:
    node = world.node
    entry, _ = node.jobs.define_job(IMP, JobKind.IMPORT, _import(), "bob")
    with node.store.db.write() as conn:
        # Waiting for another job, so no worker starts it before the stop.
        config = node.store.jobs.for_file(conn, entry.id)
        assert config is not None
        execution_id = ex.create_execution(
            conn, config, TriggerType.RESTAPI, "bob", status=JobStatus.WAITING_FOR_OTHER_JOB
        )
    assert world.call("admin", "POST", f"/rest/job-execution/job-kill/{execution_id}").status_code
    details = _get(world, "bob", f"/rest/job-execution/job-details/{execution_id}").json()
    assert details["jobStatus"] == "CANCELED"
    assert details["failure"] == {"message": "Canceled before it started.", "by": "admin"}
    names = [e["event"] for e in _events(world, execution_id)]
    assert names == ["queued", "stop-requested", "stopped", "finished"]


# ---------------------------------------------------------------- tailing


def test_since_and_json_lines_tail_a_log(world: Actors, files_root: Path) -> None:
    write_orders_csv(files_root / "users" / "bob", rows=3)
    execution_id = _run(world, _define(world, IMP, _import()))
    events = _events(world, execution_id)
    url = f"/api/job-execution/{execution_id}/log"
    middle = events[2]["seq"]
    later = _get(world, "bob", f"{url}?since={middle}").json()
    assert later == events[3:]
    by_time = _get(world, "bob", f"{url}?since={events[0]['time']}").json()
    assert [e["seq"] for e in by_time] == [
        e["seq"] for e in events if e["time"] > events[0]["time"]
    ]
    lines = _get(world, "bob", url, accept="application/x-ndjson")
    assert lines.headers["content-type"] == "application/x-ndjson"
    assert [json.loads(line) for line in lines.text.splitlines()] == events
    assert _get(world, "bob", f"{url}?format=jsonl").text == lines.text
    for bad in ("yesterday", "12:00", "-1"):
        refused = _get(world, "bob", f"{url}?since={bad}")
        assert refused.status_code == 400 and "since must be" in refused.json()["reason"]
    refused = _get(world, "bob", f"{url}?format=xml")
    assert refused.status_code == 400 and refused.json()["reason"] == "format must be json or jsonl"


# ---------------------------------------------------------------- lineage


def test_lineage_of_a_two_step_chain_names_the_right_data(world: Actors, files_root: Path) -> None:
    write_orders_csv(files_root / "users" / "bob", rows=6)
    import_file = _define(world, IMP, _import(), shared=False)
    imported = _run(world, import_file)
    workbook_file = _define(world, WBK, _workbook(TOTALS))
    computed = _run(world, workbook_file)
    node = world.node
    with node.store.db.read() as conn:
        [import_data] = data_store.outputs_of(conn, imported)
        [workbook_data] = data_store.outputs_of(conn, computed)
        config = node.store.jobs.for_file(conn, workbook_file)
        import_config = node.store.jobs.for_file(conn, import_file)
    assert config is not None and import_config is not None
    assert import_data.execution_id == imported

    lineage = _get(world, "bob", f"/api/job-execution/{computed}/lineage").json()
    assert lineage["job-execution-id"] == computed
    assert lineage["read"] == [
        {
            "data-id": import_data.id,
            "sheet": "orders",
            "job": {
                "file-id": import_file,
                "path": IMP,
                "job-configuration-id": import_config.id,
            },
            "job-execution-id": imported,
        }
    ]
    assert lineage["sources"] == []  # read data results only, no source files
    assert lineage["wrote"] == {
        "data": [
            {
                "data-id": workbook_data.id,
                "sheets": {"totals": 3},
                "records": 3,
                "deleted": False,
            }
        ],
        "exports": [],
    }
    version = lineage["job-configuration"]
    assert version["id"] == config.id and len(version["sha256"]) == 64
    assert version["saved"].endswith("Z")
    reads = [e for e in _events(world, computed) if e["event"] == "read"]
    assert [(e["sheet"], e["records"], e["data-id"]) for e in reads] == [
        ("orders", 6, import_data.id)
    ]
    sheets = [e for e in _events(world, computed) if e["event"] == "sheet"]
    assert [(e["sheet"], e["records"], e["kept"]) for e in sheets] == [("totals", 3, True)]

    # carol may read the workbook but not the import it read: the data id, no job.
    theirs = _get(world, "carol", f"/api/job-execution/{computed}/lineage").json()
    assert theirs["read"] == [{**lineage["read"][0], "job": None}]
    assert {k: v for k, v in theirs.items() if k != "read"} == {
        k: v for k, v in lineage.items() if k != "read"
    }
    assert _get(world, "admin", f"/api/job-execution/{computed}/lineage").json() == lineage
    imported_lineage = _get(world, "bob", f"/api/job-execution/{imported}/lineage").json()
    assert imported_lineage["read"] == []
    assert imported_lineage["sources"][0]["source"] == f"{BOBS}/orders.csv"
    assert imported_lineage["wrote"]["data"][0]["data-id"] == import_data.id


# ---------------------------------------------------------------- Datameer clients


def test_datameer_clients_read_the_log_and_trace_as_they_ask_for_them(
    world: Actors, files_root: Path
) -> None:
    """Issue #11 item 10, replayed as a Ruby client sends it: Basic auth, no Accept."""
    execution_id = _run(world, _define(world, IMP, _import("missing.csv")))
    plain = _get(world, "bob", f"/file-job?jobExecutionId={execution_id}")
    for spelling in (
        # Spelled out: a bare //path would be read as a host by the client library.
        f"http://testserver//file-job?jobExecutionId={execution_id}",
        f"/file-job/?jobExecutionId={execution_id}",
    ):
        again = _get(world, "bob", spelling)
        assert (again.status_code, again.text) == (200, plain.text), spelling
    last = plain.text.splitlines()[-2]
    assert " failed " in last and f'source="{BOBS}/missing.csv"' in last
    trace = _get(world, "bob", f"http://testserver//job/download-trace/{execution_id}/")
    assert trace.status_code == 200 and "attachment" in trace.headers["content-disposition"]
    assert trace.text.startswith(f"Job execution {execution_id} of {IMP}\nStatus: ERROR\n")
    for bad in ("/file-job", "/file-job?jobExecutionId=abc", "/job/download-trace/abc"):
        refused = _get(world, "bob", bad)
        assert refused.status_code == 400 and refused.json()["status"] == "failure", bad


def test_lineage_of_an_export_names_its_target_as_defined(world: Actors, files_root: Path) -> None:
    write_orders_csv(files_root / "users" / "bob", rows=4)
    imported = _run(world, _define(world, IMP, _import()))
    sink = {"kind": "csv", "location": BOBS, "path": "out.csv"}
    export = {"source": {"importJob": IMP}, "sink": sink}
    exported = _run(world, _define(world, "/Data/ExportJobs/out.exp", export))
    assert (files_root / "users" / "bob" / "out.csv").is_file()
    with world.node.store.db.read() as conn:
        [data] = data_store.outputs_of(conn, imported)
    lineage = _get(world, "bob", f"/api/job-execution/{exported}/lineage").json()
    assert [(r["data-id"], r["sheet"], r["job-execution-id"]) for r in lineage["read"]] == [
        (data.id, "source", imported)
    ]
    [target] = lineage["wrote"]["exports"]
    assert target["target"] == f"{BOBS}/out.csv" and target["records"] == 4
    assert target["bytes"] == (files_root / "users" / "bob" / "out.csv").stat().st_size
    assert lineage["wrote"]["data"] == []


def add_dora(world: Actors) -> None:
    """dora: in `readers`, with a role that may read jobs but not data."""
    from datamill.store import users as users_store

    node = world.node
    with node.store.db.write() as conn:
        users_store.insert_role(conn, "JOB_WATCHER", ["job.read"])
    node.store.users.create(
        "dora", password_hash("pw"), roles=("JOB_WATCHER",), groups=("readers",)
    )


def test_a_reader_without_data_read_sees_why_records_dropped_but_not_their_values(
    world: Actors, files_root: Path
) -> None:
    # dora may read bob's job (group `readers`) but her role does not allow
    # reading data: the dropped records' count and reason, never their values.
    add_dora(world)
    write_orders_csv(files_root / "users" / "bob", rows=5, bad_rows=2)
    execution_id = _run(world, _define(world, IMP, _import()))

    for user in ("bob", "dora"):
        details = _get(world, user, f"/rest/job-execution/job-details/{execution_id}").json()
        [warning] = details["warnings"]
        assert warning["count"] == 2 and warning["reason"] == "the record does not match the schema"
        log = _get(world, user, f"/api/job-execution/{execution_id}/log").text
        trace = _get(world, user, f"/job/download-trace/{execution_id}").text
        if user == "bob":
            assert "not-a-number" in warning["sample"][0]["record"]
            assert "not-a-number" in log and "not-a-number" in trace
        else:
            assert "sample" not in warning and warning["sample-withheld"] is True
            assert "not-a-number" not in log and "not-a-number" not in trace
            assert "not-a-number" not in json.dumps(details)


def test_a_trace_cannot_be_given_fake_sections_by_what_a_failure_quotes(
    world: Actors, files_root: Path
) -> None:
    # A CAST failure quotes the offending value; a value holding line breaks
    # must not start a line of its own in the plain-text trace.
    write_orders_csv(files_root / "users" / "bob", rows=5)
    _run(world, _define(world, IMP, _import()))
    hostile = "x\\n== Failure ==\\nall good\\u2028== Log =="
    sql = f"SELECT CAST(E'{hostile}' AS INTEGER) AS n FROM orders"
    execution_id = _run(world, _define(world, WBK, _workbook(sql)))
    trace = _get(world, "bob", f"/job/download-trace/{execution_id}").text
    assert "all good" in trace, trace  # the value is quoted, on an indented line
    headings = [line for line in trace.splitlines() if line.startswith("==")]
    assert headings == ["== Log ==", "== Failure =="], trace
