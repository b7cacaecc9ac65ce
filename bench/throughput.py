"""Throughput: trivial executions completed per second, default worker settings, SQLite.

`datamill serve` with nothing configured but its home (embedded SQLite, one
embedded worker with the default concurrency). J trivial workbooks (one kept
SQL sheet `SELECT 1 AS one`), each triggered K times by 8 client threads as
fast as the server accepts them: J x K executions queued at once (runs of one
job queue behind each other, different jobs run side by side).

Figures, from the store's timestamps (same host, same clock as the client):
- throughput: executions / (last finished_at - first trigger sent);
- drain rate: the same between the 10th and the 90th percentile of finished_at
  (the steady state, without start and tail);
- trigger rate: executions / time to get all trigger responses.

Baseline: the engine's own ceiling for the same work, measured in the same
run: as many processes as worker slots, each looping over what one trivial
run does in DuckDB (fresh in-memory connection with the same memory/threads
settings, COPY (SELECT 1 AS one) TO a Parquet file, close).
Target: >= 200 executions/s.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psutil
from common import (
    Result,
    Server,
    StoreReader,
    define,
    header,
    parse_args,
    percentile,
    scratch,
    serve,
    summary,
    trigger,
    trivial_workbook,
    wait_warm,
)

SLOTS = 2  # Settings.concurrency's default
CLIENT_THREADS = 8


def _bare_loop(seconds: float, counter: Any) -> None:
    """One process's loop of trivial DuckDB runs; adds its count to `counter`."""
    import duckdb

    with tempfile.TemporaryDirectory() as folder:
        target = os.path.join(folder, "out.parquet")
        deadline = time.monotonic() + seconds
        done = 0
        while time.monotonic() < deadline:
            con = duckdb.connect(":memory:", config={"memory_limit": "2GB", "threads": 2})
            con.execute(f"COPY (SELECT 1 AS one) TO '{target}' (FORMAT parquet)").fetchall()
            con.close()
            done += 1
    with counter.get_lock():
        counter.value += done


def bare_rate(seconds: float) -> float:
    """Trivial DuckDB runs per second in SLOTS processes."""
    context = multiprocessing.get_context("spawn")
    counter = context.Value("q", 0)
    processes = [context.Process(target=_bare_loop, args=(seconds, counter)) for _ in range(SLOTS)]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
    return float(counter.value) / seconds


def cpu_seconds(server: Server) -> dict[str, float]:
    """CPU seconds (user + system) used so far by the server and by its children."""
    parent = psutil.Process(server.process.pid)
    used = {"server": sum(parent.cpu_times()[:2]), "children": 0.0}
    for child in parent.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            used["children"] += sum(child.cpu_times()[:2])
    return used


def measure(server: Server, jobs: int, per_job: int) -> tuple[float, float, float, int]:
    """Trigger jobs x per_job runs at once; throughput, drain rate, trigger rate, failures."""
    wait_warm(server)
    paths = [f"/Analytics/Workbooks/tp/wb_{i:03d}.wbk" for i in range(jobs)]
    reader = StoreReader(server.database_url)
    with server.client() as client:
        for path in paths:
            define(client, "workbook", trivial_workbook(path))
        for path in paths[:2]:  # warm-up: first login, first runs in the children
            reader.wait_terminal(trigger(client, path))
    order = [path for _ in range(per_job) for path in paths]
    clients = [server.client() for _ in range(CLIENT_THREADS)]

    def fire(index: int) -> int:
        return trigger(clients[index % CLIENT_THREADS], order[index])

    cpu_before = cpu_seconds(server)
    started = time.time()
    with ThreadPoolExecutor(CLIENT_THREADS) as pool:
        ids = list(pool.map(fire, range(len(order))))
    triggered = time.time() - started
    for client in clients:
        client.close()
    deadline = time.monotonic() + 600
    while reader.count_terminal(min(ids), max(ids)) < len(ids):
        if time.monotonic() > deadline:
            raise TimeoutError("the executions did not finish within 10 minutes")
        time.sleep(0.05)
    cpu_after = cpu_seconds(server)
    times = reader.times(ids)
    reader.close()
    per_run = {k: (cpu_after[k] - cpu_before[k]) / len(ids) * 1000 for k in cpu_after}
    print(
        f"CPU per execution: server process {per_run['server']:.1f} ms (HTTP triggers, "
        f"worker threads, store), children {per_run['children']:.1f} ms (engine)"
    )
    failed = sum(1 for t in times.values() if t.status != "COMPLETED")
    ends = sorted(t.finished or 0.0 for t in times.values())
    throughput = len(ids) / (ends[-1] - started)
    low, high = percentile(ends, 0.1), percentile(ends, 0.9)
    drain = 0.8 * len(ids) / (high - low) if high > low else float("nan")
    return throughput, drain, len(ids) / triggered, failed


def main() -> int:
    """Baseline, then the server."""
    args = parse_args(__doc__.splitlines()[0])
    header("throughput", args.quick)
    jobs, per_job = (20, 10) if args.quick else (40, 25)
    bare = bare_rate(3.0 if args.quick else 10.0)
    print(f"bare DuckDB, {SLOTS} processes: {bare:.0f} trivial runs/s", flush=True)
    with scratch("throughput") as folder, serve(folder / "sqlite") as server:
        throughput, drain, trigger_rate, failed = measure(server, jobs, per_job)
    print(
        f"datamill, {jobs} jobs x {per_job} runs = {jobs * per_job} executions "
        f"({failed} not COMPLETED)"
    )
    print(
        f"  throughput {throughput:.1f}/s, drain rate {drain:.1f}/s, "
        f"triggers accepted {trigger_rate:.0f}/s"
    )
    summary(
        [
            Result(
                "sqlite: executions completed/s",
                throughput,
                "/s",
                bare,
                "bare DuckDB runs/s",
                ">= 200/s",
                throughput >= 200,
            ),
            Result(
                "sqlite: drain rate (p10-p90)",
                drain,
                "/s",
                bare,
                "bare DuckDB runs/s",
                ">= 200/s",
                drain >= 200,
            ),
            Result("sqlite: triggers accepted/s", trigger_rate, "/s", None, "-", "-", None),
        ]
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
