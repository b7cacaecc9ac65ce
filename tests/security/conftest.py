"""A multi-user world for attack regression tests: admin, two analysts, a server.

Every test here plays a hostile analyst (`eve`) against another user's data
(`admin`'s or `bob`'s) on both metadata backends, through the real HTTP API
and, where a run is involved, the real worker and engine.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from datamill.api.app import create_app
from datamill.bootstrap import Node
from datamill.worker.worker import Worker
from tests.acceptance.conftest import start_server as start_server  # a real server, as a fixture
from tests.helpers import password_hash

PASSWORD = "pw"


def auth(name: str, password: str = PASSWORD) -> dict[str, str]:
    """Basic credentials of one user."""
    token = base64.b64encode(f"{name}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@dataclass
class Actors:
    """The server and who uses it: `admin` (ADMIN), `eve` and `bob` (ANALYST)."""

    node: Node
    client: TestClient

    def call(self, user: str, method: str, url: str, body: Any = None) -> httpx.Response:
        """One request as `user`; a body is sent as JSON."""
        return self.client.request(method, url, headers=auth(user), json=body)


@pytest.fixture
def actors(node: Node) -> Iterator[Actors]:
    """admin (password 'pw' as well), eve and bob, and a client of the real app."""
    users = node.store.users
    users.create("eve", password_hash(PASSWORD))
    users.create("bob", password_hash(PASSWORD))
    users.set_password_hash("admin", password_hash(PASSWORD))
    with TestClient(create_app(node.settings, node.jobs)) as client:
        yield Actors(node, client)


@pytest.fixture
def running(actors: Actors, worker: Worker) -> Actors:
    """The same world with an embedded worker running jobs."""
    return actors
