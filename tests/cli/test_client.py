"""datamill.client against a real server: definitions, errors with the reason, wait, users."""

from __future__ import annotations

import subprocess
import sys

import pytest

from datamill import errors
from datamill.client import (
    Client,
    Conflict,
    JobKind,
    JobStatus,
    NotFound,
    Poll,
    Progress,
    TransportError,
    Unauthorized,
    WaitTimeout,
)
from tests.cli.conftest import IMPORT, PASSWORD, WARN_IMPORT, WORKBOOK, Cli, define_jobs

UNREADABLE = "File doesn't exist or isn't accessible with current permissions"


def test_definitions_round_trip_and_errors_carry_the_reason(cli: Cli) -> None:
    with cli.client() as client:
        ids = define_jobs(client, cli.server.home)
        document = client.read_job(JobKind.WORKBOOK, ids[WORKBOOK])
        assert document["path"] == WORKBOOK
        document["variables"]["min_amount"]["default"] = 100
        client.update_job("workbook", ids[WORKBOOK], document)
        assert client.read_job("workbook", ids[WORKBOOK]) == document
        assert {j["path"] for j in client.list_jobs("import")} == {IMPORT, WARN_IMPORT}
        entry = client.file(WORKBOOK)
        assert (entry.kind, entry.configuration_id) == (JobKind.WORKBOOK, ids[WORKBOOK])
        folder = client.folder("/Analytics/Workbooks")
        assert sorted(f.name for f in folder.files) == ["broken.wbk", "totals.wbk"]
        assert "Analytics" in [f.name for f in client.folder().folders]

        with pytest.raises(Conflict) as duplicate:
            client.create_job("workbook", WORKBOOK, document)
        assert "already exists" in duplicate.value.reason
        assert duplicate.value.status_code == 409
        client.delete_job("workbook", ids[WORKBOOK])
        with pytest.raises(NotFound) as gone:
            client.status(WORKBOOK)
        assert gone.value.reason == UNREADABLE
        assert isinstance(gone.value, errors.NotFound)  # the server's hierarchy too
        with pytest.raises(Conflict):
            client.stop(IMPORT)

    with Client(cli.server.base, ("admin", "wrong")) as stranger, pytest.raises(Unauthorized):
        stranger.list_running()
    with Client("http://127.0.0.1:9", ("a", "b")) as nowhere, pytest.raises(TransportError):
        nowhere.list_running()


def test_wait_reports_progress_and_returns_final_details(cli: Cli) -> None:
    seen: list[Progress] = []
    with cli.client() as client:
        define_jobs(client, cli.server.home)
        run = client.trigger(WARN_IMPORT)
        assert run.user == "admin" and run.trigger_type == "RESTAPI"
        details = client.wait(run.execution_id, 120, on_progress=seen.append, poll=Poll(0.01))
        assert details.status is JobStatus.COMPLETED_WITH_WARNINGS
        assert (details.success_count, details.failure_count) == (30, 2)
        assert details.counters["IMPORT_DROPPED_RECORDS"] == 2
        assert details.stop_time is not None and details.start_time is not None
        assert all(p.execution_id == run.execution_id for p in seen)
        assert all(not p.status.is_terminal for p in seen)
        # A finished run is returned at once, without polling.
        assert client.wait(run.execution_id, 0).status is JobStatus.COMPLETED_WITH_WARNINGS

        later = [client.trigger(IMPORT).execution_id for _ in range(3)]
        for execution_id in later:
            assert client.wait(execution_id, 120).status is JobStatus.COMPLETED
        configuration_id = client.file(IMPORT).configuration_id
        assert configuration_id is not None
        newest_first = [h.execution_id for h in client.iter_history(configuration_id, 2)]
        assert newest_first == later[::-1]
        plan = client.sequential_trigger([IMPORT], {"min_amount": 5})
        assert plan[0].execution_id is not None and plan[0].name == "orders"


def test_wait_times_out_on_a_run_that_never_starts(api_only: Cli) -> None:
    with api_only.client() as client:
        define_jobs(client, api_only.server.home)
        run = client.trigger(IMPORT)
        with pytest.raises(WaitTimeout) as timed_out:
            client.wait(run.execution_id, 0.2, poll=Poll(0.05))
        assert timed_out.value.last_status == "QUEUED"
        running = client.list_running()
        assert [(r.execution_id, r.status) for r in running] == [
            (run.execution_id, JobStatus.QUEUED)
        ]


def test_users_through_the_client(cli: Cli) -> None:
    with cli.client() as client:
        client.add_user("dora", "dora-pw-1", email="dora@example.com", roles=["ANALYST"])
        assert client.user("dora")["email"] == "dora@example.com"
        page = client.users(max_results=1)
        assert (page.total, len(page.elements)) == (2, 1)
        client.set_password("dora", "dora-pw-2")
    with Client(cli.server.base, ("dora", "dora-pw-2")) as dora:
        assert dora.user("dora")["username"] == "dora"
        with pytest.raises(NotFound):
            dora.status(IMPORT)
    with cli.client() as client:
        client.delete_user("dora")
    assert PASSWORD


def test_importing_the_client_loads_no_server_module() -> None:
    code = (
        "import sys, datamill.client; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('duckdb', 'sqlalchemy', 'pyarrow', 'fastapi', 'uvicorn') "
        "or m.startswith(('datamill.engine', 'datamill.store', 'datamill.api'))))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert loaded.stdout.strip() == "[]"
