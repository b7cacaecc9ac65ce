"""The job routes on the wire: exact JSON shapes, status codes, auth, file references."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from datamill.api.app import create_app
from datamill.bootstrap import Node
from datamill.domain.status import JobStatus
from datamill.worker.worker import Worker
from tests.helpers import define, orders_import, wait_terminal, write_orders_csv

AUTH = {"Authorization": "Basic " + base64.b64encode(b"admin:secret").decode()}
DATAMEER_TIME = re.compile(r"^[A-Z][a-z]{2} \d{1,2}, \d{4} \d{1,2}:\d{2}:\d{2} (AM|PM)$")


@pytest.fixture
def client(node: Node) -> Iterator[TestClient]:
    """The real app in-process, over the node's store."""
    with TestClient(create_app(node.settings, node.jobs)) as client:
        yield client


@pytest.fixture
def import_job(node: Node, files_root: Path) -> int:
    """An import job at /Data/ImportJobs/my orders.imp; returns its file id."""
    source = write_orders_csv(files_root / "in", rows=5)
    return define(node, "/Data/ImportJobs/my orders.imp", orders_import(source))


def test_never_ran_status_is_pretty_printed_exactly(client: TestClient, import_job: int) -> None:
    response = client.get(f"/api/job-execution/{import_job}/status", headers=AUTH)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.text == '{\n  "status": "success",\n  "job-status": "_NONE"\n}'


def test_trigger_then_queued_status(client: TestClient, import_job: int) -> None:
    response = client.post(f"/api/job-execution/{import_job}/trigger", headers=AUTH)
    assert response.status_code == 200
    body = response.json()
    assert list(body) == [
        "status",
        "job-execution-id",
        "job-execution-user",
        "job-execution-trigger",
    ]
    assert body["job-execution-user"] == "admin"
    assert body["job-execution-trigger"] == "RESTAPI"
    status = client.get(f"/api/job-execution/{import_job}/status", headers=AUTH).json()
    assert status == {
        "status": "success",
        "file-id": import_job,
        "job-execution-id": body["job-execution-id"],
        "job-status": "QUEUED",
        "start-time": None,
        # Datamill's members for a run not started yet (issue 15); no worker: no time.
        "queue-position": 1,
        "expected-start-time": None,
    }


@pytest.mark.parametrize(
    "reference",
    [
        "Data/ImportJobs/my orders.imp",
        "Data%2FImportJobs%2Fmy%20orders.imp",
        "Data/ImportJobs/my+orders.imp",
        "%2FData%2FImportJobs%2Fmy+orders.imp",
    ],
)
def test_every_form_of_file_reference_is_accepted(
    client: TestClient, import_job: int, reference: str
) -> None:
    response = client.get(f"/api/job-execution/{reference}/status", headers=AUTH)
    assert response.status_code == 200, response.text
    assert response.json()["job-status"] == "_NONE"


def test_doubled_and_trailing_slashes_are_tolerated(client: TestClient, import_job: int) -> None:
    response = client.get(
        f"http://testserver//api/job-execution/{import_job}/status/", headers=AUTH
    )
    assert response.status_code == 200


def test_missing_credentials_get_401_with_a_challenge(client: TestClient, import_job: int) -> None:
    response = client.get(f"/api/job-execution/{import_job}/status")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Basic realm="datamill"'
    assert response.json()["status"] == "failure"
    wrong = {"Authorization": "Basic " + base64.b64encode(b"admin:nope").decode()}
    assert client.get(f"/api/job-execution/{import_job}/status", headers=wrong).status_code == 401


def test_unknown_files_get_the_datameer_404(client: TestClient) -> None:
    for reference in ("424242", "Data/ImportJobs/nope.imp", "0b0b0b0b-0000-0000-0000-000000000000"):
        response = client.get(f"/api/job-execution/{reference}/status", headers=AUTH)
        assert response.status_code == 404
        assert response.json() == {
            "status": "failure",
            "reason": "File doesn't exist or isn't accessible with current permissions",
        }


def test_triggering_a_folder_is_a_bad_request(client: TestClient) -> None:
    response = client.post("/api/job-execution/Data/ImportJobs/trigger", headers=AUTH)
    assert response.status_code == 400
    assert "not a job" in response.json()["reason"]


def test_stop_with_nothing_active_is_a_conflict(client: TestClient, import_job: int) -> None:
    response = client.post(f"/api/job-execution/{import_job}/stop", headers=AUTH)
    assert response.status_code == 409
    assert response.json()["status"] == "failure"


