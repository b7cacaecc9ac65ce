"""Shared pieces of the benchmarks: servers in subprocesses, databases, timing, reporting.

Every benchmark prints its figures next to a baseline measured in the same run,
because the machine (2 cores) may be busy with other work: the ratio is what
stays comparable between runs, the absolute figures are what the targets name.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import os
import platform
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import psycopg

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
DATAMILL = [PYTHON, "-m", "datamill.cli.main"]
ADMIN = ("admin", "admin")
POSTGRES_URL = os.environ.get(
    "DATAMILL_BENCH_POSTGRES_URL",
    os.environ.get(
        "DATAMILL_TEST_POSTGRES_URL",
        "postgresql+psycopg://postgres:postgres@127.0.0.1:5432/postgres",
    ),
)
TERMINAL = ("COMPLETED", "COMPLETED_WITH_WARNINGS", "ERROR", "CANCELED")
TRIVIAL_SQL = "SELECT 1 AS one"


# ---------------------------------------------------------------- command line


def parse_args(description: str, extra: Sequence[tuple[str, dict[str, Any]]] = ()) -> Any:
    """The common `--quick` flag plus any extra options."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="small sizes, under a minute")
    for name, options in extra:
        parser.add_argument(name, **options)
    return parser.parse_args()


# ---------------------------------------------------------------- statistics


def percentile(values: Sequence[float], fraction: float) -> float:
    """The `fraction` quantile (0..1), nearest-rank on the sorted values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(fraction * (len(ordered) - 1))))
    return ordered[rank]


def median(values: Sequence[float]) -> float:
    """The median, NaN for no values."""
    return statistics.median(values) if values else float("nan")


def ms(seconds: float) -> str:
    """Seconds as milliseconds with two decimals."""
    return f"{seconds * 1000:.2f} ms"


# ---------------------------------------------------------------- reporting


def machine() -> str:
    """CPU model, cores and memory of this machine, on one line."""
    model = platform.processor() or "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory = "?"
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{model}; nproc {os.cpu_count()}; memory {memory}; load average {load}"


def header(name: str, quick: bool) -> None:
    """The first lines of a benchmark's output."""
    now = dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    print(f"== {name} ({'quick' if quick else 'full'} run, {now})")
    print(f"machine: {machine()}")
    print(f"command: {' '.join([Path(PYTHON).name, *sys.argv])}")
    print(flush=True)


@dataclasses.dataclass
class Result:
    """One line of the summary: a figure, its baseline and target."""

    name: str
    value: float
    unit: str
    baseline: float | None
    baseline_name: str
    target: str
    met: bool | None

    def line(self) -> str:
        """The figure, baseline, ratio, target and verdict on one line."""
        ratio = (
            f"{self.value / self.baseline:.2f}x"
            if self.baseline not in (None, 0) and self.baseline == self.baseline
            else "-"
        )
        base = f"{_num(self.baseline)} {self.unit}" if self.baseline is not None else "-"
        verdict = {True: "MET", False: "MISSED", None: "info"}[self.met]
        return (
            f"{self.name:<44} {_num(self.value):>10} {self.unit:<6} | baseline "
            f"({self.baseline_name}) {base} | ratio {ratio} | target {self.target} | {verdict}"
        )


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.2f}"


def summary(results: Sequence[Result]) -> None:
    """Print the summary table."""
    print("\nsummary:")
    for result in results:
        print("  " + result.line())
    sys.stdout.flush()


# ---------------------------------------------------------------- servers


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclasses.dataclass
class Server:
    """A `datamill serve` subprocess and how to reach it."""

    base: str
    home: Path
    database_url: str
    process: subprocess.Popen[bytes]
    log: Path

    def client(self, **options: Any) -> httpx.Client:
        """An HTTP client with the admin's credentials and keep-alive."""
        return httpx.Client(base_url=self.base, auth=ADMIN, timeout=120, **options)


