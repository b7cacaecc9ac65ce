"""GET /metrics: Prometheus text that moves as runs finish, behind the configured access."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from datamill.api.app import create_app
from datamill.bootstrap import Node
from datamill.domain.status import JobStatus
from datamill.settings import Settings
from datamill.store import tables as t
from tests.helpers import define, orders_import, password_hash, wait_terminal, write_orders_csv
from tests.security.conftest import PASSWORD, Actors, auth

IMPORT = "/Data/ImportJobs/orders.imp"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition, by name and sorted labels."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(text: str, name: str, **labels: str) -> float:
    """One sample's value; 0 if it is not (yet) there."""
    return samples(text).get((name, tuple(sorted(labels.items()))), 0.0)


def scrape(actors: Actors) -> str:
    answer = actors.client.get("/metrics", headers=auth("admin"))
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    return answer.text


def test_a_finished_run_moves_the_counters_by_exactly_one(
    running: Actors, files_root: Path
) -> None:
    node = running.node
    file_id = define(node, IMPORT, orders_import(write_orders_csv(files_root / "in", rows=5)))
    before = scrape(running)
    assert value(before, "datamill_worker_slots", state="idle") == node.settings.concurrency
    answer = running.call("admin", "POST", f"/api/job-execution/{file_id}/trigger")
    assert answer.status_code == 200, answer.text
    ended = wait_terminal(node, answer.json()["job-execution-id"])
    assert ended.status is JobStatus.COMPLETED
    # The slot is freed just after the run's end is recorded.
    after = _scrape_until_idle(running)
    finished = "datamill_runs_finished_total"
    grew = value(after, finished, kind="import", status="COMPLETED") - value(
        before, finished, kind="import", status="COMPLETED"
    )
    assert grew == 1
    assert (
        value(after, "datamill_runs_started_total", kind="import")
        - value(before, "datamill_runs_started_total", kind="import")
        == 1
    )
    assert (
        value(after, "datamill_run_duration_seconds_count", kind="import")
        == value(before, "datamill_run_duration_seconds_count", kind="import") + 1
    )
    assert value(after, "datamill_run_queue_wait_seconds_count", kind="import") >= 1
    trigger = "/api/job-execution/{reference:path}/trigger"
    assert value(after, "datamill_trigger_requests_total", route=trigger, status="200") == 1
    assert (
        value(after, "datamill_http_requests_total", method="POST", route=trigger, status="200")
        == 1
    )
    # Nothing left waiting: the queue gauges come from the store.
    assert value(after, "datamill_queue_depth", status="QUEUED") == 0
    assert value(after, "datamill_queue_depth", status="RUNNING") == 0


def _scrape_until_idle(actors: Actors) -> str:
    for _ in range(200):
        text = scrape(actors)
        if value(text, "datamill_worker_slots", state="busy") == 0:
            return text
    raise AssertionError("a slot stayed busy after its run ended")


def test_queue_depth_counts_what_waits(actors: Actors, files_root: Path) -> None:
    # No worker: triggered runs stay QUEUED.
    file_id = define(actors.node, IMPORT, orders_import(write_orders_csv(files_root / "in")))
    for _ in range(2):
        assert actors.call("admin", "POST", f"/api/job-execution/{file_id}/trigger").is_success
    assert value(scrape(actors), "datamill_queue_depth", status="QUEUED") == 2


def test_http_requests_are_labelled_by_route_template_not_path(actors: Actors) -> None:
    for n in (11, 12, 13):
        actors.call("admin", "GET", f"/api/job-execution/{n}/status")
    actors.call("admin", "GET", "/no/such/route/at/all")
    actors.client.request("FROBNICATE", "/health")
    text = scrape(actors)
    routes = {
        dict(labels)["route"]
        for (name, labels) in samples(text)
        if name == "datamill_http_requests_total"
    }
    assert "/api/job-execution/{reference:path}/status" in routes
    assert "<unmatched>" in routes
    assert not any("11" in r or "/no/such" in r for r in routes), routes
    methods = {
        dict(labels)["method"]
        for (name, labels) in samples(text)
        if name == "datamill_http_requests_total"
    }
    assert "FROBNICATE" not in methods and "OTHER" in methods


