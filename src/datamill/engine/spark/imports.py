"""Import jobs on Spark: read and checked through the worker, by the DuckDB import code.

A decision (docs/engines.md): the same schemas, type coercion, DROP_RECORD and
FAIL counters on both engines are guaranteed by running the very same reader
(engine/duckdb/imports.py) in the worker, which stages the same single Parquet
file that Spark's workbooks and exports then read. Database sources are read
through the worker as well, with its connection entries. Reading the source
on the cluster itself is not done yet.
"""

from __future__ import annotations

from datamill.engine.base import EventCallback, ProgressCallback, RunRequest, RunResult
from datamill.engine.duckdb import DuckDBEngine


def run_import(
    duckdb: DuckDBEngine, request: RunRequest, progress: ProgressCallback, events: EventCallback
) -> RunResult:
    """Run the import on the worker's DuckDB (its log says so: engine duckdb)."""
    return duckdb.run(request, progress, events)