@contextlib.contextmanager
def serve(home: Path, database_url: str | None = None, **settings: str) -> Iterator[Server]:
    """Run `datamill serve` on a free port like the acceptance tests do; SIGTERM it after.

    `settings` become DATAMILL_<NAME> variables. The admin's password is 'admin'.
    """
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATAMILL_")}
    env.update(
        DATAMILL_HOME=str(home),
        DATAMILL_PORT=str(port),
        DATAMILL_ADMIN_PASSWORD="admin",
    )
    if database_url:
        env["DATAMILL_DATABASE_URL"] = database_url
    env.update({f"DATAMILL_{k.upper()}": v for k, v in settings.items()})
    home.mkdir(parents=True, exist_ok=True)
    log = home.parent / f"{home.name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen([*DATAMILL, "serve"], env=env, stdout=out, stderr=out)
    base = f"http://127.0.0.1:{port}"
    server = Server(
        base, home, database_url or f"sqlite:///{home.resolve() / 'datamill.db'}", process, log
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"datamill serve did not start:\n{log.read_text()}")
            time.sleep(0.05)
        yield server
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_warm(server: Server, children: int = 2, timeout: float = 60.0) -> None:
    """Wait until the embedded worker's warm child processes have imported the engine.

    The worker runs in a child process of the server and the warm children
    are its own (worker/supervisor.py); either way they are the spawned
    descendants that have no spawned children themselves.
    """
    import psutil

    deadline = time.monotonic() + timeout
    parent = psutil.Process(server.process.pid)
    while time.monotonic() < deadline:
        # Forked by the worker's fork server, so grandchildren; named by the horse.
        horses = [p for p in parent.children(recursive=True) if p.name() == "datamill-horse"]
        if len(horses) >= children and all(p.cpu_percent(0.2) < 5 for p in horses):
            return
        time.sleep(0.2)


def worker_child(server: Server) -> int | None:
    """The pid of the server's embedded worker child (named so by itself)."""
    import psutil

    for child in psutil.Process(server.process.pid).children():
        with contextlib.suppress(psutil.Error):
            if child.name() == "datamill-worker":
                return int(child.pid)
    return None


@contextlib.contextmanager
def scratch(prefix: str) -> Iterator[Path]:
    """A temporary folder, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix=f"datamill-bench-{prefix}-") as folder:
        yield Path(folder)


# ---------------------------------------------------------------- PostgreSQL


def postgres_available() -> bool:
    """Whether the benchmark PostgreSQL answers."""
    try:
        with psycopg.connect(libpq(POSTGRES_URL), connect_timeout=3):
            return True
    except psycopg.Error:
        return False


def libpq(url: str) -> str:
    """A libpq URL from a SQLAlchemy one."""
    return "postgresql://" + url.split("://", 1)[1]


@contextlib.contextmanager
def postgres_database(prefix: str) -> Iterator[str]:
    """A fresh PostgreSQL database (SQLAlchemy URL), dropped afterwards."""
    name = f"datamill_bench_{prefix}_{uuid.uuid4().hex[:8]}"
    admin = libpq(POSTGRES_URL)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = POSTGRES_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# ---------------------------------------------------------------- jobs over HTTP


def trivial_workbook(path: str, sql: str = TRIVIAL_SQL) -> dict[str, Any]:
    """A workbook document with one kept SQL sheet."""
    return {
        "path": path,
        "triggering": {"mode": "MANUAL"},
        "sheets": [{"kind": "sql", "name": "out", "keep": True, "sql": sql}],
    }


def define(client: httpx.Client, kind: str, document: dict[str, Any]) -> int:
    """Create a job over HTTP (kind: import-job, workbook, export-job); its configuration id."""
    response = client.post(f"/rest/{kind}", json=document)
    response.raise_for_status()
    config_id: int = response.json()["configuration-id"]
    return config_id


def trigger(client: httpx.Client, path: str, key: str | None = None) -> int:
    """Trigger a job by path (with an Idempotency-Key if given); the new execution id."""
    headers = {"Idempotency-Key": key} if key is not None else None
    response = client.post(f"/api/job-execution{path}/trigger", headers=headers)
    response.raise_for_status()
    execution_id: int = response.json()["job-execution-id"]
    return execution_id


# ---------------------------------------------------------------- reading the store


@dataclasses.dataclass(frozen=True)
class Times:
    """An execution's status and times from the store, as epoch seconds (UTC wall clock)."""

    status: str
    created: float
    started: float | None
    finished: float | None
    records: int = 0


