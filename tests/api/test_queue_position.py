"""Queue position and expected start of runs not started yet (issue 15), on the wire.

The real app and store on both backends. Runs are claimed and ended through
the store's queue by a registered worker id (no worker process), so which
run is RUNNING, and how long each job took before, is exactly as set here.
"""

from __future__ import annotations

import base64
import datetime as dt
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from datamill.api.app import create_app
from datamill.bootstrap import Node, open_node
from datamill.domain.records import User
from datamill.domain.status import JobKind, JobStatus
from datamill.services.plans import sequential_trigger
from datamill.store import tables as t
from datamill.store import users as user_store
from datamill.store.executions import get_execution
from datamill.store.queue import Outcome
from tests.helpers import (
    admin,
    define,
    orders_import,
    password_hash,
    totals_workbook,
    write_orders_csv,
)

AUTH = {"Authorization": "Basic " + base64.b64encode(b"admin:secret").decode()}
DATAMEER_TIME = re.compile(r"^[A-Z][a-z]{2} \d{1,2}, \d{4} \d{1,2}:\d{2}:\d{2} (AM|PM)$")
WORKER = "w-queue"
# Seconds each job took before: A 60, B 120, C 30 (settings: 2 slots per worker).
MEANS = {"A": 60, "B": 120, "C": 30}


@pytest.fixture
def client(node: Node) -> Iterator[TestClient]:
    with TestClient(create_app(node.settings, node.jobs)) as client:
        yield client


@pytest.fixture
def jobs(node: Node, files_root: Path) -> dict[str, int]:
    """Jobs A, B, C (file ids), each with one earlier COMPLETED run of its MEANS duration."""
    source = write_orders_csv(files_root / "in", rows=3)
    node.store.queue.register_worker(WORKER, "test", os.getpid())
    ids = {}
    for name, seconds in MEANS.items():
        ids[name] = define(node, f"/Data/ImportJobs/{name}.imp", orders_import(source))
        run = _start(node, ids[name])
        _end(node, run)
        with node.store.db.write() as conn:
            ended = conn.execute(
                sa.select(t.executions.c.finished_at).where(t.executions.c.id == run)
            )
            finished = ended.scalar_one()
            conn.execute(
                sa.update(t.executions)
                .where(t.executions.c.id == run)
                .values(started_at=finished - dt.timedelta(seconds=seconds))
            )
    return ids


def _trigger(node: Node, file_id: int) -> int:
    return node.jobs.trigger(str(file_id), admin(node)).id


def _start(node: Node, file_id: int) -> int:
    """Trigger and claim a run of the job: it is RUNNING when this returns."""
    run = _trigger(node, file_id)
    claimed = node.store.queue.claim_next_execution(WORKER)
    assert claimed is not None and claimed.id == run
    return run


def _end(node: Node, run: int) -> None:
    with node.store.db.read() as conn:
        execution = get_execution(conn, run)
    assert node.store.queue.finish(execution, WORKER, Outcome(JobStatus.COMPLETED))


def _status(client: TestClient, file_id: int) -> dict[str, Any]:
    answer = client.get(f"/api/job-execution/{file_id}/status", headers=AUTH)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def _running_list(client: TestClient) -> dict[int, dict[str, Any]]:
    answer = client.get("/api/job-execution/list-running", headers=AUTH)
    assert answer.status_code == 200
    return {item["jobExecutionId"]: item for item in answer.json()}


QUEUED_KEYS = ["status", "file-id", "job-execution-id", "job-status", "start-time"]


