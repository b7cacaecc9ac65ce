"""Throughput: trivial executions triggered over HTTP and completed per second, SQLite.

Trivial workbook: one kept SQL sheet `SELECT 1 AS one`. Runs of one job run
one after another, different jobs side by side. Nothing is configured but the
home (embedded SQLite, default worker settings: 2 slots, 2 GB, 2 threads).

(a) End to end over HTTP, the figure the target judges (what a user who
triggers many runs experiences). `datamill serve` (HTTP API + embedded
worker, which runs in a child process of the server), J jobs x K runs (1,000
as 40 x 25, quick 200 as 20 x 10) triggered by 8 client threads as fast as
the server accepts them while the embedded worker runs them: executions /
(last finished_at - first trigger sent); the trigger acceptance rate
(requests answered / seconds spent sending them) and the p10-p90 completion
rate are printed beside it.

(b) Worker drain, information (the favourable figure: no HTTP while the
worker works). `datamill serve --no-worker` (an API-only node) queues N
trivial executions over HTTP (8 client threads; N = 1,000 as 40 jobs x 25
runs, quick 240 as 20 x 12) while no worker runs; then `datamill worker`
starts on the same home and database and drains them. From the store's
timestamps:
- executions completed/s: N / (last finished_at - first started_at). The clock
  starts at the first claim, not when the worker process starts: its own
  start-up (interpreter, imports, registering) is left out, printed apart.
  The worker spawns its warm children when it starts and claims at once, so
  the first run of each slot waits for its child to import the engine: that
  warm-up is inside the figure (and printed apart as first claim -> first end);
- steady state: 0.8 N / (p90 - p10 of finished_at), without warm-up and tail.

(c) CPU per execution (psutil, user + system): for (b), the worker process
and its children (the warm engine processes), sampled every 50 ms and
interpolated at p10 and p90 of finished_at (the steady-state window), and
over the worker's whole life / N; for (a), from the first trigger to the last
end, the server (its own process: HTTP and store; and its embedded worker's
child process: claims, finishes, pipes to the engine) and the engine children.

(d) End to end over HTTP as (a), information: the documented two-process
deployment, `datamill serve --no-worker` (API only) beside a `datamill worker`
on the same home, so that HTTP and the worker do not share one interpreter
lock. Same jobs, runs, clients and clocks as (a); CPU counts both processes.

Baseline, measured in the same run: the engine's own work per trivial run as
the engine does it (DATAMILL_ENGINE_ISOLATION=worker, the default), in as many
processes as worker slots: each keeps one `duckdb.connect(":memory:", ...)`
with the engine's config (memory limit, threads, spill folder, no extension
autoloading, no asynchronous I/O threads) and lock-down (allowed_directories,
no external access), and per run opens a `cursor()`, turns progress
reporting on (`SET enable_progress_bar = true`, `SET enable_progress_bar_print
= false`), runs `COPY (SELECT 1 AS one) TO '<file>' (FORMAT parquet)` and
closes the cursor. Reported: runs/s summed
over the processes (each over its own wall time after its imports) and CPU
per run (process CPU time / runs).
Target: (a) >= 200 executions/s end to end, none failed.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import multiprocessing
import os
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import psutil
from common import (
    ADMIN,
    Result,
    Server,
    StoreReader,
    Times,
    WorkerProcess,
    define,
    header,
    parse_args,
    percentile,
    run_worker,
    scratch,
    serve,
    summary,
    trigger,
    trivial_workbook,
    wait_warm,
    worker_child,
)

from datamill.settings import Settings

DEFAULTS = Settings.model_fields
SLOTS: int = DEFAULTS["concurrency"].default
MEMORY_LIMIT: str = DEFAULTS["engine_memory_limit"].default
THREADS: int = DEFAULTS["engine_threads"].default
CLIENT_THREADS = 8
TARGET = 200.0


# ---------------------------------------------------------------- baseline


def _engine_loop(seconds: float, results: Any) -> None:
    """One process's loop of trivial runs as the warm engine does them; puts (runs, s, cpu s)."""
    import duckdb

    with tempfile.TemporaryDirectory() as folder:
        spill = os.path.join(folder, "spill")
        os.makedirs(spill)
        target = os.path.join(folder, "out.parquet")
        config: dict[str, str | bool | int | float | list[str]] = {
            "memory_limit": MEMORY_LIMIT,
            "threads": THREADS,
            "temp_directory": spill,
            "autoinstall_known_extensions": False,
            "autoload_known_extensions": False,
            "async_threads": 0,  # as engine/duckdb/database.py opens its databases
        }
        database = duckdb.connect(":memory:", config=config)
        database.execute("SET enable_progress_bar = true")
        database.execute("SET enable_progress_bar_print = false")
        database.execute(f"SET allowed_directories = ['{folder}']")
        database.execute("SET enable_external_access = false")
        cpu_start, started = time.process_time(), time.monotonic()
        deadline = started + seconds
        done = 0
        while time.monotonic() < deadline:
            con = database.cursor()
            con.execute("SET enable_progress_bar = true")
            con.execute("SET enable_progress_bar_print = false")
            con.execute(f"COPY (SELECT 1 AS one) TO '{target}' (FORMAT parquet)").fetchall()
            con.close()
            done += 1
        results.put((done, time.monotonic() - started, time.process_time() - cpu_start))
        database.close()


