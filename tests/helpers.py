"""Small helpers shared by tests: waiting for runs, defining demo-like jobs."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from argon2 import PasswordHasher
from sqlalchemy.engine import Connection

from datamill.bootstrap import Node
from datamill.domain.records import Execution, User
from datamill.domain.status import JobKind, JobStatus
from datamill.processes import pid_alive
from datamill.store import executions as ex

_CHEAP_HASHER = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1)


@functools.cache
def password_hash(password: str) -> str:
    """A real argon2 hash at a low cost, so the many logins of a test run stay fast.

    The server verifies with the parameters stored in the hash, exactly as it
    does for the hashes it makes itself at the full cost.
    """
    return _CHEAP_HASHER.hash(password)


def admin(node: Node) -> User:
    """The 'admin' user created by the node fixture."""
    with node.store.db.read() as conn:
        user = node.store.users.get(conn, "admin")
    assert user is not None
    return user


def execution(node: Node, execution_id: int) -> Execution:
    """The execution as stored now."""
    with node.store.db.read() as conn:
        return ex.get_execution(conn, execution_id)


def wait_for(
    node: Node, execution_id: int, statuses: set[JobStatus], timeout: float = 60.0
) -> Execution:
    """Poll until the execution reaches one of `statuses`."""
    deadline = time.monotonic() + timeout
    while True:
        current = execution(node, execution_id)
        if current.status in statuses:
            return current
        if time.monotonic() > deadline:
            raise AssertionError(
                f"execution {execution_id} still {current.status} after {timeout}s"
            )
        time.sleep(0.05)


def wait_terminal(node: Node, execution_id: int, timeout: float = 60.0) -> Execution:
    """Poll until the execution has ended."""
    terminal = {s for s in JobStatus if s.is_terminal}
    return wait_for(node, execution_id, terminal, timeout)


def write_orders_csv(folder: Path, rows: int = 50, bad_rows: int = 0) -> Path:
    """orders.csv with `rows` good records and `bad_rows` records whose amount is not a number."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["order_id,region,amount"]
    regions = ["north", "south", "east"]
    for i in range(1, rows + 1):
        lines.append(f"{i},{regions[i % 3]},{i * 10}")
    for j in range(bad_rows):
        lines.append(f"{rows + j + 1},west,not-a-number")
    path = folder / "orders.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def orders_import(path: Path) -> dict[str, Any]:
    """An import job definition for write_orders_csv's file."""
    return {
        "source": {"kind": "csv", "path": str(path)},
        "schema": [
            {"name": "order_id", "type": "BIGINT"},
            {"name": "region", "type": "VARCHAR"},
            {"name": "amount", "type": "DOUBLE"},
        ],
        "errorMode": "DROP_RECORD",
    }


def totals_workbook(import_path: str, sql: str | None = None) -> dict[str, Any]:
    """A workbook that sums amounts per region above ${min_amount}."""
    return {
        "variables": {"min_amount": {"type": "DOUBLE", "default": 0}},
        "sheets": [
            {"kind": "data", "name": "orders", "source": {"importJob": import_path}},
            {
                "kind": "sql",
                "name": "totals",
                "keep": True,
                "sql": sql
                or "SELECT region, count(*) AS n, sum(amount) AS total FROM orders "
                "WHERE amount >= ${min_amount} GROUP BY region ORDER BY region",
            },
        ],
    }


def define(node: Node, path: str, definition: dict[str, Any]) -> int:
    """Define a job owned by admin; returns its file id."""
    kind = {".imp": JobKind.IMPORT, ".wbk": JobKind.WORKBOOK, ".exp": JobKind.EXPORT}[path[-4:]]
    entry, _ = node.jobs.define_job(path, kind, definition, "admin")
    return entry.id


def config_id(node: Node, path: str) -> int:
    """The configuration id of the job file at `path` (read from the store)."""
    with node.store.db.read() as conn:
        entry = node.store.files.find(conn, path)
        assert entry is not None, path
        config = node.store.jobs.for_file(conn, entry.id)
    assert config is not None, path
    return config.id


def a_dead_pid() -> int:
    """A process id no process on this host has (one of another user counts as taken)."""
    pid = 999_999
    while pid_alive(pid):
        pid -= 1
    return pid


def pg_sessions(node: Node, condition: str) -> int:
    """How many sessions of the test's PostgreSQL database meet `condition` (pg_stat_activity)."""
    with node.store.db.read() as conn:
        found = conn.execute(
            sa.text(
                "SELECT count(*) FROM pg_stat_activity"
                f" WHERE datname = current_database() AND {condition}"
            )
        ).scalar_one()
    return int(found)


def race_an_open_transaction(
    node: Node,
    first: Callable[[Connection], None],
    other: Callable[[], None],
    waiters: int = 1,
) -> list[Exception]:
    """Run `other` while another transaction has done `first` and not yet committed.

    `other` starts once `first` is done; that transaction commits once `other`
    waits for one of its locks (with `waiters`, once that many sessions wait
    for a lock) or has ended. Returns what `other` raised.
    """
    raised: list[Exception] = []

    def run() -> None:
        try:
            other()
        except Exception as error:  # handed to the test thread, which asserts on it
            raised.append(error)

    thread = threading.Thread(target=run)
    with node.store.db.write() as conn:
        first(conn)
        thread.start()
        for _ in range(3000):  # until it waits on our lock, or never did and ended
            waiting = pg_sessions(node, "wait_event_type = 'Lock'")
            if waiting >= waiters or not thread.is_alive():
                break
            time.sleep(0.01)
    thread.join(60)
    assert not thread.is_alive()
    return raised
