"""Workbooks and exports on a real Spark, and data passed between the two engines."""

from __future__ import annotations

import os
import threading
import uuid
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datamill.domain.status import JobKind, JobStatus
from datamill.engine.duckdb import DuckDBEngine
from datamill.engine.registry import interrupt
from datamill.engine.spark.session import connect
from datamill.errors import InvalidSql, JobFailed
from tests.integration.engine_fixtures import Area, rows, run_import
from tests.spark.conftest import fresh_staging, spark_request

pytestmark = pytest.mark.spark

ORDERS_CSV = "id,region,amount,day\n1,EU,10.5,2024-01-02\n2,US,20,2024-01-03\n3,EU,x,2024-01-04\n"


def _workbook(*sheets: tuple[str, str, bool], data: str = "orders", **extra: Any) -> dict[str, Any]:
    made: list[dict[str, Any]] = [
        {"kind": "data", "name": data, "source": {"importJob": "/Data/ImportJobs/o.imp"}}
    ]
    made += [{"kind": "sql", "name": n, "sql": s, "keep": k} for n, s, k in sheets]
    return {"kind": "workbook", "sheets": made, **extra}


def _imported_orders(area: Area) -> str:
    """Orders imported by DuckDB (one bad amount dropped), published under the data root."""
    (area.sources / "orders.csv").write_text(ORDERS_CSV)
    schema = [
        {"name": "id", "type": "BIGINT"},
        {"name": "region", "type": "VARCHAR"},
        {"name": "amount", "type": "DOUBLE"},
        {"name": "day", "type": "DATE"},
    ]
    result = run_import(
        area, {"kind": "csv", "path": str(area.sources / "orders.csv")}, schema=schema
    )
    assert result.counters["IMPORT_DROPPED_RECORDS"] == 1
    published = area.data / "orders.parquet"
    (area.staging / "data.parquet").rename(published)
    fresh_staging(area)
    return str(published)


def test_a_spark_workbook_reads_a_duckdb_import_and_duckdb_reads_what_spark_wrote(
    area: Area, spark_remote: str, spark_engine: Any
) -> None:
    orders = _imported_orders(area)
    definition = _workbook(
        ("eu", "SELECT id, amount, day FROM orders WHERE region = ${region}", False),
        (
            "summary",
            "SELECT count(*) AS n, sum(amount) AS total, max(day) AS last FROM eu "
            "WHERE amount >= ${least}",
            True,
        ),
        variables={
            "region": {"type": "VARCHAR", "default": "EU"},
            "least": {"type": "DOUBLE", "default": 0},
        },
    )
    events: list[Any] = []
    request = spark_request(
        area, spark_remote, JobKind.WORKBOOK, definition, inputs={"orders": orders}
    )
    result = spark_engine.run(request, lambda _: None, events.append)
    assert result.status is JobStatus.COMPLETED
    assert result.sheets == {"summary": 1}
    assert result.counters["WORKBOOK_RECORDS"] == 1
    spark_rows = rows(area.staging / "summary.parquet")
    assert spark_rows == [{"n": 1, "total": 10.5, "last": pa.scalar(19724, pa.date32()).as_py()}]
    assert (events[0].event, events[0].detail["engine"]) == ("started", "spark")
    # Nothing but the kept sheet is left in staging: no Spark folders, no work files.
    assert sorted(p.name for p in area.staging.iterdir()) == ["summary.parquet"]

    # DuckDB reads the file Spark wrote.
    published = area.data / "summary.parquet"
    (area.staging / "summary.parquet").rename(published)
    fresh_staging(area)
    back = area.request(
        JobKind.WORKBOOK,
        _workbook(("again", "SELECT n * 2 AS twice, total, last FROM s", True), data="s"),
        inputs={"s": str(published)},
    )
    assert DuckDBEngine().run(back, lambda _: None).sheets == {"again": 1}
    assert rows(area.staging / "again.parquet") == [
        {"twice": 2, "total": 10.5, "last": spark_rows[0]["last"]}
    ]


