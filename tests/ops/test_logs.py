"""Structured logs: one JSON object per line, with the fields known where it was written."""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from datamill.domain.status import JobStatus
from datamill.observability.logs import configure_logging
from tests.helpers import define, orders_import, wait_terminal, write_orders_csv
from tests.security.conftest import Actors, auth

IMPORT = "/Data/ImportJobs/orders.imp"


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    """Log lines as DATAMILL_LOG_FORMAT=json writes them, at DEBUG, into a buffer."""
    root = logging.getLogger()
    level = root.level
    stream = io.StringIO()
    handler = configure_logging("json", logging.DEBUG, stream)
    yield stream
    root.removeHandler(handler)
    root.setLevel(level)


def _until_logged(stream: io.StringIO, text: str, timeout: float = 30.0) -> None:
    """Wait for `text` in the log: the worker logs a run's end only after its finish commits,
    so a run COMPLETED in the store may not have its line yet."""
    deadline = time.monotonic() + timeout
    while text not in stream.getvalue():
        assert time.monotonic() < deadline, f"{text!r} not logged within {timeout} s"
        time.sleep(0.02)


def _parsed(stream: io.StringIO) -> list[dict[str, Any]]:
    lines = [line for line in stream.getvalue().splitlines() if line]
    return [json.loads(line) for line in lines]  # every line is one JSON object


def test_runs_and_requests_log_json_lines_with_bound_fields(
    running: Actors, files_root: Path, json_lines: io.StringIO
) -> None:
    node = running.node
    file_id = define(node, IMPORT, orders_import(write_orders_csv(files_root / "in", rows=3)))
    headers = {**auth("admin"), "X-Request-Id": "req-from-client-1"}
    answer = running.client.post(f"/api/job-execution/{file_id}/trigger", headers=headers)
    assert answer.headers["x-request-id"] == "req-from-client-1"
    execution_id = answer.json()["job-execution-id"]
    assert wait_terminal(node, execution_id).status is JobStatus.COMPLETED
    _until_logged(json_lines, "run ended COMPLETED after ")
    lines = _parsed(json_lines)
    requests = [line for line in lines if line.get("request_id") == "req-from-client-1"]
    assert requests, lines
    assert requests[-1]["message"].startswith(
        "POST /api/job-execution/{reference:path}/trigger -> 200 in "
    )
    runs = [line for line in lines if line.get("execution_id") == execution_id]
    messages = [line["message"] for line in runs]
    assert any(m.startswith("run started: import, attempt 1") for m in messages), messages
    assert any(m.startswith("run ended COMPLETED after ") for m in messages), messages
    for line in runs:
        assert line["job_path"] == IMPORT
        assert line["worker_id"].count(":") == 2
        assert {"time", "level", "logger"} <= line.keys()
    # The end line is bound to its own run.
    after = [line for line in lines if line["message"].startswith("run ended")]
    assert all(line.get("execution_id") == execution_id for line in after)


def test_text_is_the_default_and_carries_the_same_fields(running: Actors, files_root: Path) -> None:
    root = logging.getLogger()
    level = root.level
    stream = io.StringIO()
    handler = configure_logging("text", logging.INFO, stream)
    try:
        node = running.node
        file_id = define(node, IMPORT, orders_import(write_orders_csv(files_root / "in")))
        run = running.call("admin", "POST", f"/api/job-execution/{file_id}/trigger").json()
        wait_terminal(node, run["job-execution-id"])
        _until_logged(stream, "run ended COMPLETED")
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    ended = [line for line in stream.getvalue().splitlines() if "run ended COMPLETED" in line]
    assert len(ended) == 1
    assert f"execution_id={run['job-execution-id']} job_path={IMPORT} worker_id=" in ended[0]
    with pytest.raises(json.JSONDecodeError):
        json.loads(ended[0])
