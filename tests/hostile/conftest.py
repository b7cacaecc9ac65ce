"""Real `datamill serve` and `datamill worker` processes on one home and database.

Unlike tests/acceptance's start_server, a process here can be killed with
SIGKILL and started again on the same home and database, which is what the
crash, load and outage tests need. The `node` fixture's store (same home,
same database) is the test's window on what the processes did.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from sqlalchemy.engine import make_url

from datamill.bootstrap import Node
from datamill.services.wakeup import libpq_conninfo

DATAMILL = [sys.executable, "-m", "datamill.cli.main"]
AUTH = ("admin", "secret")  # the node fixture's admin
# What worker.py logs when it returns a running execution to the queue: at a
# graceful shutdown, or when the store failed while it prepared the run.
_RUNNING = re.compile(r"^Datamill worker \S+ running$", re.MULTILINE)
_HANDED_BACK = re.compile(r"execution (\d+) handed back[: ]")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclasses.dataclass
class Proc:
    """One started process: what it is, its handle and its log."""

    kind: str  # "serve" or "worker"
    process: subprocess.Popen[bytes]
    log: Path
    base: str = ""  # the server's URL; empty for workers

    @property
    def alive(self) -> bool:
        """Whether the process still runs."""
        return self.process.poll() is None


class Cluster:
    """Starts, kills and restarts Datamill processes sharing the node's home and database."""

    def __init__(self, node: Node, log_dir: Path, **extra_env: str) -> None:
        settings = node.settings
        self.env = dict(
            os.environ,
            DATAMILL_HOME=str(settings.resolved_home),
            DATAMILL_DATABASE_URL=settings.resolved_database_url,
            DATAMILL_HEARTBEAT_SECONDS="0.2",
            DATAMILL_WORKER_LOST_SECONDS="2",
            DATAMILL_POLL_SECONDS="0.2",
            DATAMILL_SHUTDOWN_GRACE_SECONDS="0.5",
            DATAMILL_STOP_WAIT_SECONDS="20",
            DATAMILL_ENGINE_MEMORY_LIMIT="256MB",
            DATAMILL_ENGINE_THREADS="1",
            DATAMILL_CONCURRENCY="2",
            # Lost runs end in ERROR, as the crash tests expect; test_retries.py
            # turns retries on.
            DATAMILL_RUN_RETRIES="0",
        )
        self.env.pop("DATAMILL_ADMIN_PASSWORD", None)
        self.env.update(extra_env)
        self._log_dir = log_dir
        self.procs: list[Proc] = []

    def _log(self, kind: str) -> Path:
        return self._log_dir / f"{kind}-{len(self.procs)}.log"

    def serve(self, timeout: float = 60.0, *, new_session: bool = False) -> Proc:
        """Start `datamill serve` on a free port; return once /health answers.

        `new_session`: in a process group of its own, as a terminal runs it.
        """
        port = free_port()
        log = self._log("serve")
        with log.open("w") as out:
            process = subprocess.Popen(
                [*DATAMILL, "serve", "--port", str(port)],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=new_session,
            )
        proc = Proc("serve", process, log, f"http://127.0.0.1:{port}")
        self.procs.append(proc)
        deadline = time.monotonic() + timeout
        while True:
            try:
                up = httpx.get(f"{proc.base}/health", timeout=1).status_code == 200
            except httpx.TransportError:  # not listening yet
                up = False
            if up:
                return proc
            if not proc.alive or time.monotonic() > deadline:
                raise AssertionError(f"the server did not come up:\n{log.read_text()}")
            time.sleep(0.05)

    def worker(self, timeout: float = 60.0) -> Proc:
        """Start one `datamill worker`; return once it runs (and so handles SIGTERM)."""
        log = self._log("worker")
        with log.open("w") as out:
            process = subprocess.Popen(
                [*DATAMILL, "worker"], env=self.env, stdout=out, stderr=subprocess.STDOUT
            )
        proc = Proc("worker", process, log)
        self.procs.append(proc)
        deadline = time.monotonic() + timeout
        while not _RUNNING.search(log.read_text(errors="replace")):
            if not proc.alive or time.monotonic() > deadline:
                raise AssertionError(f"the worker did not come up:\n{log.read_text()}")
            time.sleep(0.05)
        return proc

    def kill9(self, proc: Proc) -> None:
        """SIGKILL: no handler runs, nothing is handed back or unregistered."""
        if proc.alive:
            proc.process.send_signal(signal.SIGKILL)
        proc.process.wait(timeout=30)

    def stop(self, proc: Proc) -> int:
        """SIGTERM and wait; returns the exit code."""
        if proc.alive:
            proc.process.send_signal(signal.SIGTERM)
        try:
            return proc.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.process.kill()
            proc.process.wait()
            raise

    def stop_all(self) -> None:
        """SIGTERM every process still running, then wait for each."""
        for proc in self.procs:
            if proc.alive:
                proc.process.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.process.kill()
                proc.process.wait()

    def handed_back(self) -> dict[int, int]:
        """How often each execution was handed back to the queue, from the process logs."""
        counts: dict[int, int] = {}
        for proc in self.procs:
            text = proc.log.read_text(errors="replace") if proc.log.exists() else ""
            for match in _HANDED_BACK.finditer(text):
                counts[int(match[1])] = counts.get(int(match[1]), 0) + 1
        return counts

    def logs(self) -> str:
        """The tail of every process log, for failure messages."""
        parts = []
        for proc in self.procs:
            text = proc.log.read_text(errors="replace") if proc.log.exists() else ""
            parts.append(f"--- {proc.log.name}\n{text[-3000:]}")
        return "\n".join(parts)