def _epoch(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    stamp: float = value.replace(tzinfo=dt.UTC).timestamp()
    return stamp


class StoreReader:
    """Reads execution rows straight from the metadata database (read-only use).

    The server writes started_at/finished_at with datetime.now(UTC), the same
    CLOCK_REALTIME that time.time() reads here, on the same host.
    """

    def __init__(self, database_url: str) -> None:
        self.is_sqlite = database_url.startswith("sqlite")
        if self.is_sqlite:
            path = database_url.split(":///", 1)[1]
            self._sqlite = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        else:
            self._pg = psycopg.connect(libpq(database_url), autocommit=True)

    def _rows(self, sql: str, params: Sequence[Any]) -> list[Any]:
        if self.is_sqlite:
            return self._sqlite.execute(sql, params).fetchall()
        return self._pg.execute(sql.replace("?", "%s"), params).fetchall()

    def times(self, execution_ids: Sequence[int]) -> dict[int, Times]:
        """Status and times of these executions."""
        found: dict[int, Times] = {}
        for start in range(0, len(execution_ids), 500):
            chunk = list(execution_ids[start : start + 500])
            marks = ",".join("?" * len(chunk))
            for row in self._rows(
                "SELECT id, status, created_at, started_at, finished_at, success_count "
                "FROM executions "
                f"WHERE id IN ({marks})",
                chunk,
            ):
                found[row[0]] = Times(
                    row[1], _epoch(row[2]) or 0.0, _epoch(row[3]), _epoch(row[4]), int(row[5])
                )
        return found

    def status(self, execution_id: int) -> str:
        """The status of one execution."""
        rows = self._rows("SELECT status FROM executions WHERE id = ?", [execution_id])
        return str(rows[0][0]) if rows else "?"

    def error(self, execution_id: int) -> str:
        """The error message of one execution, '' if none."""
        rows = self._rows("SELECT error_message FROM executions WHERE id = ?", [execution_id])
        return str(rows[0][0] or "") if rows else ""

    def file_ids(self, path: str) -> tuple[int, str]:
        """The id and uuid of the file at `path`."""
        rows = self._rows("SELECT id, uuid FROM files WHERE path = ?", [path])
        if not rows:
            raise LookupError(f"no file {path}")
        return int(rows[0][0]), str(rows[0][1])

    def count_terminal(self, first_id: int, last_id: int) -> int:
        """How many executions with ids in [first_id, last_id] have ended."""
        marks = ",".join("?" * len(TERMINAL))
        rows = self._rows(
            f"SELECT count(*) FROM executions WHERE id BETWEEN ? AND ? AND status IN ({marks})",
            [first_id, last_id, *TERMINAL],
        )
        return int(rows[0][0])

    def wait_terminal(self, execution_id: int, timeout: float = 120.0, pause: float = 0.001) -> str:
        """Poll until the execution has ended; its status."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.status(execution_id)
            if status in TERMINAL:
                return status
            if time.monotonic() > deadline:
                raise TimeoutError(f"execution {execution_id} still {status} after {timeout}s")
            time.sleep(pause)

    def close(self) -> None:
        """Close the connection."""
        if self.is_sqlite:
            self._sqlite.close()
        else:
            self._pg.close()


# ---------------------------------------------------------------- standalone workers


@dataclasses.dataclass
class WorkerProcess:
    """A `datamill worker` subprocess and when it was started (time.time())."""

    home: Path
    process: subprocess.Popen[bytes]
    log: Path
    started: float


@contextlib.contextmanager
def run_worker(
    home: Path, database_url: str | None = None, **settings: str
) -> Iterator[WorkerProcess]:
    """Run `datamill worker` on this home (and database); SIGTERM it after.

    Environment as `serve` builds it (`settings` become DATAMILL_<NAME>). Returns
    at once: the worker registers, spawns its warm children and starts
    claiming on its own time.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATAMILL_")}
    env["DATAMILL_HOME"] = str(home)
    if database_url:
        env["DATAMILL_DATABASE_URL"] = database_url
    env.update({f"DATAMILL_{k.upper()}": v for k, v in settings.items()})
    log = home.parent / f"{home.name}-worker.log"
    with log.open("wb") as out:
        started = time.time()
        process = subprocess.Popen([*DATAMILL, "worker"], env=env, stdout=out, stderr=out)
    try:
        yield WorkerProcess(home, process, log, started)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
