"""The real `datamill` server in a subprocess, driven over HTTP like a user's script."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.acceptance.conftest import DATAMILL, Server
from tests.helpers import orders_import, totals_workbook, write_orders_csv

PASSWORD = "acceptance-secret"


@pytest.fixture
def server(start_server: Callable[..., Server]) -> tuple[str, dict[str, str]]:
    """`datamill serve` with its own home and admin password; (base URL, env)."""
    started = start_server(DATAMILL_ADMIN_PASSWORD=PASSWORD)
    return started.base, started.env


def _define(
    env: dict[str, str], kind: str, path: str, definition: dict[str, object], tmp: Path
) -> None:
    spec = tmp / (path.rsplit("/", 1)[1] + ".json")
    spec.write_text(json.dumps(definition))
    subprocess.run([*DATAMILL, "job", "define", kind, path, str(spec)], env=env, check=True)


def _poll(base: str, path: str, auth: tuple[str, str]) -> dict[str, object]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status: dict[str, object] = httpx.get(
            f"{base}/api/job-execution{path}/status", auth=auth
        ).json()
        if status["job-status"] not in ("QUEUED", "WAITING_FOR_OTHER_JOB", "RUNNING"):
            return status
        time.sleep(0.1)
    raise AssertionError(f"{path} did not finish")


def test_trigger_status_completed_cycle_over_http(
    server: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    base, env = server
    auth = ("admin", PASSWORD)
    files = Path(env["DATAMILL_HOME"]) / "files"
    source = write_orders_csv(files / "in", rows=40, bad_rows=1)
    out = files / "out" / "totals.parquet"
    out.parent.mkdir(parents=True)
    imp, wbk, exp = (
        "/Data/ImportJobs/orders.imp",
        "/Analytics/Workbooks/totals.wbk",
        "/Data/ExportJobs/totals.exp",
    )
    _define(env, "import", imp, orders_import(source), tmp_path)
    _define(env, "workbook", wbk, totals_workbook(imp), tmp_path)
    sink = {"kind": "parquet", "path": str(out)}
    _define(
        env, "export", exp, {"source": {"workbook": wbk, "sheet": "totals"}, "sink": sink}, tmp_path
    )

    assert httpx.get(f"{base}/api/job-execution{imp}/status").status_code == 401
    for path, expected in (
        (imp, "COMPLETED_WITH_WARNINGS"),
        (wbk, "COMPLETED"),
        (exp, "COMPLETED"),
    ):
        response = httpx.post(f"{base}/api/job-execution{path}/trigger", auth=auth)
        assert response.status_code == 200
        execution_id = response.json()["job-execution-id"]
        status = _poll(base, path, auth)
        assert status["job-status"] == expected, status
        assert status["job-execution-id"] == execution_id
        details = httpx.get(f"{base}/rest/job-execution/job-details/{execution_id}", auth=auth)
        assert details.json()["jobStatus"] == expected
    import_details = httpx.get(f"{base}/rest/job-execution/job-details/1", auth=auth).json()
    assert import_details["successCount"] == 40
    assert import_details["failureCount"] == 1
    assert out.exists()