@pytest.fixture
def cluster(node: Node, tmp_path: Path) -> Iterator[Cluster]:
    """Process control on the node's home and database; everything is stopped after."""
    logs = tmp_path / "logs"
    logs.mkdir()
    started = Cluster(node, logs)
    yield started
    started.stop_all()


def libpq(node: Node) -> str:
    """A libpq connection string for the node's PostgreSQL database."""
    return libpq_conninfo(node.store.db.url)


def database_name(node: Node) -> str:
    """The name of the node's PostgreSQL database."""
    name = make_url(node.store.db.url).database
    assert name
    return name


def wait_for_blocked_backend(node: Node, query_prefix: str, timeout: float = 15.0) -> int:
    """The pid of the node database's backend waiting on a lock in a statement so beginning."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(libpq(node), autocommit=True) as conn:
        while True:
            row = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock' AND query ILIKE %s",
                (query_prefix + "%",),
            ).fetchone()
            if row is not None:
                return int(row[0])
            if time.monotonic() > deadline:
                activity = conn.execute(
                    "SELECT pid, state, wait_event_type, wait_event, left(query, 120) "
                    "FROM pg_stat_activity WHERE datname = current_database()"
                ).fetchall()
                pytest.fail(f"no backend blocked in {query_prefix!r} after {timeout}s: {activity}")
            time.sleep(0.02)


def terminate_backends(node: Node, pids: list[int] | None = None) -> int:
    """pg_terminate_backend on the given backends, or on every other one of the node's database."""
    with psycopg.connect(libpq(node), autocommit=True) as conn:
        if pids is None:
            rows = conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).fetchall()
        else:
            rows = conn.execute(
                "SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", (pids,)
            ).fetchall()
    return sum(1 for (ok,) in rows if ok)


_GATE_KEY = 4242


@contextlib.contextmanager
def finish_gate(node: Node) -> Iterator[None]:
    """Hold every execution that leaves RUNNING at its status UPDATE, until the block ends.

    A trigger in the test's own database makes that UPDATE wait for an advisory
    lock the test holds. The worker runs its real code up to that statement: in
    ExecutionQueue.finish that is after the data folder was moved into place and
    before the commit, the window a crash or a lost connection must survive.
    Progress and heartbeat updates do not change the status and pass freely.
    """
    with psycopg.connect(libpq(node), autocommit=True) as conn:
        conn.execute(
            "CREATE OR REPLACE FUNCTION hostile_finish_gate() RETURNS trigger "
            "LANGUAGE plpgsql AS $$ BEGIN "
            f"PERFORM pg_advisory_xact_lock_shared({_GATE_KEY}); RETURN NEW; END $$"
        )
        conn.execute(
            "CREATE OR REPLACE TRIGGER hostile_finish_gate BEFORE UPDATE OF status "
            "ON executions FOR EACH ROW "
            "WHEN (OLD.status = 'RUNNING' AND NEW.status <> 'RUNNING') "
            "EXECUTE FUNCTION hostile_finish_gate()"
        )
        conn.execute("SELECT pg_advisory_lock(%s)", (_GATE_KEY,))
        try:
            yield
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_GATE_KEY,))
            conn.execute("DROP TRIGGER hostile_finish_gate ON executions")


def fail_setup(what: str) -> contextlib.AbstractContextManager[None]:
    """Turn an AssertionError of a preparation step into a failure that names the step.

    A test marked xfail(raises=AssertionError) wraps its set-up in it, so that
    only its final check, never a broken set-up, can count as the expected failure.
    """

    @contextlib.contextmanager
    def step() -> Iterator[None]:
        try:
            yield
        except AssertionError as error:
            pytest.fail(f"{what} failed: {error}")

    return step()
