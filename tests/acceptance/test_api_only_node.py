"""`datamill serve --no-worker`: an API node that queues executions; `datamill worker` runs them."""

from __future__ import annotations

import contextlib
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.acceptance.conftest import DATAMILL, Server

PASSWORD = "api-only-secret"
AUTH = ("admin", PASSWORD)
WORKBOOK = "/Analytics/Workbooks/one.wbk"


def _stored(server: Server, query: str) -> list[tuple[Any, ...]]:
    """Rows of the node's metadata database (SQLite in its home)."""
    with contextlib.closing(sqlite3.connect(server.home / "datamill.db")) as db:
        return db.execute(query).fetchall()


def _status(base: str) -> dict[str, object]:
    response = httpx.get(f"{base}/api/job-execution{WORKBOOK}/status", auth=AUTH)
    assert response.status_code == 200, response.text
    status: dict[str, object] = response.json()
    return status


@pytest.mark.parametrize(
    ("args", "env"),
    [(("--no-worker",), {}), ((), {"DATAMILL_EMBEDDED_WORKER": "false"})],
    ids=["flag", "env"],
)
def test_api_only_node_queues_and_a_separate_worker_runs(
    start_server: Callable[..., Server], args: tuple[str, ...], env: dict[str, str]
) -> None:
    server = start_server(*args, DATAMILL_ADMIN_PASSWORD=PASSWORD, **env)
    base = server.base
    document = {
        "path": WORKBOOK,
        "triggering": {"mode": "MANUAL"},
        "sheets": [{"kind": "sql", "name": "out", "keep": True, "sql": "SELECT 1 AS one"}],
    }
    assert httpx.post(f"{base}/rest/workbook", json=document, auth=AUTH).status_code == 200
    triggered = httpx.post(f"{base}/api/job-execution{WORKBOOK}/trigger", auth=AUTH)
    assert triggered.status_code == 200, triggered.text
    execution_id = triggered.json()["job-execution-id"]

    # Nothing in the API node can run it: no worker is registered.
    status = _status(base)
    assert (status["job-execution-id"], status["job-status"]) == (execution_id, "QUEUED")
    assert _stored(server, "SELECT id FROM workers") == []

    # A worker process on the same home and database does.
    log = (server.home.parent / "worker.log").open("w")
    worker = subprocess.Popen(
        [*DATAMILL, "worker"], env=server.env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 60  # a safety net for waiting
        while (status := _status(base))["job-status"] in ("QUEUED", "RUNNING"):
            assert worker.poll() is None, "datamill worker ended early"
            assert time.monotonic() < deadline, f"still {status['job-status']} after 60 s"
            time.sleep(0.1)
        assert status["job-status"] == "COMPLETED", status
        assert status["job-execution-id"] == execution_id
        # And the separate worker process, not the API node, ran it.
        ran_by = _stored(server, f"SELECT worker_id FROM executions WHERE id = {execution_id}")
        assert ran_by[0][0].split(":")[1] == str(worker.pid), ran_by
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            assert worker.wait(timeout=30) == 0
        finally:
            worker.kill()
            log.close()