def test_status_answered_by_the_fast_path_is_counted_under_its_route(
    running: Actors, files_root: Path
) -> None:
    node = running.node
    file_id = define(node, IMPORT, orders_import(write_orders_csv(files_root / "in", rows=3)))
    run = running.call("admin", "POST", f"/api/job-execution/{file_id}/trigger").json()
    wait_terminal(node, run["job-execution-id"])
    app = running.client.app
    answered = app.fast_status.answered  # type: ignore[attr-defined]
    for _ in range(3):
        status = running.call("admin", "GET", f"/api/job-execution/{file_id}/status")
        assert status.status_code == 200
    assert app.fast_status.answered > answered  # type: ignore[attr-defined]
    text = scrape(running)
    route = "/api/job-execution/{reference:path}/status"
    assert value(text, "datamill_http_requests_total", method="GET", route=route, status="200") == 3


def test_a_store_error_is_counted(actors: Actors) -> None:
    db = actors.node.store.db
    with pytest.raises(sa.exc.DBAPIError), db.read() as conn:
        conn.execute(sa.text("SELECT * FROM no_such_table"))
    errors = [
        v
        for (name, _labels), v in samples(scrape(actors)).items()
        if name == "datamill_store_errors_total"
    ]
    assert sum(errors) >= 1


# ---------------------------------------------------------------- access


@pytest.fixture
def monitor(node: Node) -> str:
    """A user whose only role grants metrics.read."""
    with node.store.db.write() as conn:
        conn.execute(sa.insert(t.roles).values(name="MONITOR", capabilities=["metrics.read"]))
    node.store.users.create("mon", password_hash(PASSWORD), roles=("MONITOR",))
    return "mon"


def _client(node: Node, **overrides: object) -> Iterator[TestClient]:
    settings = Settings(**{**node.settings.model_dump(), **overrides})
    with TestClient(create_app(settings, node.jobs)) as client:
        yield client


def test_by_default_metrics_need_the_metrics_read_capability(actors: Actors, monitor: str) -> None:
    assert actors.node.settings.metrics == "auth"
    for user in ("admin", monitor):
        answer = actors.call(user, "GET", "/metrics")
        assert answer.status_code == 200, (user, answer.text)
        assert "datamill_http_requests_total" in answer.text
    denied = actors.call("eve", "GET", "/metrics")
    assert denied.status_code == 403
    assert denied.json()["reason"] == (
        "your roles do not allow you to read the server's metrics"
        " (this needs the capability metrics.read)"
    )
    anonymous = actors.client.get("/metrics")
    assert anonymous.status_code == 401
    assert "datamill_" not in anonymous.text


def test_open_metrics_need_no_credentials(actors: Actors) -> None:
    for client in _client(actors.node, metrics="open"):
        answer = client.get("/metrics")
        assert answer.status_code == 200
        assert "datamill_runs_started" in answer.text


def test_metrics_off_is_no_route(actors: Actors) -> None:
    for client in _client(actors.node, metrics="off"):
        for headers in ({}, auth("admin")):
            answer = client.get("/metrics", headers=headers)
            assert answer.status_code == 404
            assert answer.json()["reason"] == "No such route."


# ---------------------------------------------------------------- request ids


def test_a_sane_request_id_is_echoed_and_an_insane_one_replaced(actors: Actors) -> None:
    given = actors.client.get("/health", headers={"X-Request-Id": "trace-42.abc"})
    assert given.headers["x-request-id"] == "trace-42.abc"
    for bad in ("x" * 129, "has space", ""):
        answer = actors.client.get("/health", headers={"X-Request-Id": bad})
        made = answer.headers["x-request-id"]
        assert made != bad and len(made) == 32 and made.isalnum()
    first = actors.client.get("/health").headers["x-request-id"]
    assert first != actors.client.get("/health").headers["x-request-id"]
