"""Scale: TPC-H SF10 `lineitem` (a ~7.5 GB CSV) imported and aggregated (Q1), per engine.

Usage: python bench/spark_scale.py [--scale 10] [--import-engines duckdb,spark]
       [--workbook-engines duckdb,spark] [--csv PATH]

A `datamill serve` (SQLite, default settings, DATAMILL_ENGINES=duckdb,spark,
no DATAMILL_SPARK_REMOTE: local Spark started by the work horse that needs it,
as an installation without a cluster runs) imports the CSV (generated once
by `tpchgen-cli csv` into the bench cache) with one import job naming the
import engine (one job per engine listed), then runs, once per workbook
engine, a workbook over the first import's data: a data sheet and TPC-H Q1 as the kept sheet.

Per run: trigger sent -> COMPLETED (the store's finished_at), and the peak
resident memory (RSS, sampled every 0.2 s) of the worker (the `datamill
serve` process, which embeds it), of the largest engine child (work horse),
and of the Spark JVMs (the local Spark Connect server, a child of a horse),
with the load average before and after. The heavy runs go at `--nice`
(default 5): the server is reniced, with its children, once it is warm.
A file import naming "spark" is read by Spark (docs/engines.md); the run
log's `engine` says which engine read it, and the output labels it so.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import psutil
from common import PYTHON, StoreReader, scratch, serve, trigger, wait_warm
from engine_overhead import CACHE
from tpch_queries import QUERIES

MB = 1024 * 1024


def lineitem_csv(scale: float) -> Path:
    """The `lineitem` table at this scale factor as one CSV with a header, generated once."""
    folder = CACHE / f"tpch-sf{scale:g}-csv"
    target = folder / "lineitem.csv"
    if target.exists():
        return target
    tpchgen = str(Path(PYTHON).parent / "tpchgen-cli")
    began = time.monotonic()
    subprocess.run(
        [tpchgen, "csv", "-s", f"{scale:g}", "--tables=lineitem", f"--output-dir={folder}"],
        check=True,
    )
    print(f"generated lineitem SF {scale:g} in {time.monotonic() - began:.0f}s", flush=True)
    return target


class Peaks:
    """Samples the RSS of the server, its engine children and Spark JVMs until stopped."""

    def __init__(self, server_pid: int) -> None:
        self.root = psutil.Process(server_pid)
        self.peak = {"worker": 0, "engine child": 0, "spark jvm": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.2):
            try:
                self._note("worker", self.root.memory_info().rss)
                for child in self.root.children(recursive=True):
                    name = child.name()
                    kind = "spark jvm" if name == "java" else "engine child"
                    if kind == "engine child" and "resource_tracker" in " ".join(child.cmdline()):
                        continue
                    self._note(kind, child.memory_info().rss)
            except psutil.Error:
                continue  # a process ended between listing and reading

    @staticmethod
    def family(pid: int) -> list[psutil.Process]:
        """The descendants of the process `pid`."""
        return list(psutil.Process(pid).children(recursive=True))

    def _note(self, kind: str, rss: int) -> None:
        self.peak[kind] = max(self.peak[kind], rss)

    def stop(self) -> dict[str, int]:
        """Stop sampling; the peaks in bytes."""
        self._stop.set()
        self._thread.join()
        return dict(self.peak)


def load() -> str:
    """The load average, as `uptime` shows it."""
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def timed(node: Any, reader: StoreReader, path: str, label: str) -> None:
    """Trigger `path`, wait for its end, print time, peaks and load."""
    before = load()
    peaks = Peaks(node.process.pid)
    with node.client() as client:
        sent = time.time()
        execution_id = trigger(client, path)
    status = reader.wait_terminal(execution_id, timeout=7200, pause=0.5)
    seen = peaks.stop()
    row = reader.times([execution_id])[execution_id]
    finished = row.finished or time.time()
    detail = "" if status == "COMPLETED" else f" {reader.error(execution_id)[:300]}"
    engine = engine_of(node, execution_id)
    memory = ", ".join(f"{k} {v / MB:,.0f} MB" for k, v in seen.items())
    print(
        f"{label:<44} {status:<9} {finished - sent:8.1f} s  (read by {engine}) peak RSS: "
        f"{memory}; records {row.records:,}; load {before} -> {load()}{detail}",
        flush=True,
    )


def engine_of(node: Any, execution_id: int) -> str:
    """The engine the run's log names (which engine really ran it)."""
    with node.client() as client:
        response = client.get(f"/api/job-execution/{execution_id}/log")
    if response.status_code != 200:
        return "?"
    found = re.search(r"engine\W+(spark|duckdb)", response.text)
    return found.group(1) if found else "?"


def main() -> None:
    """Import once with the import engine, then the Q1 workbook on each workbook engine."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=10.0)
    parser.add_argument(
        "--import-engines", default="duckdb", help="comma list; workbooks read the first import"
    )
    parser.add_argument("--workbook-engines", default="duckdb,spark")
    parser.add_argument("--nice", type=int, default=5, help="niceness of the heavy runs")
    parser.add_argument("--csv", help="the lineitem CSV (default: generated into the cache)")
    args = parser.parse_args()
    source = Path(args.csv) if args.csv else lineitem_csv(args.scale)
    print(f"{source}: {source.stat().st_size / MB:,.0f} MB; load {load()}", flush=True)
    with (
        scratch("spark-scale") as folder,
        serve(
            folder / "sqlite",
            source_roots=json.dumps([str(source.parent)]),
            engines="duckdb,spark",
        ) as node,
    ):
        wait_warm(node)
        # Started at normal priority (a `datamill serve` at nice 5 on a loaded
        # machine misses common.serve's start-up deadline); the heavy runs go
        # at the --nice level, children (horses, Spark JVMs) inheriting it.
        for process in [psutil.Process(node.process.pid), *Peaks.family(node.process.pid)]:
            process.nice(args.nice)
        os.nice(args.nice)
        reader = StoreReader(node.database_url)
        imports = args.import_engines.split(",")
        imp = f"/Data/ImportJobs/lineitem-{imports[0]}.imp"
        with node.client() as client:
            for engine in imports:
                document = {
                    "path": f"/Data/ImportJobs/lineitem-{engine}.imp",
                    "engine": engine,
                    "source": {"kind": "csv", "path": str(source)},
                }
                client.post("/rest/import-job", json=document).raise_for_status()
            for engine in args.workbook_engines.split(","):
                workbook = {
                    "path": f"/Analytics/Workbooks/q1-{engine}.wbk",
                    "engine": engine,
                    "sheets": [
                        {"kind": "data", "name": "lineitem", "source": {"importJob": imp}},
                        {"kind": "sql", "name": "result", "keep": True, "sql": QUERIES[1]},
                    ],
                }
                client.post("/rest/workbook", json=workbook).raise_for_status()
        # The workbooks right after the first import, the other imports last.
        timed(node, reader, imp, f"import, engine {imports[0]}")
        for engine in args.workbook_engines.split(","):
            label = f"Q1 workbook, engine {engine}, over the {imports[0]} import"
            timed(node, reader, f"/Analytics/Workbooks/q1-{engine}.wbk", label)
        for engine in imports[1:]:
            path = f"/Data/ImportJobs/lineitem-{engine}.imp"
            timed(node, reader, path, f"import, engine {engine}")
        reader.close()


if __name__ == "__main__":
    main()
