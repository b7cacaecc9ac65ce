"""Workbooks on real DuckDB: sheets, typed variables, refused SQL, lock-down, progress."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datamill.domain.status import JobKind, JobStatus
from datamill.engine.base import RunRequest
from datamill.engine.duckdb.session import Session
from datamill.errors import InvalidInput, InvalidSql
from tests.integration.engine_fixtures import Area, rows, run

ORDERS = {
    "id": [1, 2, 3, 4],
    "region": ["EU", "US", "EU", "APAC"],
    "amount": [10.0, 20.0, 30.0, 40.0],
    "day": pa.array([19700, 19701, 19702, 19703], pa.date32()),
}


@pytest.fixture
def orders(area: Area) -> str:
    """A Parquet file of orders under the data root (not a source root)."""
    path = area.data / "orders.parquet"
    pq.write_table(pa.table(ORDERS), path)
    return str(path)


def workbook(*sql_sheets: tuple[str, str, bool], **extra: Any) -> dict[str, Any]:
    """A workbook with the data sheet "orders" and the given (name, sql, keep) sheets."""
    sheets: list[dict[str, Any]] = [
        {"kind": "data", "name": "orders", "source": {"importJob": "/Data/ImportJobs/o.imp"}}
    ]
    sheets += [{"kind": "sql", "name": n, "sql": s, "keep": k} for n, s, k in sql_sheets]
    return {"kind": "workbook", "sheets": sheets, **extra}


def wb_request(area: Area, orders: str, definition: dict[str, Any], **extra: Any) -> RunRequest:
    """A workbook RunRequest reading `orders`."""
    return area.request(JobKind.WORKBOOK, definition, inputs={"orders": orders}, **extra)


def test_sheets_run_in_order_and_kept_ones_are_staged(area: Area, orders: str) -> None:
    definition = workbook(
        ("eu", "SELECT * FROM orders WHERE region = 'EU'", False),
        ("eu_total", "SELECT count(*) AS n, sum(amount) AS total FROM eu", True),
        ("big", "SELECT id FROM orders WHERE amount > 15 ORDER BY id", True),
    )
    result, _ = run(wb_request(area, orders, definition))
    assert result.status == JobStatus.COMPLETED
    assert result.sheets == {"eu_total": 1, "big": 3}
    assert rows(area.staging / "eu_total.parquet") == [{"n": 2, "total": 40.0}]
    assert rows(area.staging / "big.parquet") == [{"id": 2}, {"id": 3}, {"id": 4}]
    # Only kept sheets are left in staging: the worker publishes what is there.
    assert sorted(os.listdir(area.staging)) == ["big.parquet", "eu_total.parquet"]
    output = sum((area.staging / f).stat().st_size for f in os.listdir(area.staging))
    assert result.counters == {
        "WORKBOOK_RECORDS": 4,
        "WORKBOOK_DROPPED_RECORDS": 0,
        "WORKBOOK_OUTPUT_BYTES": output,
        "WORKBOOK_SHEETS": 4,
    }


def test_kept_data_sheet_is_copied(area: Area, orders: str) -> None:
    definition = workbook(("n", "SELECT count(*) AS n FROM orders", False))
    definition["sheets"][0]["keep"] = True
    result, _ = run(wb_request(area, orders, definition))
    assert result.sheets == {"orders": 4}
    assert [r["id"] for r in rows(area.staging / "orders.parquet")] == [1, 2, 3, 4]


VARIABLES = {
    "region": {"type": "VARCHAR", "default": "EU"},
    "min_amount": {"type": "BIGINT", "default": 0},
    "since": {"type": "DATE", "default": "2000-01-01"},
}
FILTERED = (
    "SELECT id FROM orders WHERE region = ${region} AND amount >= ${min_amount} "
    "AND day >= '${since}' ORDER BY id"
)


def test_variables_are_bound_with_their_types(area: Area, orders: str) -> None:
    definition = workbook(("hits", FILTERED, True), variables=VARIABLES)
    run(wb_request(area, orders, definition))
    assert rows(area.staging / "hits.parquet") == [{"id": 1}, {"id": 3}]
    # Given values override defaults; text is coerced to the declared type.
    given = {"region": "EU", "min_amount": "20", "since": "2023-12-10"}
    run(wb_request(area, orders, definition, variables=given))
    assert rows(area.staging / "hits.parquet") == [{"id": 3}]


def test_injection_in_a_varchar_value_matches_nothing_and_damages_nothing(
    area: Area, orders: str
) -> None:
    definition = workbook(
        ("hits", FILTERED, True),
        ("still_there", "SELECT count(*) AS n FROM orders", True),
        variables=VARIABLES,
    )
    evil = {"region": "x' OR 1=1; DROP TABLE orders; --"}
    result, _ = run(wb_request(area, orders, definition, variables=evil))
    assert result.sheets == {"hits": 0, "still_there": 1}
    assert rows(area.staging / "still_there.parquet") == [{"n": 4}]
    assert pq.read_table(orders).num_rows == 4


def test_bigint_value_that_is_not_a_number_is_refused(area: Area, orders: str) -> None:
    definition = workbook(("hits", FILTERED, True), variables=VARIABLES)
    with pytest.raises(InvalidInput, match='variable "min_amount"'):
        run(wb_request(area, orders, definition, variables={"min_amount": "1; DROP"}))


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT * FROM read_csv('/etc/passwd')", "table function READ_CSV"),
        ("SELECT * FROM '/etc/passwd'", '"/etc/passwd" is not a sheet'),
        ("ATTACH '/tmp/x.db' AS x", "not ATTACH"),
        ("COPY orders TO '/tmp/out.csv'", "not COPY"),
        ("INSTALL httpfs", "not INSTALL"),
        ("LOAD httpfs", "not LOAD"),
        ("SELECT getenv('HOME') AS home", "function getenv is not allowed"),
        ("SELECT * FROM main.orders", 'qualified table name "main.orders"'),
        ("SELECT 1 AS a; DROP TABLE orders", "exactly one query, found 2"),
        ("SELECT * FROM ordrs", 'unknown sheet "ordrs"'),
        ("SELECT * FROM later", 'sheet "later" comes later'),
        ("SELECT nope FROM orders", "nope"),
    ],
)
def test_refused_sql_names_the_sheet(area: Area, orders: str, sql: str, expected: str) -> None:
    definition = workbook(("bad", sql, True), ("later", "SELECT 1 AS one", False))
    with pytest.raises(InvalidSql) as refused:
        run(wb_request(area, orders, definition))
    assert refused.value.message.startswith("sheets[1].sql: ")
    assert expected in refused.value.message
    assert not any(p.endswith(".parquet") for p in os.listdir(area.staging))


def test_lock_down_stops_sql_that_got_past_the_checks(area: Area, orders: str) -> None:
    secret = area.outside / "secret.csv"
    secret.write_text("a\n1\n")
    session = Session(wb_request(area, orders, workbook()), lambda _: None)
    try:
        con = session.con
        con.execute(f"CREATE VIEW orders AS SELECT * FROM read_parquet('{orders}')")
        session.lock_down([orders])
        assert con.execute("SELECT count(*) FROM orders").fetchone() == (4,)
        refused = [
            f"SELECT * FROM read_csv('{secret}')",
            f"SELECT * FROM '{secret}'",
            f"ATTACH '{area.outside / 'x.db'}' AS x",
            f"COPY orders TO '{area.outside / 'leak.csv'}'",
            "INSTALL httpfs",
            "LOAD httpfs",
            "SET enable_external_access = true",
            "SET allowed_directories = ['/']",
            "SET lock_configuration = false",
        ]
        for statement in refused:
            with pytest.raises(duckdb.Error):
                con.execute(statement)
        # The run's own staging stays writable.
        con.execute(f"COPY orders TO '{area.staging / 'ok.parquet'}' (FORMAT parquet)")
    finally:
        session.close()
    assert not (area.outside / "leak.csv").exists()


def test_progress_follows_a_long_query_and_ends_at_one(area: Area, orders: str) -> None:
    slow = "SELECT i % 1000 AS k, sum(i) AS s FROM range(150000000) t(i) GROUP BY ALL"
    definition = workbook(("slow", slow, True))
    result, seen = run(wb_request(area, orders, definition))
    assert result.sheets == {"slow": 1000}
    assert seen[-1] == 1.0 and seen == sorted(seen)
    assert len([p for p in seen if 0.0 < p < 0.99]) >= 3, seen


class Stop(Exception):
    """What a worker's progress callback raises to end a run."""