def test_queued_runs_get_their_place_and_expected_start_in_order(
    node: Node, client: TestClient, jobs: dict[str, int]
) -> None:
    a1, c1 = _start(node, jobs["A"]), _start(node, jobs["C"])  # both slots taken
    b1, a2, b2 = (_trigger(node, jobs[name]) for name in ("B", "A", "B"))

    listed = _running_list(client)
    # C1 ends first (30 s): B1 takes its slot; A2 waits for A1 (60 s); B2 for B1 (30 + 120 s).
    assert [listed[r]["queuePosition"] for r in (b1, a2, b2)] == [1, 2, 3]
    starts = [listed[r]["expectedStartTime"] for r in (b1, a2, b2)]
    assert abs(starts[1] - starts[0] - 30_000) < 2_000
    assert abs(starts[2] - starts[0] - 120_000) < 2_000
    created = listed[b1]["creationDate"]
    assert abs(starts[0] - created - 30_000) < 5_000
    # Running runs keep exactly the list-running members of the spec.
    for run in (a1, c1):
        assert "queuePosition" not in listed[run] and "expectedStartTime" not in listed[run]

    # Status of B (newest run B2) twice: the second would be the fast path's.
    for _ in range(2):
        status = _status(client, jobs["B"])
        assert list(status) == [*QUEUED_KEYS, "queue-position", "expected-start-time"]
        assert status["job-execution-id"] == b2 and status["job-status"] == "QUEUED"
        assert status["start-time"] is None
        assert status["queue-position"] == 3
        assert DATAMEER_TIME.match(status["expected-start-time"])

    legacy = client.get(f"/rest/job-configuration/job-status/{_config(node, b2)}", headers=AUTH)
    assert legacy.json() == {
        "id": b2,
        "jobStatus": "QUEUED",
        "queuePosition": 3,
        "expectedStartTime": status["expected-start-time"],
    }


def test_running_and_ended_runs_answer_as_before(
    node: Node, client: TestClient, jobs: dict[str, int]
) -> None:
    run = _start(node, jobs["C"])
    _trigger(node, jobs["A"])  # something queued behind
    for _ in range(2):
        running = _status(client, jobs["C"])
        assert list(running) == [*QUEUED_KEYS, "estimate-time", "job-progress"]
    legacy = client.get(f"/rest/job-configuration/job-status/{_config(node, run)}", headers=AUTH)
    assert legacy.json() == {"id": run, "jobStatus": "RUNNING"}
    _end(node, run)
    for _ in range(2):
        ended = _status(client, jobs["C"])
        assert list(ended) == [*QUEUED_KEYS, "stop-time"] and ended["job-status"] == "COMPLETED"
    assert run not in _running_list(client)


def test_without_a_live_worker_the_place_is_given_and_the_start_is_null(
    node: Node, client: TestClient, jobs: dict[str, int]
) -> None:
    node.store.queue.unregister_worker(WORKER)
    first, second = _trigger(node, jobs["A"]), _trigger(node, jobs["B"])
    listed = _running_list(client)
    assert [listed[r]["queuePosition"] for r in (first, second)] == [1, 2]
    assert listed[first]["expectedStartTime"] is None
    status = _status(client, jobs["B"])
    assert status["queue-position"] == 2 and status["expected-start-time"] is None


def _config(node: Node, run: int) -> int:
    with node.store.db.read() as conn:
        return int(
            conn.execute(
                sa.select(t.executions.c.job_configuration_id).where(t.executions.c.id == run)
            ).scalar_one()
        )


def test_a_waiting_run_starts_when_its_upstream_is_expected_to_end(
    node: Node, client: TestClient, jobs: dict[str, int]
) -> None:
    workbook = totals_workbook("/Data/ImportJobs/A.imp") | {"triggering": {"mode": "DATA_DRIVEN"}}
    entry, _ = node.jobs.define_job("/w/totals.wbk", JobKind.WORKBOOK, workbook, "admin")
    plan = sequential_trigger(node.jobs, [str(jobs["A"])], admin(node), {})
    upstream, waiting = (member.execution_id for member in plan)
    assert upstream is not None and waiting is not None

    listed = _running_list(client)
    assert listed[waiting]["jobStatus"] == "WAITING_FOR_OTHER_JOB"
    assert [listed[r]["queuePosition"] for r in (upstream, waiting)] == [1, 2]
    # A free slot now for A's run; the workbook once A's 60 s are over.
    gap = listed[waiting]["expectedStartTime"] - listed[upstream]["expectedStartTime"]
    assert abs(gap - 60_000) < 2_000
    status = _status(client, entry.id)
    assert status["job-status"] == "WAITING_FOR_OTHER_JOB"
    assert status["queue-position"] == 2 and DATAMEER_TIME.match(status["expected-start-time"])