def test_stop_of_a_queued_run_answers_an_empty_200(client: TestClient, import_job: int) -> None:
    client.post(f"/api/job-execution/{import_job}/trigger", headers=AUTH)
    response = client.post(f"/api/job-execution/{import_job}/stop", headers=AUTH)
    assert response.status_code == 200
    assert response.content == b""
    status = client.get(f"/api/job-execution/{import_job}/status", headers=AUTH).json()
    assert status["job-status"] == "CANCELED"
    assert status["start-time"] is None
    assert DATAMEER_TIME.match(status["stop-time"])


def test_completed_run_details_history_and_list_running(
    node: Node, client: TestClient, import_job: int
) -> None:
    worker = Worker(node.store, node.settings, node.wakeup)
    worker.start()
    try:
        trigger = client.post(f"/api/job-execution/{import_job}/trigger", headers=AUTH).json()
        execution_id = trigger["job-execution-id"]
        done = wait_terminal(node, execution_id)
    finally:
        worker.shutdown(grace_seconds=1.0)
    assert done.status is JobStatus.COMPLETED, done.error_message

    status = client.get(f"/api/job-execution/{import_job}/status", headers=AUTH).json()
    assert list(status) == [
        "status",
        "file-id",
        "job-execution-id",
        "job-status",
        "start-time",
        "stop-time",
    ]
    assert DATAMEER_TIME.match(status["start-time"]) and DATAMEER_TIME.match(status["stop-time"])

    details = client.get(f"/rest/job-execution/job-details/{execution_id}", headers=AUTH)
    body = details.json()
    assert list(body) == [
        "startTime",
        "stopTime",
        "jobStatus",
        "jobConfigurationId",
        "file",
        "successCount",
        "failureCount",
        "counters",
        # Datamill's members after Datameer's, which stay as they were (issue #12).
        "failure",
        "warnings",
        "attempts",
    ]
    assert body["failure"] is None and body["warnings"] == [] and body["attempts"] == 1
    assert body["jobStatus"] == "COMPLETED"
    assert body["file"]["id"] == import_job
    assert body["successCount"] == 5 and body["failureCount"] == 0
    assert body["counters"]["IMPORT_RECORDS"] == 5
    assert all(isinstance(v, int) for v in body["counters"].values())
    assert '\n  "counters": {\n    "IMPORT_' in details.text

    history = client.get(
        f"/rest/job-configuration/job-history/{body['jobConfigurationId']}", headers=AUTH
    )
    assert history.json() == [{"id": execution_id, "jobStatus": "COMPLETED"}]
    running = client.get("/api/job-execution/list-running", headers=AUTH)
    assert running.json() == []
    assert json.loads(client.get("/rest/jobs/list-running", headers=AUTH).text) == []


def test_list_running_shows_queued_runs_with_epoch_millis(
    client: TestClient, import_job: int
) -> None:
    trigger = client.post(f"/api/job-execution/{import_job}/trigger", headers=AUTH).json()
    items = client.get("/api/job-execution/list-running", headers=AUTH).json()
    assert len(items) == 1
    item = items[0]
    assert list(item) == [
        "jobStatus",
        "fileName",
        "jobName",
        "fileId",
        "uuid",
        "creationDate",
        "jobExecutionId",
        "dapJobConfigurationId",
        "estimatedTime",
        "startTime",
        # Datamill's members for a run not started yet (issue 15).
        "queuePosition",
        "expectedStartTime",
    ]
    assert item["jobStatus"] == "QUEUED"
    assert item["jobExecutionId"] == trigger["job-execution-id"]
    assert item["fileId"] == import_job
    assert isinstance(item["creationDate"], int) and item["creationDate"] > 1_600_000_000_000
    assert item["startTime"] is None


def test_unknown_history_and_details_are_404(client: TestClient) -> None:
    assert client.get("/rest/job-configuration/job-history/999", headers=AUTH).status_code == 404
    assert client.get("/rest/job-execution/job-details/999", headers=AUTH).status_code == 404
    bad = client.get("/rest/job-execution/job-details/abc", headers=AUTH)
    assert bad.status_code == 400 and bad.json()["status"] == "failure"


def test_openapi_describes_every_route_behind_authentication(client: TestClient) -> None:
    assert client.get("/openapi.json").status_code == 401
    schema = client.get("/openapi.json", headers=AUTH).json()
    assert schema["components"]["securitySchemes"]["basic"]["scheme"] == "basic"
    paths = set(schema["paths"])
    for route in (
        "/api/job-execution/{reference}/status",
        "/api/job-execution/{reference}/trigger",
        "/api/job-execution/{reference}/stop",
        "/api/job-execution/sequential-trigger",
        "/api/job-execution/list-running",
        "/rest/job-execution/job-details/{execution_id}",
        "/rest/job-configuration/job-history/{config_id}",
        "/rest/data/{data_id}",
    ):
        assert route in paths


def test_the_health_probe_needs_no_credentials(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok"}
