"""Memory: idle RSS of `datamill serve`, and peak RSS of a job far larger than its memory limit.

1. Idle: `datamill serve` with default settings (embedded SQLite, embedded
   worker with its warm child processes), 5 s after its children are ready.
   RSS and PSS (shared pages split between the processes that share them) of
   the server, each child, and in total.
2. Spilling: a second server with DATAMILL_ENGINE_MEMORY_LIMIT=256MB imports
   a generated CSV about four times that limit (~1 GB; quick: ~0.5 GB, twice
   the limit), with a typed schema, then runs a workbook that sorts all of it
   (ORDER BY a text column, kept), which cannot fit in the limit. Both must
   end COMPLETED. Every 50 ms the RSS of the server and each child is sampled,
   and the size of the engine's spill folder (<home>/tmp); the peak of the
   largest child (the one running the job), of the sum, and of the spill
   folder are printed per job, with the kernel's high-water mark (VmHWM) of
   the children as a cross-check of the sampling.

Baseline: the idle figures of the same server (the job's peak is also shown
against the configured limit). Target: idle is reported (no target given);
the large jobs must finish, not fail, and the sort (which cannot fit in the
limit) must have spilled: a peak spill folder of 0 bytes misses the target
even when the run completed (it would mean the limit was not what bounded it). (At a 128MB limit the
sort of the 0.5 GB data fails with "Out of Memory" in bare DuckDB just as in
Datamill: DuckDB's external sort needs more headroom than that.)
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from pathlib import Path

import duckdb
import psutil
from common import (
    Result,
    Server,
    StoreReader,
    define,
    header,
    parse_args,
    scratch,
    serve,
    summary,
    trigger,
    wait_warm,
)

MB = 1024 * 1024


def family(server: Server) -> list[psutil.Process]:
    """The server process and all its descendants."""
    parent = psutil.Process(server.process.pid)
    return [parent, *parent.children(recursive=True)]


def describe(process: psutil.Process) -> str:
    """A short name: server, worker child, fork server, horse (warm child) or resource tracker."""
    name = process.name()
    if name == "datamill-horse":
        return "warm child (horse)"
    if name == "datamill-worker":
        return "worker child"
    command = " ".join(process.cmdline())
    if "resource_tracker" in command:
        return "resource tracker"
    if "forkserver" in command:
        return "fork server"
    return "datamill serve"


def idle(server: Server) -> tuple[float, float]:
    """Print RSS/PSS per process of an idle server; total RSS and PSS in MB."""
    wait_warm(server)
    time.sleep(5)
    total_rss = total_pss = 0.0
    for process in family(server):
        info = process.memory_full_info()
        total_rss += info.rss / MB
        total_pss += info.pss / MB
        print(
            f"  {describe(process):<20} pid {process.pid:<7} RSS {info.rss / MB:7.1f} MB  "
            f"PSS {info.pss / MB:7.1f} MB"
        )
    print(f"  {'total':<32} RSS {total_rss:7.1f} MB  PSS {total_pss:7.1f} MB", flush=True)
    return total_rss, total_pss


def write_csv(path: Path, rows: int) -> int:
    """A CSV of `rows` orders (~100 bytes each) written by DuckDB; its size in bytes."""
    con = duckdb.connect()
    con.execute(
        f"""COPY (SELECT i AS order_id,
                         'customer_' || (hash(i) % 1000000)::VARCHAR AS customer,
                         round((hash(i * 7) % 100000) / 100.0, 2) AS amount,
                         DATE '2020-01-01' + (i % 1500)::INTEGER AS ordered_on,
                         md5(i::VARCHAR) || '-' || md5((i * 31)::VARCHAR) AS note
                  FROM range({rows}) t(i))
            TO '{path}' (FORMAT csv, HEADER true)"""
    )
    con.close()
    return path.stat().st_size


def folder_bytes(folder: Path) -> int:
    """Bytes of the files below a folder (files may vanish while we look)."""
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.stat(os.path.join(root, name)).st_size
    return total


class Sampler(threading.Thread):
    """Samples the RSS of the server's processes and the spill folder every 50 ms."""

    def __init__(self, server: Server, spill: Path) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.spill = spill
        self.done = threading.Event()
        self.peak_child = self.peak_total = self.peak_spill = 0

    def run(self) -> None:
        """Sample until done."""
        while not self.done.wait(0.05):
            try:
                processes = family(self.server)
                sizes = [(p, p.memory_info().rss) for p in processes]
            except psutil.Error:
                continue
            children = [rss for p, rss in sizes if p.pid != self.server.process.pid]
            self.peak_child = max(self.peak_child, max(children, default=0))
            self.peak_total = max(self.peak_total, sum(rss for _, rss in sizes))
            self.peak_spill = max(self.peak_spill, folder_bytes(self.spill))


