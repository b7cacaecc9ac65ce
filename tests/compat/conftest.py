"""Datameer clients against a world of four actors: owner, reader, stranger, ADMIN.

`bob` owns the jobs (ANALYST); `rita` reads them through the group `readers`;
`sam` has no rights on them; `admin` holds the ADMIN role. Requests are sent
as the clients send them: raw method, path and body, Basic credentials, no
Content-Type unless the client sets one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from datamill.domain.records import User
from datamill.domain.status import JobKind, JobStatus
from datamill.services.jobs import ByConfiguration
from datamill.store import executions as ex
from datamill.store import tables as t
from datamill.store.queue import Outcome
from tests.helpers import orders_import, password_hash, totals_workbook
from tests.security.conftest import PASSWORD, Actors, auth
from tests.security.conftest import actors as actors  # the real app, admin/eve/bob

ROLE = "CONNECTOR"
"""A role allowed to define connections, held by every non-ADMIN actor here."""
IMP = "/Users/bob/orders.imp"
WBK = "/Users/bob/totals.wbk"
EXP = "/Users/bob/totals.exp"


@dataclass
class World:
    """The actors, bob's three jobs (import -> workbook -> export) and helpers."""

    actors: Actors
    configs: dict[str, int] = field(default_factory=dict)
    files: dict[str, int] = field(default_factory=dict)
    uuids: dict[str, str] = field(default_factory=dict)
    registered: bool = False

    def send(
        self, user: str, method: str, path: str, body: bytes | None = None, **headers: str
    ) -> httpx.Response:
        """One request exactly as given: the path is not re-encoded, the body not re-serialised."""
        # A whole URL, as the clients build it: "//license/..." alone would name a host.
        return self.actors.client.request(
            method, f"http://testserver{path}", content=body, headers={**auth(user), **headers}
        )

    def user(self, name: str) -> User:
        """A user as stored."""
        with self.actors.node.store.db.read() as conn:
            found = self.actors.node.store.users.get(conn, name)
        assert found is not None
        return found

    def define(self, path: str, definition: dict[str, Any], owner: str = "bob") -> int:
        """Define a job owned by `owner`; readable by the group readers; its configuration id."""
        node = self.actors.node
        kind = {".imp": JobKind.IMPORT, ".wbk": JobKind.WORKBOOK, ".exp": JobKind.EXPORT}
        entry, config = node.jobs.define_job(path, kind[path[-4:]], definition, owner)
        with node.store.db.write() as conn:
            node.store.files.set_group_flags(
                conn, entry.id, "readers", readable=True, writable=False, executable=False
            )
        self.configs[path], self.files[path], self.uuids[path] = config.id, entry.id, entry.uuid
        return config.id

    def trigger(self, path: str) -> int:
        """Queue a run of one of the jobs (as admin); its execution id."""
        node = self.actors.node
        return node.jobs.trigger(ByConfiguration(self.configs[path]), self.user("admin")).id

    def start(self, execution_id: int) -> None:
        """Claim the oldest queued run, which must be `execution_id`: it is RUNNING now."""
        queue = self.actors.node.store.queue
        if not self.registered:
            queue.register_worker("w", "host", os.getpid())
            self.registered = True
        claimed = queue.claim_next_execution("w")
        assert claimed is not None and claimed.id == execution_id

    def finish(self, execution_id: int, status: JobStatus, **outcome: Any) -> None:
        """End a RUNNING run as a worker would report it."""
        node = self.actors.node
        with node.store.db.read() as conn:
            execution = ex.get_execution(conn, execution_id)
        assert node.store.queue.finish(execution, "w", Outcome(status, **outcome))

    def run(self, path: str, status: JobStatus, **outcome: Any) -> int:
        """Trigger, start and finish a run; its execution id."""
        execution_id = self.trigger(path)
        self.start(execution_id)
        self.finish(execution_id, status, **outcome)
        return execution_id


@pytest.fixture
def world(actors: Actors) -> World:
    """admin, bob (owner), rita (reader), sam (stranger) and bob's import, workbook, export."""
    users = actors.node.store.users
    with actors.node.store.db.write() as conn:
        conn.execute(t.roles.insert().values(name=ROLE, capabilities=["connection.define"]))
    users.create("rita", password_hash(PASSWORD), roles=("ANALYST", ROLE), groups=("readers",))
    users.create("sam", password_hash(PASSWORD), roles=("ANALYST", ROLE))
    world = World(actors)
    world.define(IMP, orders_import(actors.node.settings.home / "orders.csv"))
    world.define(WBK, totals_workbook(IMP))
    world.define(
        EXP,
        {
            "source": {"workbook": WBK, "sheet": "totals"},
            "sink": {"kind": "csv", "path": str(actors.node.settings.home / "out.csv")},
        },
    )
    return world
