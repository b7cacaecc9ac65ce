"""Capabilities are enforced on every route (issue #10, F12).

For each capability, a user whose role grants every other one (and whose
file flags allow everything) is refused with 403 on each route that needs
it; a user holding every custom capability is not refused for capabilities.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datamill.domain.status import JobKind, JobStatus
from datamill.store import users as user_store
from datamill.store.data import newest_data
from datamill.store.queue import Outcome
from tests.helpers import admin, password_hash
from tests.security.conftest import Actors

CAPABILITIES = ("job.read", "job.run", "job.define", "data.read", "metrics.read")
JOB = "/Data/ImportJobs/shared.imp"
FS = "/api/filesystem"


@dataclass
class Shared:
    """A job and a folder everybody may read, write and run."""

    actors: Actors
    file_id: int
    config_id: int
    folder_id: int

    def execution(self) -> int:
        """A fresh QUEUED execution of the job."""
        node = self.actors.node
        status = node.jobs.status(JOB, admin(node))
        if status.execution is not None and not status.execution.status.is_terminal:
            node.jobs.stop_execution(status.execution.id, admin(node))
        return node.jobs.trigger(JOB, admin(node)).id

    def data(self) -> int:
        """A fresh data result of the job."""
        execution_id = self.execution()
        queue = self.actors.node.store.queue
        queue.register_worker(f"w{execution_id}", "host", os.getpid())
        claimed = queue.claim_next_execution(f"w{execution_id}")
        assert claimed is not None
        staging = self.actors.node.settings.staging_root / str(execution_id)
        staging.mkdir(parents=True)
        pq.write_table(pa.table({"n": [1]}), staging / "data.parquet")
        outcome = Outcome(JobStatus.COMPLETED, sheets={"data": 1}, staging_dir=str(staging))
        assert queue.finish(claimed, f"w{execution_id}", outcome)
        with self.actors.node.store.db.read() as conn:
            result = newest_data(conn, self.config_id)
        assert result is not None
        return result.id


@pytest.fixture
def shared(actors: Actors) -> Shared:
    node = actors.node
    entry, config = node.jobs.define_job(
        JOB, JobKind.IMPORT, {"source": {"kind": "csv", "path": "/x.csv"}}, "admin"
    )
    folder = actors.call("admin", "POST", f"{FS}/folders/Data", {"name": "Open"}).json()
    with node.store.db.write() as conn:
        for file_id in (entry.id, folder["id"]):
            node.store.files.set_others_flags(
                conn, file_id, readable=True, writable=True, executable=True
            )
        for capability in CAPABILITIES:
            others = [c for c in CAPABILITIES if c != capability]
            user_store.insert_role(conn, f"no-{capability}", others)
        user_store.insert_role(conn, "holds-all", list(CAPABILITIES))
    for capability in CAPABILITIES:
        node.store.users.create(
            f"no-{capability}", password_hash("pw"), roles=(f"no-{capability}",)
        )
    node.store.users.create("holds-all", password_hash("pw"), roles=("holds-all",))
    return Shared(actors, entry.id, config.id, folder["id"])


Route = Callable[[Shared], tuple[str, str, object]]
DOCUMENT = {"path": "/Data/Open/new.imp", "source": {"kind": "csv", "path": "/x.csv"}}

ROUTES: dict[str, tuple[str, Route]] = {
    "status": ("job.read", lambda s: ("GET", f"/api/job-execution/{s.file_id}/status", None)),
    "status by path": ("job.read", lambda s: ("GET", f"/api/job-execution{JOB}/status", None)),
    "legacy status": (
        "job.read",
        lambda s: ("GET", f"/rest/job-configuration/job-status/{s.config_id}", None),
    ),
    "history": (
        "job.read",
        lambda s: ("GET", f"/rest/job-configuration/job-history/{s.config_id}", None),
    ),
    "details": (
        "job.read",
        lambda s: ("GET", f"/rest/job-execution/job-details/{s.execution()}", None),
    ),
    "run log": ("job.read", lambda s: ("GET", f"/api/job-execution/{s.execution()}/log", None)),
    "lineage": (
        "job.read",
        lambda s: ("GET", f"/api/job-execution/{s.execution()}/lineage", None),
    ),
    "file-job": ("job.read", lambda s: ("GET", f"/file-job?jobExecutionId={s.execution()}", None)),
    "trace": ("job.read", lambda s: ("GET", f"/job/download-trace/{s.execution()}", None)),
    "volume report": (
        "job.read",
        lambda s: ("GET", f"/rest/job-configuration/volume-report/{s.config_id}", None),
    ),
    "list running": ("job.read", lambda s: ("GET", "/api/job-execution/list-running", None)),
    "read document": ("job.read", lambda s: ("GET", f"/rest/import-job/{s.config_id}", None)),
    "list documents": ("job.read", lambda s: ("GET", "/rest/workbook", None)),
    "folder": ("job.read", lambda s: ("GET", f"{FS}/folders/{s.folder_id}", None)),
    "root folder": ("job.read", lambda s: ("GET", f"{FS}/root-folder", None)),
    "file": ("job.read", lambda s: ("GET", f"{FS}/files/{s.file_id}", None)),
    "permission": ("job.read", lambda s: ("GET", f"{FS}/files/{s.file_id}/permission", None)),
    "trigger": ("job.run", lambda s: ("POST", f"/api/job-execution/{s.file_id}/trigger", None)),
    "legacy trigger": (
        "job.run",
        lambda s: ("POST", f"/rest/job-execution?configuration={s.config_id}", None),
    ),
    "sequential": (
        "job.run",
        lambda s: ("POST", "/api/job-execution/sequential-trigger", [s.file_id]),
    ),
    "stop": (
        "job.run",
        lambda s: (s.execution(), ("POST", f"/api/job-execution/{s.file_id}/stop", None))[1],
    ),
    "job-kill": (
        "job.run",
        lambda s: ("POST", f"/rest/job-execution/job-kill/{s.execution()}", None),
    ),
    "create job": ("job.define", lambda s: ("POST", "/rest/import-job", DOCUMENT)),
    "update job": (
        "job.define",
        lambda s: ("PUT", f"/rest/import-job/{s.config_id}", {**DOCUMENT, "path": JOB}),
    ),
    "delete job": ("job.define", lambda s: ("DELETE", f"/rest/import-job/{s.config_id}", None)),
    "create folder": (
        "job.define",
        lambda s: ("POST", f"{FS}/folders/{s.folder_id}", {"name": "sub"}),
    ),
    "rename folder": (
        "job.define",
        lambda s: ("PUT", f"{FS}/folders/{s.folder_id}", {"name": "x"}),
    ),
    "delete folder": ("job.define", lambda s: ("DELETE", f"{FS}/folders/{s.folder_id}", None)),
    "change owner": (
        "job.define",
        lambda s: ("PUT", f"{FS}/files/{s.file_id}/permission/owner", {"owner": "eve"}),
    ),
    "change others": (
        "job.define",
        lambda s: ("PUT", f"{FS}/files/{s.file_id}/permission/others", {"readable": True}),
    ),
    "data listing": ("data.read", lambda s: ("GET", f"/rest/data/import-job/{s.config_id}", None)),
    "download": (
        "data.read",
        lambda s: (s.data(), ("GET", f"/rest/data/import-job/{s.config_id}/download", None))[1],
    ),
    "delete data": ("data.read", lambda s: ("DELETE", f"/rest/data/{s.data()}", None)),
    "metrics": ("metrics.read", lambda s: ("GET", "/metrics", None)),
}


@pytest.mark.parametrize("route", list(ROUTES))
def test_each_route_needs_its_capability(shared: Shared, route: str) -> None:
    needed, build = ROUTES[route]
    method, url, body = build(shared)
    # Twice: the second status poll would be answered by the fast path.
    for _ in range(2 if method == "GET" else 1):
        refused = shared.actors.call(f"no-{needed}", method, url, body)
        assert refused.status_code == 403, refused.text
        assert f"needs the capability {needed}" in refused.json()["reason"]
    # With every capability the same request is not refused for capabilities.
    method, url, body = build(shared)
    allowed = shared.actors.call("holds-all", method, url, body)
    assert "capability" not in allowed.text, allowed.text
    assert allowed.status_code < 500


def test_a_user_without_roles_is_refused_before_anything_is_looked_up(shared: Shared) -> None:
    shared.actors.node.store.users.create("nobody", password_hash("pw"), roles=())
    known = shared.actors.call("nobody", "GET", f"/api/job-execution/{shared.file_id}/status")
    unknown = shared.actors.call("nobody", "GET", "/api/job-execution/999999/status")
    assert known.status_code == unknown.status_code == 403
    assert known.text == unknown.text


def test_every_capability_of_the_map_is_covered() -> None:
    from datamill.services.permissions import Capability

    assert {c.value for c in Capability} == {needed for needed, _ in ROUTES.values()}