def engine_rate(seconds: float) -> tuple[float, float]:
    """Trivial engine runs per second in SLOTS processes, and CPU ms per run."""
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    processes = [
        context.Process(target=_engine_loop, args=(seconds, results)) for _ in range(SLOTS)
    ]
    for process in processes:
        process.start()
    measured = [results.get(timeout=seconds + 120) for _ in processes]
    for process in processes:
        process.join()
    rate = sum(done / wall for done, wall, _ in measured)
    cpu_ms = sum(cpu for _, _, cpu in measured) / sum(done for done, _, _ in measured) * 1000
    return rate, cpu_ms


# ---------------------------------------------------------------- helpers


def cpu_seconds(pid: int) -> tuple[float, float]:
    """CPU seconds (user + system) used so far by a process, and by its descendants."""
    parent = psutil.Process(pid)
    return sum(parent.cpu_times()[:2]), _children_cpu(parent.children(recursive=True))


def _children_cpu(children: list[psutil.Process]) -> float:
    used = 0.0
    for child in children:
        with contextlib.suppress(psutil.Error):
            used += sum(child.cpu_times()[:2])
    return used


class CpuSampler(threading.Thread):
    """Samples a process's and its descendants' CPU seconds with time.time() stamps.

    The list of descendants (a scan of /proc) is refreshed every 0.5 s only,
    to keep the sampler's own CPU use small.
    """

    def __init__(self, pid: int, every: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.process = psutil.Process(pid)
        self.every = every
        self.samples: list[tuple[float, float, float]] = []
        self._children: list[psutil.Process] = []
        self._scanned = 0.0
        self._done = threading.Event()

    def _sample(self) -> None:
        with contextlib.suppress(psutil.Error):
            if time.monotonic() - self._scanned >= 0.5:
                self._children = self.process.children(recursive=True)
                self._scanned = time.monotonic()
            own = sum(self.process.cpu_times()[:2])
            self.samples.append((time.time(), own, _children_cpu(self._children)))

    def run(self) -> None:
        """Sample until stopped."""
        while not self._done.is_set():
            self._sample()
            self._done.wait(self.every)

    def stop(self) -> None:
        """Take a last sample and end."""
        self._done.set()
        self.join()
        self._scanned = 0.0
        self._sample()

    def at(self, stamp: float) -> tuple[float, float]:
        """CPU seconds (own, children) at a moment, interpolated between samples."""
        before = max((s for s in self.samples if s[0] <= stamp), default=self.samples[0])
        after = min((s for s in self.samples if s[0] >= stamp), default=self.samples[-1])
        if after[0] <= before[0]:
            return before[1], before[2]
        share = (stamp - before[0]) / (after[0] - before[0])
        return (
            before[1] + share * (after[1] - before[1]),
            before[2] + share * (after[2] - before[2]),
        )


def define_jobs(server: Server, prefix: str, jobs: int) -> list[str]:
    """Define `jobs` trivial workbooks over HTTP; their paths."""
    paths = [f"/Analytics/Workbooks/{prefix}/wb_{i:03d}.wbk" for i in range(jobs)]
    with server.client() as client:
        for path in paths:
            define(client, "workbook", trivial_workbook(path))
    return paths


class TriggerClient:
    """One keep-alive HTTP connection that sends the admin's trigger requests.

    What `common.trigger` sends through httpx (POST, Basic credentials on
    every request, no body), on `http.client`, as a curl-based Datameer
    script would: httpx cost the load generator 1-1.5 ms of CPU per trigger
    on the same two cores as the server (docs/performance.md, tenth round).
    Any answer but 200 is an error, as `raise_for_status` made it.
    """

    def __init__(self, server: Server) -> None:
        base = urlsplit(server.base)
        self._conn = http.client.HTTPConnection(base.hostname or "127.0.0.1", base.port)
        credentials = base64.b64encode(":".join(ADMIN).encode()).decode()
        self._headers = {"Authorization": f"Basic {credentials}", "Content-Length": "0"}

    def trigger(self, path: str) -> int:
        """Trigger the job at `path`; the new execution id."""
        self._conn.request(
            "POST", quote(f"/api/job-execution{path}/trigger"), headers=self._headers
        )
        response = self._conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"trigger of {path} answered {response.status}: {body[:300]!r}")
        execution_id: int = json.loads(body)["job-execution-id"]
        return execution_id

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()


