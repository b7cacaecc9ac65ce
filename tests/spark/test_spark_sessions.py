"""A work horse's Spark session: schemas given instead of inferred, a lost session survived."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datamill.domain import runlog as rl
from datamill.domain.runlog import PendingEvent
from datamill.domain.status import JobKind
from datamill.engine.spark.schemas import footer_schema
from datamill.engine.spark.session import connect
from tests.integration.engine_fixtures import Area, rows
from tests.spark.conftest import fresh_staging, spark_request

pytestmark = pytest.mark.spark

# One column per type a DuckDB import or workbook can store, as DuckDB writes it.
TYPED = """
SELECT true AS b, 1::TINYINT AS i8, 2::SMALLINT AS i16, 3::INTEGER AS i32, 4::BIGINT AS i64,
       5::UTINYINT AS u8, 6::USMALLINT AS u16, 7::UINTEGER AS u32, 8::UBIGINT AS u64,
       1.5::FLOAT AS f32, 2.5::DOUBLE AS f64, 1.25::DECIMAL(9,2) AS d9,
       12.5::DECIMAL(18,3) AS d18, 1.5::DECIMAL(38,10) AS d38, 'x' AS s, 'y'::BLOB AS bin,
       DATE '2024-01-02' AS day, TIMESTAMP '2024-01-02 03:04:05' AS ts,
       TIMESTAMPTZ '2024-01-02 03:04:05+00' AS tstz, "Mixed Case" AS "Mixed Case"
FROM (SELECT 1 AS "Mixed Case")
"""


OUT_SQL = "SELECT d + 1 AS d, ts, s FROM mid"


def _duckdb_file(path: Path, sql: str) -> str:
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.execute(f"COPY ({sql}) TO '{path}' (FORMAT parquet)")
    finally:
        con.close()
    return str(path)


def _inferred(spark_remote: str, path: str) -> Any:
    spark = connect(spark_remote, str(uuid.uuid4()))
    try:
        return spark.read.parquet(path).schema
    finally:
        spark.stop()


def test_the_schema_read_from_a_footer_is_the_one_spark_infers(
    tmp_path: Path, spark_remote: str
) -> None:
    written = _duckdb_file(tmp_path / "typed.parquet", TYPED)
    given = footer_schema(written)
    assert given is not None
    assert given == _inferred(spark_remote, written)
    assert given.fieldNames()[-1] == "Mixed Case"


def test_types_without_an_exact_mapping_are_left_to_spark(tmp_path: Path) -> None:
    nested = _duckdb_file(tmp_path / "nested.parquet", "SELECT [1, 2] AS xs, 1 AS n")
    clash = str(tmp_path / "clash.parquet")
    pq.write_table(pa.table({"a": [1], "A": [2]}), clash)
    assert footer_schema(nested) is None
    assert footer_schema(clash) is None
    assert footer_schema(str(tmp_path / "missing.parquet")) is None


def test_a_spark_result_read_back_by_a_later_sheet_keeps_its_types(
    area: Area, spark_remote: str, spark_engine: Any
) -> None:
    source = _duckdb_file(area.data / "typed.parquet", TYPED)
    definition = {
        "sheets": [
            {"kind": "data", "name": "t", "source": {"importJob": "/Data/ImportJobs/t.imp"}},
            {"kind": "sql", "name": "mid", "sql": "SELECT d18 * 2 AS d, ts, s FROM t"},
            {"kind": "sql", "name": "out", "keep": True, "sql": OUT_SQL},
        ]
    }
    staging = fresh_staging(area)
    request = spark_request(area, spark_remote, JobKind.WORKBOOK, definition, inputs={"t": source})
    spark_engine.run(request, lambda _: None)
    [row] = rows(staging / "out.parquet")
    assert (str(row["d"]), str(row["ts"]), row["s"]) == ("26.000", "2024-01-02 03:04:05", "x")


def test_a_lost_horse_session_costs_no_run(area: Area, spark_remote: str) -> None:
    from datamill.engine.spark.dispatch import SparkEngine

    engine = SparkEngine()  # its own: it runs every later run in a session of its own
    source = _duckdb_file(area.data / "n.parquet", "SELECT range AS n FROM range(5)")
    horse = str(uuid.uuid4())
    definition = {
        "sheets": [
            {"kind": "data", "name": "t", "source": {"importJob": "/Data/ImportJobs/t.imp"}},
            {"kind": "sql", "name": "s", "keep": True, "sql": "SELECT sum(n) AS s FROM t"},
        ]
    }

    def run() -> tuple[list[dict[str, Any]], list[PendingEvent]]:
        staging = fresh_staging(area)
        request = spark_request(
            area,
            spark_remote,
            JobKind.WORKBOOK,
            definition,
            inputs={"t": source},
            horse_session=horse,
        )
        events: list[PendingEvent] = []
        engine.run(request, lambda _: None, events.append)
        return rows(staging / "s.parquet"), events

    answer, events = run()
    assert answer == [{"s": 10}]
    assert [e.detail.get("session") for e in events if e.event == rl.STARTED] == ["horse"]
    # The server ends the horse's session between two runs (a restart, an idle timeout).
    ender = connect(spark_remote, horse)
    ender.stop()
    answer, events = run()
    assert answer == [{"s": 10}]
    # The run began on the lost session and started again on one of its own.
    started = [e.detail for e in events if e.event == rl.STARTED]
    assert [d.get("session") for d in started] == ["horse", "run"]
    assert started[1]["again"] == "session lost"
    try:
        answer, events = run()
    finally:
        engine.close()
    assert answer == [{"s": 10}]
    assert [e.detail.get("session") for e in events if e.event == rl.STARTED] == ["run"]
