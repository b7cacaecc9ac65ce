"""Who may do what: owner, group flags, outsiders and admins against every job route.

A file the caller may not read must answer exactly like a missing one.
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient

from datamill.api.app import create_app
from datamill.bootstrap import Node
from datamill.domain.status import JobKind, JobStatus
from datamill.store import executions as ex
from datamill.store.queue import Outcome
from datamill.store.users import insert_role
from tests.helpers import admin, password_hash

PATH = "/Data/ImportJobs/secret.imp"
MISSING = "/Data/ImportJobs/missing.imp"


def _auth(name: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{name}:pw".encode()).decode()}


@dataclass
class World:
    """A job file owned by 'owner', its ids, and a client."""

    node: Node
    client: TestClient
    file_id: int
    config_id: int

    def queued_execution(self) -> int:
        """A fresh QUEUED execution (after canceling any active one)."""
        for execution in self._active():
            self.node.jobs.stop_execution(execution, admin(self.node))
        return self.node.jobs.trigger(PATH, admin(self.node)).id

    def _active(self) -> list[int]:
        from datamill.store.executions import active_executions

        with self.node.store.db.read() as conn:
            return [e.id for e in active_executions(conn)]

    def data_id(self) -> int:
        """A fresh visible data result of the job."""
        execution_id = self.queued_execution()
        queue = self.node.store.queue
        worker = f"w{execution_id}"
        queue.register_worker(worker, "host", os.getpid())
        claimed = queue.claim_next_execution(worker)
        assert claimed is not None and claimed.id == execution_id
        staging = self.node.settings.staging_root / str(execution_id)
        staging.mkdir(parents=True)
        (staging / "data.parquet").write_bytes(b"x")
        outcome = Outcome(JobStatus.COMPLETED, sheets={"data": 1}, staging_dir=str(staging))
        assert queue.finish(claimed, worker, outcome)
        from datamill.store.data import newest_data

        with self.node.store.db.read() as conn:
            result = newest_data(conn, self.config_id)
        assert result is not None
        return result.id


FLAGS = {
    "g_r": (True, False, False),
    "g_rx": (True, False, True),
    "g_rw": (True, True, False),
    "g_x": (False, False, True),
    "g_w": (False, True, False),
}


@pytest.fixture
def world(node: Node) -> Iterator[World]:
    """Users owner, admin2, one per group in FLAGS (named like the group), and outsider."""
    users = node.store.users
    users.create("owner", password_hash("pw"))
    users.create("admin2", password_hash("pw"), roles=("ADMIN",))
    users.create("outsider", password_hash("pw"))
    for group in FLAGS:
        users.create(group, password_hash("pw"), groups=(group,))
    entry, config = node.jobs.define_job(
        PATH, JobKind.IMPORT, {"source": {"kind": "csv", "path": "/x.csv"}}, "owner"
    )
    with node.store.db.write() as conn:
        for group, (r, w, x) in FLAGS.items():
            node.store.files.set_group_flags(
                conn, entry.id, group, readable=r, writable=w, executable=x
            )
    with TestClient(create_app(node.settings, node.jobs)) as client:
        yield World(node, client, entry.id, config.id)


Request = Callable[[World, bool], tuple[str, str]]
"""(world, target exists) -> (method, url); a missing target uses unknown ids."""


def _file(w: World, real: bool) -> str:
    return str(w.file_id) if real else MISSING


ROUTES: dict[str, tuple[str, Request]] = {
    "status": ("read", lambda w, r: ("GET", f"/api/job-execution/{_file(w, r)}/status")),
    "status by path": (
        "read",
        lambda w, r: ("GET", f"/api/job-execution{PATH if r else MISSING}/status"),
    ),
    "trigger": ("execute", lambda w, r: ("POST", f"/api/job-execution/{_file(w, r)}/trigger")),
    "stop": (
        "execute",
        lambda w, r: (w.queued_execution(), ("POST", f"/api/job-execution/{_file(w, r)}/stop"))[1],
    ),
    "details": (
        "read",
        lambda w, r: (
            "GET",
            f"/rest/job-execution/job-details/{w.queued_execution() if r else 9999}",
        ),
    ),
    "history": (
        "read",
        lambda w, r: ("GET", f"/rest/job-configuration/job-history/{w.config_id if r else 9999}"),
    ),
    "legacy status": (
        "read",
        lambda w, r: ("GET", f"/rest/job-configuration/job-status/{w.config_id if r else 9999}"),
    ),
    "legacy trigger": (
        "execute",
        lambda w, r: ("POST", f"/rest/job-execution?configuration={w.config_id if r else 9999}"),
    ),
    "job-kill": (
        "execute",
        lambda w, r: (
            "POST",
            f"/rest/job-execution/job-kill/{w.queued_execution() if r else 9999}",
        ),
    ),
    "volume report": (
        "read",
        lambda w, r: ("GET", f"/rest/job-configuration/volume-report/{w.config_id if r else 9999}"),
    ),
    "delete data": (
        "write",
        lambda w, r: ("DELETE", f"/rest/data/{w.data_id() if r else 9999}"),
    ),
}

# Which flags each caller holds on the file (admins and the owner hold all).
CALLERS = {
    "owner": {"read", "write", "execute"},
    "admin2": {"read", "write", "execute"},
    "g_r": {"read"},
    "g_rx": {"read", "execute"},
    "g_rw": {"read", "write"},
    "g_x": set(),  # execute without read: the file is invisible
    "g_w": set(),
    "outsider": set(),
}


@pytest.mark.parametrize("route", list(ROUTES))
def test_permission_matrix(world: World, route: str) -> None:
    needed, build = ROUTES[route]
    for caller, held in CALLERS.items():
        method, url = build(world, True)
        response = world.client.request(method, url, headers=_auth(caller))
        where = f"{caller} {method} {url}: {response.text}"
        if needed in held:
            assert response.status_code == 200, where
        elif "read" in held:
            verb = {"execute": "run", "write": "change"}[needed]
            assert response.json() == {
                "status": "failure",
                "reason": f"you are not allowed to {verb} {PATH}",
            }, where
            assert response.status_code == 403, where
        else:
            missing_method, missing_url = build(world, False)
            missing = world.client.request(missing_method, missing_url, headers=_auth(caller))
            assert missing.status_code == 404
            # Identical but for the id the caller asked about.
            assert response.status_code == missing.status_code, where
            assert re.sub(r"\d+", "N", response.text) == re.sub(r"\d+", "N", missing.text), where


def test_list_running_shows_only_readable_runs(world: World) -> None:
    execution_id = world.queued_execution()
    for caller, held in CALLERS.items():
        response = world.client.get("/api/job-execution/list-running", headers=_auth(caller))
        seen = [item["jobExecutionId"] for item in response.json()]
        assert seen == ([execution_id] if "read" in held else []), caller


def test_sequential_trigger_needs_execute_on_every_member(world: World) -> None:
    body = f'{{"fileIds": [{world.file_id}]}}'
    for caller, held in CALLERS.items():
        for execution in world._active():
            world.node.jobs.stop_execution(execution, admin(world.node))
        response = world.client.post(
            "/api/job-execution/sequential-trigger", content=body, headers=_auth(caller)
        )
        if "execute" in held:
            [member] = response.json()["execution-plan"]
            assert member["job-configuration-id"] == world.config_id and member["trigger"]
            with world.node.store.db.read() as conn:
                planned = ex.get_execution(conn, member["job-execution-id"])
            assert (planned.triggered_by, planned.status) == (caller, JobStatus.QUEUED)
            continue
        assert world._active() == [], (caller, "a refused plan created a run")
        if "read" in held:
            assert (response.status_code, response.json()["reason"]) == (
                403,
                f"you are not allowed to run {PATH}",
            ), caller
        else:
            missing = world.client.post(
                "/api/job-execution/sequential-trigger",
                content='{"fileIds": [9999]}',
                headers=_auth(caller),
            )
            assert response.status_code == missing.status_code == 404, caller
            assert response.text.replace(str(world.file_id), "N") == missing.text.replace(
                "9999", "N"
            ), caller


def test_a_role_holding_star_grants_every_capability_but_no_file_access(world: World) -> None:
    # The API keeps '*' for ADMIN, but a role stored with it (by an operator, in the
    # database) holds every capability: docs/security.md, "Capabilities".
    with world.node.store.db.write() as conn:
        insert_role(conn, "STAR", ["*"])
        insert_role(conn, "NOTHING", [])
    world.node.store.users.create("star", password_hash("pw"), roles=("STAR",), groups=("g_rx",))
    world.node.store.users.create("none", password_hash("pw"), roles=("NOTHING",), groups=("g_rx",))
    started = world.client.post(
        f"/api/job-execution/{world.file_id}/trigger", headers=_auth("star")
    )
    assert started.json()["job-execution-user"] == "star", started.text
    # The same flags without the capability: refused before the file is even looked up.
    refused = world.client.get(f"/api/job-execution/{world.file_id}/status", headers=_auth("none"))
    assert (refused.status_code, refused.json()["reason"]) == (
        403,
        "your roles do not allow you to read jobs, their status and history "
        "(this needs the capability job.read)",
    )
    # '*' is every capability, not every file: star's group may not write the job.
    deleted = world.client.delete(f"/rest/import-job/{world.config_id}", headers=_auth("star"))
    assert deleted.json() == {
        "status": "failure",
        "reason": f"you are not allowed to change {PATH}",
    }