def test_a_refusing_progress_callback_interrupts_the_query(area: Area, orders: str) -> None:
    # A query over 10^18 rows would run for centuries: that it ends at all
    # proves the refusal interrupted it.
    endless = "SELECT i % 7 AS k, sum(i) AS s FROM range(1000000000000000000) t(i) GROUP BY ALL"
    request = wb_request(area, orders, workbook(("slow", endless, True)))
    refusals: list[float] = []
    raised: list[BaseException] = []

    def refuse(fraction: float) -> None:
        refusals.append(fraction)
        raise Stop

    def run_it() -> None:
        from datamill.engine.duckdb import DuckDBEngine

        try:
            DuckDBEngine().run(request, refuse)
        except BaseException as error:  # reported by the assertions below
            raised.append(error)

    running = threading.Thread(target=run_it, daemon=True)
    running.start()
    running.join(120)  # a safety net only: an uninterrupted query never ends
    assert not running.is_alive(), "the query went on after the callback refused"
    assert [type(e) for e in raised] == [Stop]
    assert len(refusals) == 1  # asked once, refused, and never asked again
    assert not (Path(request.staging_dir) / "slow.parquet").exists()


def test_sort_bigger_than_memory_spills_to_temp_dir(area: Area, tmp_path: Path) -> None:
    big = area.data / "big.parquet"
    with duckdb.connect() as con:
        con.execute(
            "COPY (SELECT i AS id, md5(i::VARCHAR) AS h FROM range(1500000) t(i)) "
            f"TO '{big}' (FORMAT parquet)"
        )
    spill = tmp_path / "spill"
    spilled: list[bool] = []

    def watch(fraction: float) -> None:
        # A shared database spills into a folder of its process below `spill`.
        spilled.append(spill.exists() and any(p.is_file() for p in spill.rglob("*")))

    definition = workbook(("sorted", "SELECT * FROM orders ORDER BY h", True))
    request = area.request(
        JobKind.WORKBOOK,
        definition,
        inputs={"orders": str(big)},
        memory_limit="100MB",
        temp_dir=str(spill),
    )
    from datamill.engine.duckdb import DuckDBEngine

    result = DuckDBEngine().run(request, watch)
    assert result.sheets == {"sorted": 1_500_000}
    assert any(spilled)
