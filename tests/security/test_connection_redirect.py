"""A connection's stored password stays with the server it was given for.

Reads show the password masked, and sending the mask back keeps the stored
one. A user who may change someone else's connection (WRITE on it and the
capability connection.define) must not be able to point it at a server of
their own and keep the password: the next run would hand it to that server.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from datamill.store import locations as loc_store
from tests.helpers import wait_terminal
from tests.security.conftest import Actors

SECRET = "wh-Pa55word"
ANOTHER_SERVER = (
    "password: the connection now names another server (driver, host, port or options);"
    " give its password again"
)


class PasswordTrap:
    """A fake PostgreSQL server that asks for a clear-text password and keeps it."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(30)
        self.port = self.server.getsockname()[1]
        self.passwords: list[str] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _read(self, conn: socket.socket, count: int) -> bytes:
        data = b""
        while len(data) < count:
            chunk = conn.recv(count - len(data))
            if not chunk:
                raise ConnectionError("closed")
            data += chunk
        return data

    def _serve(self) -> None:
        try:
            conn, _ = self.server.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(10)
            try:
                length, code = struct.unpack("!ii", self._read(conn, 8))
                if code in (80877103, 80877104):  # SSLRequest, GSSENCRequest: refuse
                    conn.sendall(b"N")
                    length, code = struct.unpack("!ii", self._read(conn, 8))
                self._read(conn, length - 8)  # the startup parameters
                conn.sendall(b"R" + struct.pack("!ii", 8, 3))  # AuthenticationCleartextPassword
                kind, size = struct.unpack("!ci", self._read(conn, 5))
                if kind == b"p":
                    self.passwords.append(self._read(conn, size - 4).rstrip(b"\0").decode())
            except (OSError, ConnectionError, struct.error):
                return

    def close(self) -> None:
        self.server.close()


@pytest.fixture
def trap() -> Iterator[PasswordTrap]:
    found = PasswordTrap()
    yield found
    found.close()


def _editor(actors: Actors) -> None:
    """eve may define connections (Datameer's CONNECTION_EDIT) besides being an ANALYST."""
    role = {"name": "connection-editor", "capabilities": ["CONNECTION_EDIT"]}
    made = actors.call("admin", "POST", "/rest/user-management/roles", role)
    assert made.status_code == 200, made.text
    roles = {"roles": ["ANALYST", "connection-editor"]}
    changed = actors.call("admin", "PUT", "/rest/user-management/users/eve", roles)
    assert changed.status_code == 200, changed.text


def _shared_connection(actors: Actors) -> int:
    """admin's warehouse connection, which everyone may read and change."""
    url = f"postgresql://reader:{SECRET}@192.0.2.1:5432/warehouse"
    made = actors.call(
        "admin", "POST", "/rest/connection", {"path": "/Connections/wh.dst", "url": url}
    )
    assert made.status_code == 200, made.text
    entry = int(made.json()["id"])
    # The password is kept apart, never in the stored URL.
    assert SECRET not in _stored(actors, entry).url
    flags = {"readable": True, "writable": True}
    others = actors.call("admin", "PUT", f"/api/filesystem/files/{entry}/permission/others", flags)
    assert others.status_code == 200, others.text
    return entry


def _stored(actors: Actors, entry: int) -> Any:
    with actors.node.store.db.read() as conn:
        return loc_store.get_connection(conn, entry)


def test_a_masked_password_is_not_kept_for_another_server(
    running: Actors, trap: PasswordTrap
) -> None:
    _editor(running)
    entry = _shared_connection(running)
    shown = running.call("eve", "GET", f"/rest/connection/{entry}").json()
    assert shown["password"] == "********"
    # eve keeps everything she was shown but the host: her own "database".
    moved = {**shown, "url": f"postgresql://reader:***@127.0.0.1:{trap.port}/warehouse"}
    answer = running.call("eve", "PUT", f"/rest/connection/{entry}", moved)
    assert answer.status_code == 400, answer.text
    assert "password" in answer.json()["reason"] and SECRET not in answer.text
    # Datameer's shape, the mask in `password`, is refused alike.
    datameer = running.call("eve", "GET", f"/rest/connections/{entry}").json()
    datameer["properties"]["key.connectionUrl"] = [f"postgresql://127.0.0.1:{trap.port}/warehouse"]
    answer = running.call("eve", "PUT", f"/rest/connections/{entry}", datameer)
    assert answer.status_code == 400, answer.text
    stored = _stored(running, entry)
    assert "192.0.2.1:5432" in stored.url and stored.password == SECRET
    # So a run through the connection never reaches eve's server.
    source = {
        "path": "/Users/eve/wh.imp",
        "source": {"kind": "database", "connection": "/Connections/wh.dst", "table": "t"},
    }
    assert running.call("eve", "POST", "/rest/import-job", source).status_code == 200
    started = running.call("eve", "POST", "/api/job-execution/Users/eve/wh.imp/trigger")
    wait_terminal(running.node, started.json()["job-execution-id"])
    assert trap.passwords == []


def test_the_password_given_again_moves_the_connection(actors: Actors) -> None:
    _editor(actors)
    entry = _shared_connection(actors)
    url = "postgresql://reader@192.0.2.7:5432/warehouse"
    moved = actors.call("eve", "PUT", f"/rest/connection/{entry}", {"url": url, "password": "hers"})
    assert moved.status_code == 200, moved.text
    assert _stored(actors, entry).password == "hers"
    # The mask sent back for the same server (another database, say) keeps the password.
    same = {"url": "postgresql://reader:***@192.0.2.7:5432/other", "password": "********"}
    assert actors.call("eve", "PUT", f"/rest/connection/{entry}", same).status_code == 200
    assert _stored(actors, entry).password == "hers"
    # Another port, another user or other options of the same host are another server too.
    for url in (
        "postgresql://reader:***@192.0.2.7:6543/other",
        "postgresql://admin:***@192.0.2.7:5432/other",
        "postgresql://reader:***@192.0.2.7:5432/other?sslmode=disable",
    ):
        answer = actors.call("eve", "PUT", f"/rest/connection/{entry}", {"url": url})
        assert (answer.status_code, answer.json()["reason"]) == (400, ANOTHER_SERVER), url
    kept = _stored(actors, entry).url
    assert kept.endswith("://reader@192.0.2.7:5432/other"), kept
    # The owner, an ADMIN, is held to the same rule.
    away = {"url": "postgresql://reader:***@192.0.2.8:5432/other"}
    answer = actors.call("admin", "PUT", f"/rest/connection/{entry}", away)
    assert answer.status_code == 400 and "password" in answer.json()["reason"]