def test_a_variable_is_bound_as_a_value_on_spark_never_pasted(
    area: Area, spark_remote: str, spark_engine: Any
) -> None:
    orders = _imported_orders(area)
    hostile = "EU' OR '1'='1"
    definition = _workbook(
        ("picked", "SELECT count(*) AS n FROM orders WHERE region = ${region}", True),
        variables={"region": {"type": "VARCHAR", "default": "EU"}},
    )
    request = spark_request(
        area,
        spark_remote,
        JobKind.WORKBOOK,
        definition,
        inputs={"orders": orders},
        variables={"region": hostile},
    )
    spark_engine.run(request, lambda _: None)
    assert rows(area.staging / "picked.parquet") == [{"n": 0}]


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("SELECT * FROM parquet.`/etc/passwd`", "cannot parse"),
        ('SELECT * FROM parquet."/etc/passwd"', "qualified table name"),
        ("SELECT * FROM read_files('/etc/passwd')", "read_files"),
        ("SELECT reflect('java.lang.System', 'getenv', 'HOME') AS h", "reflect"),
        ("SELECT java_method('java.lang.System', 'exit', 0) AS h", "java_method"),
        ("SELECT input_file_name() AS f FROM orders", "input_file_name"),
        ("SET spark.sql.ansi.enabled = false", "only a read-only query"),
        ("CREATE TABLE t AS SELECT 1", "only a read-only query"),
        ("SELECT * FROM spark_catalog.default.t", "qualified table name"),
        ("SHOW TABLES", "only a read-only query"),
    ],
)
def test_the_sandbox_holds_on_spark(
    area: Area, spark_remote: str, spark_engine: Any, sql: str, message: str
) -> None:
    (area.data / "o.parquet").write_bytes(b"")
    request = spark_request(
        area,
        spark_remote,
        JobKind.WORKBOOK,
        _workbook(("x", sql, True)),
        inputs={"orders": str(area.data / "o.parquet")},
    )
    with pytest.raises(InvalidSql, match=f"(?i){message}"):
        spark_engine.run(request, lambda _: None)
    assert not any(area.staging.glob("*.parquet"))


def test_spark_never_pastes_its_environment_or_settings_into_a_sheets_sql(
    area: Area, spark_remote: str, spark_engine: Any
) -> None:
    # Spark substitutes ${env:X}, ${system:X} and ${<conf>} in SQL text before
    # parsing, string literals included: the server's environment (its secrets)
    # would be a sheet's data. On DuckDB these are plain text; so on Spark.
    orders = _imported_orders(area)
    sql = (
        "SELECT 'x${env:PATH}' AS env, 'x${system:user.name}' AS prop, "
        "E'\\x24{env:PATH}' AS escaped, 'x${spark.master}' AS conf"
    )
    request = spark_request(
        area,
        spark_remote,
        JobKind.WORKBOOK,
        _workbook(("leak", sql, True)),
        inputs={"orders": orders},
    )
    spark_engine.run(request, lambda _: None)
    assert rows(area.staging / "leak.parquet") == [
        {
            "env": "x${env:PATH}",
            "prop": "x${system:user.name}",
            "escaped": "${env:PATH}",
            "conf": "x${spark.master}",
        }
    ]