def test_a_queued_run_of_a_running_job_waits_for_it_though_a_slot_is_free(
    node: Node, client: TestClient, jobs: dict[str, int]
) -> None:
    _start(node, jobs["A"])  # one of the two slots
    second = _trigger(node, jobs["A"])
    listed = _running_list(client)[second]
    # Runs of one job never overlap: the free slot waits for A's run (60 s).
    assert listed["queuePosition"] == 1
    assert abs(listed["expectedStartTime"] - listed["creationDate"] - 60_000) < 5_000
    # And the worker agrees: nothing is claimable while A runs.
    assert node.store.queue.claim_next_execution(WORKER) is None


def test_a_waiting_run_starts_when_its_running_upstream_is_expected_to_end(
    node: Node, client: TestClient, jobs: dict[str, int]
) -> None:
    workbook = totals_workbook("/Data/ImportJobs/A.imp") | {"triggering": {"mode": "DATA_DRIVEN"}}
    node.jobs.define_job("/w/totals.wbk", JobKind.WORKBOOK, workbook, "admin")
    plan = sequential_trigger(node.jobs, [str(jobs["A"])], admin(node), {})
    upstream, waiting = (member.execution_id for member in plan)
    claimed = node.store.queue.claim_next_execution(WORKER)
    assert claimed is not None and claimed.id == upstream
    listed = _running_list(client)[waiting]
    # A slot is free, but the workbook waits for A's run, 60 s from its start.
    assert (listed["jobStatus"], listed["queuePosition"]) == ("WAITING_FOR_OTHER_JOB", 1)
    assert abs(listed["expectedStartTime"] - listed["creationDate"] - 60_000) < 5_000


def _user(node: Node, name: str) -> User:
    with node.store.db.read() as conn:
        user = node.store.users.get(conn, name)
    assert user is not None
    return user


@pytest.mark.parametrize("fair", [True, False], ids=["fair-shares", "oldest-first"])
def test_the_expected_order_follows_the_slot_sharing_the_operator_chose(
    node: Node, jobs: dict[str, int], fair: bool
) -> None:
    shared = open_node(node.settings.model_copy(update={"fair_slot_shares": fair}))
    shared.store.users.create("eve", password_hash("pw"), roles=("ADMIN",))
    try:
        _start(shared, jobs["A"])  # admin holds one of the two slots
        older = _trigger(shared, jobs["B"])  # admin's
        newer = shared.jobs.trigger(str(jobs["C"]), _user(shared, "eve")).id
        with TestClient(create_app(shared.settings, shared.jobs)) as client:
            listed = _running_list(client)
        # Fair shares: eve holds no slot, so her newer run takes the free one first.
        first, second = (newer, older) if fair else (older, newer)
        assert (listed[first]["queuePosition"], listed[second]["queuePosition"]) == (1, 2)
        claimed = shared.store.queue.claim_next_execution(WORKER)
        assert claimed is not None and claimed.id == first
    finally:
        shared.store.close()


VIEWER = {"Authorization": "Basic " + base64.b64encode(b"carl:pw").decode()}


def _seconds(duration: str) -> int:
    """Seconds of a Datameer duration: '59s', '1m 0s'."""
    match = re.fullmatch(r"(?:(\d+)m )?(\d+)s", duration)
    assert match is not None, duration
    return int(match.group(1) or 0) * 60 + int(match.group(2))


def test_a_running_runs_estimate_is_the_same_whichever_path_answers_the_status(
    node: Node, client: TestClient, jobs: dict[str, int]
) -> None:
    # A role of the operator's own: api/fast_status.py leaves its callers to the route.
    with node.store.db.write() as conn:
        user_store.insert_role(conn, "viewer", ["job.read"])
        node.store.files.set_others_flags(
            conn, jobs["A"], readable=True, writable=False, executable=False
        )
    node.store.users.create("carl", password_hash("pw"), roles=("viewer",))
    _start(node, jobs["A"])  # A took 60 s before
    estimates = []
    for headers in (AUTH, AUTH, VIEWER, VIEWER):
        answer = client.get(f"/api/job-execution/{jobs['A']}/status", headers=headers)
        assert answer.status_code == 200, answer.text
        assert answer.json()["job-status"] == "RUNNING"
        estimates.append(_seconds(answer.json()["estimate-time"]))
    assert all(50 <= seconds <= 60 for seconds in estimates), estimates
