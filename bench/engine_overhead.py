"""Engine overhead: TPC-H as Datamill workbooks vs the same SQL on bare DuckDB.

Data: TPC-H at scale factor 1 (quick: 0.1) generated offline as Parquet by
`tpchgen-cli` (PyPI), cached under $TMPDIR/datamill-bench-cache. A
`datamill serve` (SQLite, default engine settings) imports the 8 tables with
8 import jobs (Parquet sources, no schema). Each TPC-H query becomes one
workbook: a data sheet per table it reads, and one kept SQL sheet with the
query text unchanged. Queries the workbook SQL rules refuse are listed with
the reason; Q15 (three statements in the specification) runs as two sheets,
the view becoming a sheet, and is marked as adapted.

Figures, per query, median of the repeats:
- datamill: trigger request sent -> COMPLETED (the store's finished_at, same
  host and clock as the client's time.time()), which includes the trigger
  request, claiming, the child process, DuckDB start-up, SQL checking, writing
  the result as Parquet and publishing; the run time inside the worker
  (started_at -> finished_at) is printed too;
- bare: the same SQL on one DuckDB connection in this process with the same
  memory limit and threads as the engine, over views on the very Parquet files
  the import jobs produced, the result fetched (fetchall).
Bare and Datamill runs of each query alternate, so both see the same machine.
Target: total Datamill time <= 1.1 x total bare time.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import duckdb
from common import (
    PYTHON,
    Result,
    Server,
    StoreReader,
    define,
    header,
    median,
    parse_args,
    scratch,
    serve,
    summary,
    trigger,
    wait_warm,
)
from tpch_queries import Q15_SHEETS, QUERIES, TABLES

from datamill.settings import Settings

MEMORY_LIMIT = str(Settings.model_fields["engine_memory_limit"].default)
THREADS = int(Settings.model_fields["engine_threads"].default)
CACHE = Path(tempfile.gettempdir()) / "datamill-bench-cache"


def tpch_data(scale: float) -> Path:
    """The folder of <table>.parquet files at this scale factor, generated once."""
    folder = CACHE / f"tpch-sf{scale:g}"
    if all((folder / f"{t}.parquet").exists() for t in TABLES):
        return folder
    tpchgen = shutil.which("tpchgen-cli") or str(Path(PYTHON).parent / "tpchgen-cli")
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    start = time.monotonic()
    subprocess.run(
        [tpchgen, "parquet", "-s", f"{scale:g}", "--output-dir", str(partial)], check=True
    )
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
    print(f"generated TPC-H SF {scale:g} in {time.monotonic() - start:.0f}s", flush=True)
    return folder


def tables_of(sql: str) -> list[str]:
    """The TPC-H tables a query names."""
    return [t for t in TABLES if re.search(rf"\b{t}\b", sql, re.IGNORECASE)]


def import_path(table: str) -> str:
    """The path of the import job of one table."""
    return f"/Data/ImportJobs/tpch/{table}.imp"


def import_tables(server: Server, data: Path) -> dict[str, str]:
    """Import the 8 tables through Datamill; table -> the Parquet file it stored."""
    with server.client() as client:
        paths = []
        for table in TABLES:
            path = import_path(table)
            define(
                client,
                "import-job",
                {
                    "path": path,
                    "source": {"kind": "parquet", "path": str(data / f"{table}.parquet")},
                },
            )
            paths.append(path)
        start = time.monotonic()
        response = client.post("/api/job-execution/sequential-trigger", json={"fileIds": paths})
        response.raise_for_status()
        plan = response.json()["execution-plan"]
    reader = StoreReader(server.database_url)
    for member in plan:
        status = reader.wait_terminal(member["job-execution-id"], timeout=1800, pause=0.1)
        if status != "COMPLETED":
            raise RuntimeError(f"importing {member['job-configuration-name']} ended {status}")
    reader.close()
    print(f"imported the 8 tables through Datamill in {time.monotonic() - start:.1f}s", flush=True)
    conn = sqlite3.connect(server.database_url.split(":///", 1)[1])
    files = {}
    for member in plan:
        (location,) = conn.execute(
            "SELECT location FROM data WHERE job_configuration_id = ? ORDER BY id DESC LIMIT 1",
            [member["job-configuration-id"]],
        ).fetchone()
        files[member["job-configuration-name"]] = os.path.join(location, "data.parquet")
    conn.close()
    return files


def define_workbooks(server: Server) -> tuple[dict[int, str], dict[int, str]]:
    """One workbook per query; (query -> workbook path, query -> why it was refused)."""
    defined, refused = {}, {}
    with server.client() as client:
        for number, sql in QUERIES.items():
            path = f"/Analytics/Workbooks/tpch/q{number:02d}.wbk"
            sheets: list[dict[str, Any]] = [
                {
                    "kind": "data",
                    "name": t,
                    "source": {"importJob": f"/Data/ImportJobs/tpch/{t}.imp"},
                }
                for t in tables_of(sql)
            ]
            document = {
                "path": path,
                "sheets": [*sheets, {"kind": "sql", "name": "result", "keep": True, "sql": sql}],
            }
            response = client.post("/rest/workbook", json=document)
            if response.status_code != 200:
                refused[number] = response.json().get("reason", response.text)
                if number != 15:
                    continue
                sql_sheets = [
                    {"kind": "sql", "name": name, "keep": name == "result", "sql": text}
                    for name, text in Q15_SHEETS
                ]
                document = {"path": path, "sheets": [*sheets, *sql_sheets]}
                response = client.post("/rest/workbook", json=document)
                response.raise_for_status()
            defined[number] = path
    return defined, refused


def bare_connection(files: dict[str, str]) -> duckdb.DuckDBPyConnection:
    """One DuckDB connection with the engine's memory and threads, a view per table."""
    con = duckdb.connect(":memory:", config={"memory_limit": MEMORY_LIMIT, "threads": THREADS})
    for table, path in files.items():
        con.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet('{path}')")
    return con


