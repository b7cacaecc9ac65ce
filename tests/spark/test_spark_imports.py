"""Imports with "engine": "spark" give what DuckDB gives: rows, types, counters, failures.

A differential: each import runs on Spark (files read by Spark, engine/spark/
imports.py) and on DuckDB, and the two must agree on the stored rows, column
names and types, counters, warnings, log events and FAIL messages, per source
format, with and without a schema. Database sources are read through the
worker on both (docs/engines.md).
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datamill.domain import runlog as rl
from datamill.domain.runlog import PendingEvent
from datamill.domain.status import JobKind
from datamill.engine.base import RunResult
from datamill.engine.duckdb import DuckDBEngine
from datamill.errors import JobFailed
from tests.integration.engine_fixtures import Area, rows
from tests.spark.conftest import fresh_staging, spark_request

SCHEMA = [{"name": "id", "type": "BIGINT"}, {"name": "amount", "type": "DOUBLE"}]


def _sources(area: Area) -> dict[str, dict[str, Any]]:
    """The same four records (one with a bad amount, one unreadable) in each format."""
    csv = area.sources / "o.csv"
    csv.write_text("id,amount\n1,1.5\n2,x\n3,3.0,extra\n4,4.25\n")
    jsonl = area.sources / "o.jsonl"
    lines = [
        json.dumps({"id": 1, "amount": 1.5}),
        json.dumps({"id": 2, "amount": "x"}),
        "{not json",
        json.dumps({"id": 4, "amount": 4.25}),
    ]
    jsonl.write_text("\n".join(lines) + "\n")
    parquet = area.sources / "o.parquet"
    pq.write_table(pa.table({"id": [1, 2, 4], "amount": ["1.5", "x", "4.25"]}), parquet)
    database = area.sources / "o.db"
    with sqlite3.connect(database) as conn:
        conn.execute("CREATE TABLE o (id INTEGER, amount TEXT)")
        conn.executemany("INSERT INTO o VALUES (?, ?)", [(1, "1.5"), (2, "x"), (4, "4.25")])
    return {
        "csv": {"kind": "csv", "path": str(csv)},
        "jsonl": {"kind": "jsonl", "path": str(jsonl)},
        "parquet": {"kind": "parquet", "path": str(parquet)},
        "database": {"kind": "database", "url": f"sqlite:///{database}", "table": "o"},
    }


@dataclasses.dataclass
class Outcome:
    """What a user notices of one import run."""

    result: RunResult
    rows: list[Any]
    types: list[tuple[str, str]]
    events: list[tuple[str, dict[str, Any]]]
    staged: list[str]
    engine: Any


def _run(area: Area, engine: Any, definition: dict[str, Any], remote: str) -> Outcome:
    fresh_staging(area)
    request = spark_request(area, remote, JobKind.IMPORT, definition)
    events: list[PendingEvent] = []
    result = engine.run(request, lambda _: None, events.append)
    data = area.staging / "data.parquet"
    schema = pq.read_schema(data)
    return Outcome(
        result,
        rows(data),
        [(f.name, str(f.type)) for f in schema],
        [(e.event, e.detail) for e in events if e.event != rl.STARTED],
        sorted(p.name for p in area.staging.iterdir()),
        [e.detail.get("engine") for e in events if e.event == rl.STARTED],
    )


def _both(area: Area, spark: Any, definition: dict[str, Any], remote: str) -> Outcome:
    """Run on both engines; assert they agree on everything a user sees; Spark's outcome."""
    on_spark = _run(area, spark, definition | {"engine": "spark"}, remote)
    on_duckdb = _run(area, DuckDBEngine(), definition | {"engine": "duckdb"}, remote)
    # Every counter but the size of the Parquet file (two writers) is the same.
    assert on_spark.result.counters.pop("IMPORT_OUTPUT_BYTES") > 0
    assert on_duckdb.result.counters.pop("IMPORT_OUTPUT_BYTES") > 0
    assert on_spark.result.counters == on_duckdb.result.counters
    assert on_spark.result.status == on_duckdb.result.status
    assert on_spark.result.warnings == on_duckdb.result.warnings
    assert on_spark.rows == on_duckdb.rows
    assert on_spark.types == on_duckdb.types
    assert on_spark.events == on_duckdb.events
    # Only the output is staged: no links to the inputs, no spill folder.
    assert on_spark.staged == on_duckdb.staged == ["data.parquet"]
    return on_spark


@pytest.mark.parametrize("kind", ["csv", "jsonl", "parquet", "database"])
@pytest.mark.parametrize("schema", [SCHEMA, None], ids=["schema", "detected"])
def test_an_import_on_spark_keeps_drops_and_counts_as_on_duckdb(
    area: Area,
    spark_engine: Any,
    spark_remote: str,
    kind: str,
    schema: list[dict[str, str]] | None,
) -> None:
    source = _sources(area)[kind]
    definition: dict[str, Any] = {"kind": "import", "source": source}
    if schema is not None:
        definition["schema"] = schema
    on_spark = _both(area, spark_engine, definition, spark_remote)
    # Files are read by Spark; a database through the worker's DuckDB.
    assert on_spark.engine == ["duckdb" if kind == "database" else "spark"]
    if schema is not None:
        # The bad amount is dropped on both, and counted.
        assert on_spark.result.counters["IMPORT_DROPPED_RECORDS"] >= 1
        assert {r["id"] for r in on_spark.rows} >= {1, 4}
        assert 2 not in {r["id"] for r in on_spark.rows}


@pytest.mark.parametrize("kind", ["csv", "jsonl", "parquet", "database"])
def test_fail_mode_fails_the_same_way_on_spark(
    area: Area, spark_engine: Any, spark_remote: str, kind: str
) -> None:
    source = _sources(area)[kind]
    definition = {"kind": "import", "source": source, "schema": SCHEMA, "errorMode": "FAIL"}
    messages = []
    for engine, name in ((spark_engine, "spark"), (DuckDBEngine(), "duckdb")):
        fresh_staging(area)
        request = spark_request(area, spark_remote, JobKind.IMPORT, definition | {"engine": name})
        with pytest.raises(JobFailed) as failed:
            engine.run(request, lambda _: None)
        messages.append(failed.value.message)
        assert not (area.staging / "data.parquet").exists()
    assert messages[0] == messages[1]
    assert "errorMode FAIL stops the import" in messages[0]
