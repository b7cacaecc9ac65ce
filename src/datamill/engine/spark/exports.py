"""Export jobs on Spark: a file written by Spark, staged, moved into place at publish.

Database sinks are written through the worker, by the same code as on
DuckDB (engine/duckdb/exports.py): the worker holds the connection entries
and their secrets, and the cluster need not reach the target database.
"""

from __future__ import annotations

import os

import pyarrow.parquet as pq

from datamill.domain import runlog as rl
from datamill.domain.definitions import ExportJobDefinition, FileSink
from datamill.engine.base import RunResult
from datamill.engine.paths import check_sink_path
from datamill.engine.runs import export_result, export_source
from datamill.engine.spark.files import write_one_file
from datamill.engine.spark.session import SparkRun

_KINDS = {"parquet": "parquet", "csv": "csv", "jsonl": "json"}


def run_export(run: SparkRun, definition: ExportJobDefinition) -> RunResult:
    """Write the source sheet to a staged file, moved into place when the run is published."""
    sink = definition.sink
    assert isinstance(sink, FileSink)  # dispatch sends database sinks through the worker
    real = export_source(run.request)
    roots = run.request.roots
    final = check_sink_path(sink.path, roots.sink_roots, roots.excluded)
    folder = os.path.join(run.staging_dir, "export")
    os.makedirs(folder, exist_ok=True)
    staged = os.path.join(folder, os.path.basename(final))
    options: dict[str, str] = {}
    if sink.kind == "csv":
        options = {"header": str(sink.header).lower(), "sep": sink.delimiter}
    run.where = {"target": sink.path}
    run.execute(
        lambda: write_one_file(run.session.source(real), staged, _KINDS[sink.kind], options),
        context=f"writing {sink.kind} file {sink.path!r}",
        share=0.99,
    )
    records = pq.ParquetFile(real).metadata.num_rows
    written = os.path.getsize(staged)
    run.event(rl.EXPORTED, target=sink.path, records=records, bytes=written)
    run.where = {}
    return export_result(records, written, ((staged, final),))