def high_water_marks(server: Server) -> list[int]:
    """VmHWM (peak RSS since start, bytes) of each child process."""
    marks = []
    for process in family(server)[1:]:
        try:
            status = Path(f"/proc/{process.pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                marks.append(int(line.split()[1]) * 1024)
    return marks


def run_job(server: Server, path: str, reader: StoreReader) -> tuple[str, float, Sampler]:
    """Trigger a job, sample memory until it ends; (status, seconds, sampler)."""
    sampler = Sampler(server, server.home / "tmp")
    sampler.start()
    start = time.monotonic()
    with server.client() as client:
        execution_id = trigger(client, path)
    status = reader.wait_terminal(execution_id, timeout=1200, pause=0.1)
    seconds = time.monotonic() - start
    sampler.done.set()
    sampler.join()
    if status != "COMPLETED":
        print(f"  {path} ended {status}: {reader.error(execution_id)}")
    return status, seconds, sampler


def main() -> int:
    """Idle figures, then the two large jobs."""
    args = parse_args(__doc__.splitlines()[0])
    header("memory", args.quick)
    limit_mb, rows = (256, 5_000_000) if args.quick else (256, 10_000_000)
    results: list[Result] = []
    with scratch("memory") as folder:
        print("[idle, default settings]")
        with serve(folder / "idle") as server:
            idle_rss, idle_pss = idle(server)
        results.append(
            Result("idle RSS, server + children", idle_rss, "MB", None, "-", "report", None)
        )
        results.append(
            Result("idle PSS, server + children", idle_pss, "MB", None, "-", "report", None)
        )
        home = folder / "spill"
        files = home / "files"
        files.mkdir(parents=True)
        csv_bytes = write_csv(files / "orders.csv", rows)
        print(
            f"\n[engine_memory_limit {limit_mb}MB] CSV of {rows:,} rows, "
            f"{csv_bytes / MB:.0f} MB ({csv_bytes / MB / limit_mb:.1f}x the limit)"
        )
        with serve(home, engine_memory_limit=f"{limit_mb}MB") as server:
            base_rss, _ = idle(server)
            reader = StoreReader(server.database_url)
            with server.client() as client:
                define(
                    client,
                    "import-job",
                    {
                        "path": "/Data/ImportJobs/big.imp",
                        "source": {"kind": "csv", "path": str(files / "orders.csv")},
                        "schema": [
                            {"name": "order_id", "type": "BIGINT"},
                            {"name": "customer", "type": "VARCHAR"},
                            {"name": "amount", "type": "DOUBLE"},
                            {"name": "ordered_on", "type": "DATE"},
                            {"name": "note", "type": "VARCHAR"},
                        ],
                        "errorMode": "FAIL",
                    },
                )
                define(
                    client,
                    "workbook",
                    {
                        "path": "/Analytics/Workbooks/big_sort.wbk",
                        "sheets": [
                            {
                                "kind": "data",
                                "name": "orders",
                                "source": {"importJob": "/Data/ImportJobs/big.imp"},
                            },
                            {
                                "kind": "sql",
                                "name": "sorted",
                                "keep": True,
                                "sql": "SELECT * FROM orders ORDER BY note",
                            },
                        ],
                    },
                )
            for name, path in (
                ("import", "/Data/ImportJobs/big.imp"),
                ("sort", "/Analytics/Workbooks/big_sort.wbk"),
            ):
                status, seconds, sampler = run_job(server, path, reader)
                print(
                    f"  {name:<6} {status} in {seconds:.1f}s: peak child RSS "
                    f"{sampler.peak_child / MB:.0f} MB, peak total RSS "
                    f"{sampler.peak_total / MB:.0f} MB, peak spill "
                    f"{sampler.peak_spill / MB:.0f} MB",
                    flush=True,
                )
                # The sort cannot fit in the limit: it meets its target only by
                # finishing AND having spilled. The import streams, so finishing
                # is its target and its spill is information.
                spills = name == "sort"
                results.append(
                    Result(
                        f"{name}: peak child RSS ({status})",
                        sampler.peak_child / MB,
                        "MB",
                        float(limit_mb),
                        "memory limit",
                        "finishes, spilled" if spills else "finishes",
                        status == "COMPLETED" and (sampler.peak_spill > 0 or not spills),
                    )
                )
                results.append(
                    Result(
                        f"{name}: peak total RSS",
                        sampler.peak_total / MB,
                        "MB",
                        base_rss,
                        "idle total",
                        "-",
                        None,
                    )
                )
                results.append(
                    Result(
                        f"{name}: peak spill folder",
                        sampler.peak_spill / MB,
                        "MB",
                        None,
                        "-",
                        "-",
                        None,
                    )
                )
            marks = high_water_marks(server)
            print(f"  VmHWM of the children: {', '.join(f'{m / MB:.0f} MB' for m in marks)}")
            reader.close()
    summary(results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