@pytest.mark.parametrize("kind", ["csv", "parquet", "jsonl"])
def test_an_export_on_spark_stages_one_file_moved_into_place_at_publish(
    area: Area, spark_remote: str, spark_engine: Any, kind: str
) -> None:
    source = area.data / "sheet.parquet"
    pq.write_table(pa.table({"id": [1, 2], "name": ["a", "b,c"]}), source)
    target = area.sinks / f"out.{kind}"
    request = spark_request(
        area,
        spark_remote,
        JobKind.EXPORT,
        {
            "kind": "export",
            "source": {"workbook": "/w.wbk", "sheet": "s"},
            "sink": {"kind": kind, "path": str(target)},
        },
        inputs={"source": str(source)},
    )
    result = spark_engine.run(request, lambda _: None)
    assert result.counters["EXPORT_RECORDS"] == 2
    ((staged, final),) = result.moves
    assert final == str(target)
    assert not target.exists()  # only the worker's publish moves it into place
    with open(staged, "rb") as file:
        text = file.read()
    if kind == "csv":
        assert text.decode().splitlines() == ["id,name", "1,a", '2,"b,c"']
    elif kind == "jsonl":
        assert text.decode().splitlines() == ['{"id":1,"name":"a"}', '{"id":2,"name":"b,c"}']
    else:
        assert pq.read_table(staged).to_pylist() == [
            {"id": 1, "name": "a"},
            {"id": 2, "name": "b,c"},
        ]
    assert result.counters["EXPORT_BYTES"] == len(text)


# 2**32 rows of a cross join: hours on this machine, unless cancelled.
SLOW_SQL = "SELECT count(*) AS n FROM " + ", ".join(f"orders AS o{i}" for i in range(32))


@pytest.mark.parametrize("horse", [None, "horse-a"], ids=["own-session", "horse-session"])
def test_stopping_a_spark_run_cancels_the_clusters_work(
    area: Area, spark_remote: str, spark_engine: Any, horse: str | None
) -> None:
    orders = _imported_orders(area)
    # With a horse's id (as the worker hands requests over) the run works in
    # the horse's long-lived session; without, in a session of its own.
    session = str(uuid.uuid4()) if horse else None  # Spark wants a UUID
    request = spark_request(
        area,
        spark_remote,
        JobKind.WORKBOOK,
        _workbook(("slow", SLOW_SQL, True)),
        inputs={"orders": orders},
        horse_session=session,
    )
    started = threading.Event()
    failure: list[BaseException] = []

    def go() -> None:
        try:
            spark_engine.run(request, lambda _: started.set())
        except BaseException as error:
            failure.append(error)

    runner = threading.Thread(target=go)
    runner.start()
    # The run shows progress once Spark works on it; then the worker's stop
    # path (registry.interrupt, as after killing the run's process) cancels it.
    assert started.wait(300)
    interrupt(request)
    runner.join(120)
    assert not runner.is_alive(), "the Spark query went on after the interrupt"
    assert len(failure) == 1 and isinstance(failure[0], JobFailed)
    assert not (area.staging / "slow.parquet").exists()


def test_runs_on_one_horse_session_see_a_replaced_input_and_not_each_others_views(
    area: Area, spark_remote: str, spark_engine: Any
) -> None:
    orders = _imported_orders(area)
    horse = str(uuid.uuid4())

    def total(definition: dict[str, Any]) -> list[dict[str, Any]]:
        staging = fresh_staging(area)
        request = spark_request(
            area,
            spark_remote,
            JobKind.WORKBOOK,
            definition,
            inputs={"orders": orders},
            horse_session=horse,
        )
        spark_engine.run(request, lambda _: None)
        return rows(staging / "t.parquet")

    summed = _workbook(("t", "SELECT sum(amount) AS s FROM orders", True))
    assert total(summed) == [{"s": 30.5}]
    # A new version of the input at the same path (as a re-import publishes it):
    # the session's view of the old file must not be used.
    replaced = area.data / "replaced.parquet"
    pq.write_table(pa.table({"id": [7], "region": ["EU"], "amount": [1.25]}), replaced)
    os.replace(replaced, orders)
    assert total(summed) == [{"s": 1.25}]
    # The runs' sheets are gone from the horse's session.
    spark = connect(spark_remote, horse)
    try:
        views = {t.name for t in spark.catalog.listTables()}
    finally:
        spark.stop()
    assert views == set()