def trigger_all(server: Server, paths: list[str], per_job: int) -> tuple[list[int], float, float]:
    """Trigger each path per_job times from CLIENT_THREADS threads; ids, first send, seconds."""
    order = [path for _ in range(per_job) for path in paths]
    clients: list[TriggerClient] = []
    # One connection per thread: an http.client connection carries one request at a time.
    own = threading.local()

    def fire(index: int) -> int:
        client = getattr(own, "client", None)
        if client is None:
            client = own.client = TriggerClient(server)
            clients.append(client)
        trigger_id: int = client.trigger(order[index])
        return trigger_id

    started = time.time()
    with ThreadPoolExecutor(CLIENT_THREADS) as pool:
        ids = list(pool.map(fire, range(len(order))))
    elapsed = time.time() - started
    for client in clients:
        client.close()
    return ids, started, elapsed


def wait_all(reader: StoreReader, ids: list[int]) -> dict[int, Times]:
    """Wait until every execution has ended; their times."""
    deadline = time.monotonic() + 600
    while reader.count_terminal(min(ids), max(ids)) < len(ids):
        if time.monotonic() > deadline:
            raise TimeoutError("the executions did not finish within 10 minutes")
        time.sleep(0.05)
    return reader.times(ids)


def steady_rate(ends: list[float]) -> tuple[float, float, float]:
    """Completions/s between the 10th and 90th percentile of finish times; (rate, p10, p90)."""
    low, high = percentile(ends, 0.1), percentile(ends, 0.9)
    rate = 0.8 * len(ends) / (high - low) if high > low else float("nan")
    return rate, low, high


# ---------------------------------------------------------------- (a) end to end


def end_to_end(
    server: Server, jobs: int, per_job: int, worker: WorkerProcess | None = None
) -> dict[str, float]:
    """(a): trigger jobs x per_job runs over HTTP while the worker runs them.

    The worker is the server's embedded one, or `worker` (a `datamill worker`
    beside an API-only node, (d)); CPU counts both processes then.
    """
    pids = [server.process.pid] if worker is None else [server.process.pid, worker.process.pid]
    if worker is None:
        wait_warm(server)
    paths = define_jobs(server, "e2e", jobs)
    reader = StoreReader(server.database_url)
    with server.client() as client:
        for path in paths[:2]:  # warm-up: first login, first runs in the children
            reader.wait_terminal(trigger(client, path))
    # `datamill serve` runs its worker in a child process (worker/supervisor.py):
    # that process's own CPU is the worker's, not the engine's.
    embedded = worker_child(server) if worker is None else None
    before = _cpu(pids, embedded)
    # This process is the load generator (8 HTTP clients): on a 2-core machine its
    # CPU comes out of the server's budget, so it is printed beside the server's.
    client_before = _own_cpu()
    ids, started, triggering = trigger_all(server, paths, per_job)
    times = wait_all(reader, ids)
    client_after = _own_cpu()
    after = _cpu(pids, embedded)
    reader.close()
    ends = sorted(t.finished or 0.0 for t in times.values())
    steady, _, _ = steady_rate(ends)
    used = [(late - early) / len(ids) * 1000 for early, late in zip(before, after, strict=True)]
    return {
        "n": len(ids),
        "failed": sum(1 for t in times.values() if t.status != "COMPLETED"),
        "throughput": len(ids) / (ends[-1] - started),
        "steady": steady,
        "triggers": len(ids) / triggering,
        "cpu_server_ms": used[0] + used[2],
        "cpu_api_ms": used[0],
        "cpu_worker_ms": used[2],
        "cpu_children_ms": used[1] - used[2],
        "cpu_client_ms": (client_after - client_before) / len(ids) * 1000,
    }


