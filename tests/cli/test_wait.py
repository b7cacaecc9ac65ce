"""`datamill trigger|plan --wait`: the exit code tells the outcome, --json tells the details."""

from __future__ import annotations

import json

from datamill.client import JobStatus
from tests.cli.conftest import FAILING, IMPORT, WARN_IMPORT, WORKBOOK, Cli, define_jobs


def test_trigger_wait_exits_by_outcome(cli: Cli) -> None:
    with cli.client() as client:
        define_jobs(client, cli.server.home)

    completed = cli("trigger", IMPORT, "--wait")
    assert completed.returncode == 0, completed.stderr
    assert "COMPLETED" in completed.stdout and "30 records written, 0 dropped" in completed.stdout

    warned = cli("trigger", WARN_IMPORT, "--wait")
    assert warned.returncode == 3, warned.stderr
    assert "COMPLETED_WITH_WARNINGS" in warned.stdout
    assert "30 records written, 2 dropped" in warned.stdout
    assert "IMPORT_DROPPED_RECORDS=2" in warned.stdout

    failed = cli("trigger", FAILING, "--wait", "--json")
    assert failed.returncode == 4, failed.stderr
    details = json.loads(failed.stdout)
    assert details["jobStatus"] == "ERROR"
    with cli.client() as client:
        assert client.details(details["jobExecutionId"]).status is JobStatus.ERROR
    assert details["failure"]["message"]
    assert "reason:" in cli("trigger", FAILING, "--wait").stdout


def test_trigger_with_variables_binds_them_for_that_run(cli: Cli) -> None:
    with cli.client() as client:
        ids = define_jobs(client, cli.server.home)
    assert cli("trigger", IMPORT, "--wait").returncode == 0
    # min_amount=250 keeps orders 25..30 (amount = 10 * id): 6 orders.
    result = cli("trigger", WORKBOOK, "--var", "min_amount=250", "--wait", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["successCount"] == 3  # one total per region
    with cli.client() as client:
        csv = b"".join(client.iter_download("workbook", ids[WORKBOOK], "totals")).decode()
    counts = {line.split(",")[0]: int(line.split(",")[1]) for line in csv.splitlines()[1:]}
    assert sum(counts.values()) == 6, csv
    bad = cli("trigger", WORKBOOK, "--var", "no-equals-sign")
    assert bad.returncode == 2 and "NAME=VALUE" in bad.stderr


def test_plan_wait_reports_the_worst_outcome(cli: Cli) -> None:
    with cli.client() as client:
        define_jobs(client, cli.server.home)
    result = cli("plan", IMPORT, FAILING, "--wait", "--json")
    assert result.returncode == 4, result.stderr
    body = json.loads(result.stdout)
    statuses = [r["jobStatus"] for r in body["results"]]
    assert statuses == ["COMPLETED", "ERROR"], body
    assert body["exitCode"] == 4

    fine = cli("plan", IMPORT, WARN_IMPORT, "--wait")
    assert fine.returncode == 3, fine.stderr
    assert "Plan" in fine.stdout and "dirty" in fine.stdout


def test_wait_times_out_and_the_run_goes_on(api_only: Cli) -> None:
    with api_only.client() as client:
        define_jobs(client, api_only.server.home)
    result = api_only("trigger", IMPORT, "--wait", "--timeout", "0.3")
    assert result.returncode == 6, result.stderr
    assert "did not end within 0.3s" in result.stderr
    with api_only.client() as client:
        assert client.status(IMPORT).status is JobStatus.QUEUED  # still there, not stopped
    as_json = api_only("trigger", WARN_IMPORT, "--wait", "--timeout", "0.2", "--json")
    assert as_json.returncode == 6
    assert json.loads(as_json.stdout)["timeout"] is True


def test_a_run_stopped_while_waiting_exits_canceled(api_only: Cli) -> None:
    with api_only.client() as client:
        define_jobs(client, api_only.server.home)
        waiting = api_only.popen("trigger", IMPORT, "--wait")
        try:
            # The CLI's own trigger creates the run; stop it once it exists.
            while client.status(IMPORT).execution_id is None:
                assert waiting.poll() is None, waiting.communicate()
            client.stop(IMPORT)
            stdout, stderr = waiting.communicate(timeout=120)
        finally:
            waiting.kill()
    assert waiting.returncode == 5, stderr
    assert "CANCELED" in stdout
