"""Imports with "engine": "spark" give what DuckDB gives: rows, types, counters, failures.

On Spark, imports are read and checked through the worker by the same reader
as on DuckDB (engine/spark/imports.py, docs/engines.md); these tests hold
the two engines to the same answers, per source format and error mode.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datamill.domain.status import JobKind
from datamill.engine.base import RunResult
from datamill.engine.duckdb import DuckDBEngine
from datamill.engine.spark.dispatch import SparkEngine
from datamill.errors import JobFailed
from tests.integration.engine_fixtures import Area, rows
from tests.spark.conftest import fresh_staging

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


def _run(area: Area, engine: Any, definition: dict[str, Any]) -> tuple[RunResult, list[Any]]:
    fresh_staging(area)
    request = area.request(JobKind.IMPORT, definition, engine="spark")
    result = engine.run(request, lambda _: None)
    return result, rows(area.staging / "data.parquet")


@pytest.mark.parametrize("kind", ["csv", "jsonl", "parquet", "database"])
@pytest.mark.parametrize("schema", [SCHEMA, None], ids=["schema", "detected"])
def test_an_import_on_spark_keeps_drops_and_counts_as_on_duckdb(
    area: Area, kind: str, schema: list[dict[str, str]] | None
) -> None:
    source = _sources(area)[kind]
    definition: dict[str, Any] = {"kind": "import", "source": source, "engine": "spark"}
    if schema is not None:
        definition["schema"] = schema
    on_spark, spark_rows = _run(area, SparkEngine(), definition)
    on_duckdb, duckdb_rows = _run(area, DuckDBEngine(), definition | {"engine": "duckdb"})
    assert on_spark.counters == on_duckdb.counters
    assert (on_spark.status, on_spark.warnings) == (on_duckdb.status, on_duckdb.warnings)
    assert spark_rows == duckdb_rows
    if schema is not None:
        # The bad amount is dropped on both, and counted.
        assert on_spark.counters["IMPORT_DROPPED_RECORDS"] >= 1
        assert {r["id"] for r in spark_rows} >= {1, 4}
        assert 2 not in {r["id"] for r in spark_rows}


@pytest.mark.parametrize("kind", ["csv", "jsonl", "parquet", "database"])
def test_fail_mode_fails_the_same_way_on_spark(area: Area, kind: str) -> None:
    source = _sources(area)[kind]
    definition = {"kind": "import", "source": source, "schema": SCHEMA, "errorMode": "FAIL"}
    messages = []
    for engine, name in ((SparkEngine(), "spark"), (DuckDBEngine(), "duckdb")):
        fresh_staging(area)
        with pytest.raises(JobFailed) as failed:
            engine.run(area.request(JobKind.IMPORT, definition | {"engine": name}), print)
        messages.append(failed.value.message)
        assert not (area.staging / "data.parquet").exists()
    assert messages[0] == messages[1]
    assert "errorMode FAIL stops the import" in messages[0]