def _own_cpu() -> float:
    """CPU seconds of this process (user + system) so far."""
    times = os.times()
    return times.user + times.system


def _cpu(pids: list[int], embedded: int | None) -> list[float]:
    """CPU seconds so far: the processes', their descendants', the embedded worker child's own."""
    own, descendants = (sum(x) for x in zip(*(cpu_seconds(pid) for pid in pids), strict=True))
    child = cpu_seconds(embedded)[0] if embedded is not None else 0.0
    return [own, descendants, child]


# ---------------------------------------------------------------- (b) worker drain


def drain(folder: Path, jobs: int, per_job: int) -> dict[str, float]:
    """(b): queue jobs x per_job runs on an API-only node, then let `datamill worker` drain them."""
    with serve(folder, embedded_worker="false") as server:
        paths = define_jobs(server, "drain", jobs)
        ids, _, triggering = trigger_all(server, paths, per_job)
        reader = StoreReader(server.database_url)
        queued = reader.times(ids)
        waiting = sum(1 for t in queued.values() if t.status == "QUEUED")
        if waiting != len(ids):
            raise RuntimeError(f"only {waiting} of {len(ids)} executions stayed QUEUED")
        worker: WorkerProcess
        with run_worker(server.home, server.database_url) as worker:
            sampler = CpuSampler(worker.process.pid)
            sampler.start()
            try:
                times = wait_all(reader, ids)
            finally:
                sampler.stop()
        reader.close()
    starts = sorted(t.started or 0.0 for t in times.values())
    ends = sorted(t.finished or 0.0 for t in times.values())
    steady, low, high = steady_rate(ends)
    cpu_low, cpu_high = sampler.at(low), sampler.at(high)
    steady_runs = 0.8 * len(ids)
    cpu_end = sampler.at(ends[-1])
    return {
        "n": len(ids),
        "failed": sum(1 for t in times.values() if t.status != "COMPLETED"),
        "throughput": len(ids) / (ends[-1] - starts[0]),
        "steady": steady,
        "queueing": len(ids) / triggering,
        "startup_s": starts[0] - worker.started,
        "warmup_s": ends[0] - starts[0],
        "cpu_worker_ms": (cpu_high[0] - cpu_low[0]) / steady_runs * 1000,
        "cpu_children_ms": (cpu_high[1] - cpu_low[1]) / steady_runs * 1000,
        "cpu_life_ms": (cpu_end[0] + cpu_end[1]) / len(ids) * 1000,
    }


# ---------------------------------------------------------------- main