def run_bare(con: duckdb.DuckDBPyConnection, sql: str) -> tuple[float, int]:
    """(seconds to run one query, each statement of it, and fetch its result; its rows)."""
    start = time.perf_counter()
    rows = 0
    for statement in filter(str.strip, sql.split(";")):
        rows = len(con.execute(statement).fetchall()) or rows
    return time.perf_counter() - start, rows


def run_datamill(server: Server, reader: StoreReader, path: str) -> tuple[float, float, int]:
    """(trigger sent -> COMPLETED, started_at -> finished_at, records written)."""
    with server.client() as client:
        sent = time.time()
        execution_id = trigger(client, path)
    status = reader.wait_terminal(execution_id, timeout=900, pause=0.002)
    if status != "COMPLETED":
        raise RuntimeError(f"{path} ended {status}")
    row = reader.times([execution_id])[execution_id]
    assert row.started is not None and row.finished is not None
    return row.finished - sent, row.finished - row.started, row.records


def main() -> int:
    """Generate, import, define, then alternate bare and Datamill runs."""
    args = parse_args(__doc__.splitlines()[0])
    header("engine_overhead", args.quick)
    scale, repeats = (0.1, 2) if args.quick else (1.0, 3)
    data = tpch_data(scale)
    with (
        scratch("tpch") as folder,
        serve(folder / "sqlite", source_roots=json.dumps([str(data)])) as server,
    ):
        wait_warm(server)
        files = import_tables(server, data)
        defined, refused = define_workbooks(server)
        reader = StoreReader(server.database_url)
        con = bare_connection(files)
        for number, path in defined.items():  # warm-up; both must give as many rows
            _, bare_rows = run_bare(con, QUERIES[number])
            _, _, records = run_datamill(server, reader, path)
            if bare_rows != records:
                raise RuntimeError(f"Q{number}: {bare_rows} rows on DuckDB, {records} in Datamill")
        bare: dict[int, list[float]] = {n: [] for n in defined}
        full: dict[int, list[float]] = {n: [] for n in defined}
        inside: dict[int, list[float]] = {n: [] for n in defined}
        for _ in range(repeats):
            for number, path in defined.items():
                bare[number].append(run_bare(con, QUERIES[number])[0])
                end_to_end, worker, _ = run_datamill(server, reader, path)
                full[number].append(end_to_end)
                inside[number].append(worker)
        con.close()
        reader.close()
    print(
        f"\nTPC-H SF {scale:g}, memory_limit {MEMORY_LIMIT}, threads {THREADS}, median of {repeats}"
    )
    print(f"{'query':<6} {'bare':>9} {'datamill':>9} {'in worker':>9} {'ratio':>6}")
    for number in defined:
        b, d, w = median(bare[number]), median(full[number]), median(inside[number])
        mark = " (as two sheets)" if number in refused else ""
        print(
            f"Q{number:<5} {b * 1000:7.0f}ms {d * 1000:7.0f}ms {w * 1000:7.0f}ms "
            f"{d / b:5.2f}x{mark}"
        )
    for number, reason in refused.items():
        print(f"Q{number} does not run unchanged: {reason}")
    total_bare = sum(median(v) for v in bare.values())
    total_datamill = sum(median(v) for v in full.values())
    total_inside = sum(median(v) for v in inside.values())
    summary(
        [
            Result(
                f"TPC-H SF{scale:g} total, {len(defined)} queries",
                total_datamill,
                "s",
                total_bare,
                "bare DuckDB",
                "<= 1.1x bare",
                total_datamill <= 1.1 * total_bare,
            ),
            Result(
                "  of which inside the worker",
                total_inside,
                "s",
                total_bare,
                "bare DuckDB",
                "-",
                None,
            ),
        ]
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
