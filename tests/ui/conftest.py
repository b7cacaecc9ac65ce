"""Four actors in front of the web UI: the owner, a reader, one without rights, ADMIN.

bob owns two jobs in his private home; carol may read them (group 'readers')
but not run them; eve may do nothing with them; admin may do everything.
Each actor has a browser-like client signed in through the sign-in form.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from datamill.api.app import create_app
from datamill.bootstrap import Node, make_private_home
from datamill.domain.status import JobKind
from tests.helpers import orders_import, password_hash, totals_workbook, write_orders_csv

PASSWORD = "pw"
ACTORS = ("bob", "carol", "eve", "admin")
IMPORT = "/Users/bob/orders.imp"
WORKBOOK = "/Users/bob/totals.wbk"
_TOKEN = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(page: httpx.Response) -> str:
    """The form token a page carries."""
    found = _TOKEN.search(page.text)
    assert found, page.text
    return found.group(1)


def sign_in(client: TestClient, name: str, password: str = PASSWORD) -> httpx.Response:
    """Fill in and send the sign-in form, as a browser does; the answer (not followed)."""
    form = client.get("/ui/sign-in")
    assert form.status_code == 200, form.text
    return client.post(
        "/ui/sign-in",
        data={"csrf": csrf_of(form), "name": name, "password": password, "next": "/ui/files"},
        follow_redirects=False,
    )


@dataclasses.dataclass
class World:
    """The node, the app, each actor's signed-in client and bob's jobs' file ids."""

    node: Node
    app: FastAPI
    clients: dict[str, TestClient]
    import_id: int
    workbook_id: int

    def get(self, actor: str, url: str) -> httpx.Response:
        """A page as `actor` sees it (redirects not followed)."""
        return self.clients[actor].get(url, follow_redirects=False)

    def post(self, actor: str, url: str, data: dict[str, str] | None = None) -> httpx.Response:
        """A form post as `actor`, with the token of `actor`'s session unless `data` has one."""
        fields = dict(data or {})
        fields.setdefault("csrf", csrf_of(self.get(actor, "/ui/files")))
        return self.clients[actor].post(url, data=fields, follow_redirects=False)


@pytest.fixture
def world(node: Node, files_root: Path) -> Iterator[World]:
    """bob's jobs, carol reading them through her group, eve outside, admin above."""
    users = node.store.users
    users.set_password_hash("admin", password_hash(PASSWORD))
    users.create("bob", password_hash(PASSWORD))
    users.create("carol", password_hash(PASSWORD), groups=("readers",))
    users.create("eve", password_hash(PASSWORD))
    make_private_home(node.store, "bob")
    csv = write_orders_csv(files_root / "users" / "bob", rows=20)
    imp, _ = node.jobs.define_job(IMPORT, JobKind.IMPORT, orders_import(csv), "bob")
    wbk, _ = node.jobs.define_job(WORKBOOK, JobKind.WORKBOOK, totals_workbook(IMPORT), "bob")
    with node.store.db.write() as conn:
        home = node.store.files.find(conn, "/Users/bob")
        assert home is not None
        for file_id in (home.id, imp.id, wbk.id):
            node.store.files.set_group_flags(
                conn, file_id, "readers", readable=True, writable=False, executable=False
            )
    app = create_app(node.settings, node.jobs)
    with ExitStack() as stack:
        clients = {}
        for name in ACTORS:
            client = stack.enter_context(TestClient(app))
            answer = sign_in(client, name)
            assert answer.status_code == 303, answer.text
            clients[name] = client
        yield World(node, app, clients, imp.id, wbk.id)