def main() -> int:
    """Baseline, then (b) the worker drain (information), then (a) end to end (judged)."""
    args = parse_args(__doc__.splitlines()[0])
    header("throughput", args.quick)
    e2e_jobs, e2e_per_job = (20, 10) if args.quick else (40, 25)
    drain_jobs, drain_per_job = (20, 12) if args.quick else (40, 25)
    bare, bare_cpu = engine_rate(3.0 if args.quick else 10.0)
    print(
        f"baseline: warm engine work in {SLOTS} processes: {bare:.0f} trivial runs/s, "
        f"{bare_cpu:.2f} ms CPU per run",
        flush=True,
    )
    with scratch("throughput") as folder:
        b = drain(folder / "drain", drain_jobs, drain_per_job)
        print(
            f"(b) worker drain: {drain_jobs} jobs x {drain_per_job} runs = {b['n']:.0f} "
            f"executions queued at {b['queueing']:.0f}/s on `serve --no-worker` "
            f"({b['failed']:.0f} not COMPLETED)\n"
            f"    {b['throughput']:.1f}/s first claim -> last end, steady (p10-p90) "
            f"{b['steady']:.1f}/s; worker start -> first claim {b['startup_s']:.2f} s, "
            f"first claim -> first end {b['warmup_s']:.2f} s\n"
            f"(c) CPU per execution, steady state: worker process {b['cpu_worker_ms']:.2f} ms, "
            f"children (engine) {b['cpu_children_ms']:.2f} ms; whole worker life incl. "
            f"start-up {b['cpu_life_ms']:.2f} ms",
            flush=True,
        )
        with (
            serve(folder / "split", embedded_worker="false") as api_node,
            run_worker(api_node.home, api_node.database_url) as worker,
        ):
            d = end_to_end(api_node, e2e_jobs, e2e_per_job, worker)
        print(
            f"(d) end to end on `serve --no-worker` + `datamill worker` (two processes): "
            f"{d['n']:.0f} executions ({d['failed']:.0f} not COMPLETED), "
            f"{d['throughput']:.1f}/s first trigger -> last end, steady {d['steady']:.1f}/s, "
            f"triggers accepted {d['triggers']:.0f}/s; CPU per execution "
            f"{d['cpu_server_ms']:.2f} ms (API node + worker), "
            f"{d['cpu_children_ms']:.2f} ms (engine)",
            flush=True,
        )
        with serve(folder / "e2e") as server:
            a = end_to_end(server, e2e_jobs, e2e_per_job)
    # The CPU that one execution costs on this machine, load generator included.
    total_ms = a["cpu_server_ms"] + a["cpu_children_ms"] + a["cpu_client_ms"]
    cores = os.cpu_count() or 1
    print(
        f"(a) end to end: {e2e_jobs} jobs x {e2e_per_job} runs = {a['n']:.0f} executions "
        f"({a['failed']:.0f} not COMPLETED)\n"
        f"    {a['throughput']:.1f}/s first trigger -> last end, steady (p10-p90) "
        f"{a['steady']:.1f}/s, triggers accepted {a['triggers']:.0f}/s\n"
        f"    CPU per execution: server {a['cpu_server_ms']:.2f} ms (HTTP and store "
        f"{a['cpu_api_ms']:.2f} ms, its worker child {a['cpu_worker_ms']:.2f} ms), "
        f"engine children {a['cpu_children_ms']:.2f} ms; the load generator (this "
        f"process: 8 HTTP clients and the polling of the store) {a['cpu_client_ms']:.2f} ms\n"
        f"    all of it {total_ms:.2f} ms per execution: {cores} cores allow at most "
        f"{cores / total_ms * 1000:.0f}/s at that cost (what (a) reaches of it: "
        f"{a['throughput'] / (cores / total_ms * 1000):.0%})"
    )
    base = "warm engine runs/s"
    cpu_base = "warm engine CPU/run"
    target = f">= {TARGET:.0f}/s"
    summary(
        [
            Result(
                "sqlite (a) HTTP end to end: completed/s",
                a["throughput"],
                "/s",
                bare,
                base,
                f"{target}, 0 failed",
                a["throughput"] >= TARGET and a["failed"] == 0,
            ),
            Result(
                "sqlite (a) HTTP triggers accepted/s",
                a["triggers"],
                "/s",
                bare,
                base,
                "-",
                None,
            ),
            Result(
                "sqlite (d) (info) HTTP end to end, API node + worker process",
                d["throughput"],
                "/s",
                bare,
                base,
                "-",
                None,
            ),
            Result(
                "sqlite (a) end to end: steady p10-p90",
                a["steady"],
                "/s",
                bare,
                base,
                "-",
                None,
            ),
            Result(
                "sqlite (a) CPU/exec, server+children",
                a["cpu_server_ms"] + a["cpu_children_ms"],
                "ms",
                bare_cpu,
                cpu_base,
                "-",
                None,
            ),
            Result(
                "sqlite (b) (info) worker drain: completed/s",
                b["throughput"],
                "/s",
                bare,
                base,
                "-",
                None,
            ),
            Result(
                "sqlite (b) (info) worker drain: steady",
                b["steady"],
                "/s",
                bare,
                base,
                "-",
                None,
            ),
            Result(
                "sqlite (c) drain CPU/exec, worker+children",
                b["cpu_worker_ms"] + b["cpu_children_ms"],
                "ms",
                bare_cpu,
                cpu_base,
                "-",
                None,
            ),
        ]
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
