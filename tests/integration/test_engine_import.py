"""Import jobs on real DuckDB: every source kind, schemas, error modes, memory limits."""

from __future__ import annotations

import json
import os
import sqlite3
import uuid
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datamill.domain.status import JobKind, JobStatus
from datamill.errors import InvalidInput, JobFailed
from tests.integration.engine_fixtures import (
    Area,
    imported,
    pg_execute,
    run,
    run_import,
)

ORDERS_CSV = "id,name,amount\n1,Ann,10.5\n2,Bob,7\n3,Cid,\n"


def _write(path: Path, text: str, encoding: str = "utf-8") -> str:
    path.write_text(text, encoding=encoding)
    return str(path)


def test_csv_with_header_detects_types_and_counts(area: Area) -> None:
    path = _write(area.sources / "orders.csv", ORDERS_CSV)
    result = run_import(area, {"kind": "csv", "path": path})
    assert imported(area) == [
        {"id": 1, "name": "Ann", "amount": 10.5},
        {"id": 2, "name": "Bob", "amount": 7.0},
        {"id": 3, "name": "Cid", "amount": None},
    ]
    assert result.status == JobStatus.COMPLETED
    assert result.sheets == {"data": 3}
    assert (result.success_count, result.failure_count) == (3, 0)
    output_bytes = (area.staging / "data.parquet").stat().st_size
    assert result.counters == {
        "IMPORT_RECORDS": 3,
        "IMPORT_BYTES": len(ORDERS_CSV),
        "IMPORT_DROPPED_RECORDS": 0,
        "IMPORT_PREVIEW_RECORDS": 3,
        "IMPORT_OUTPUT_BYTES": output_bytes,
        "IMPORT_DROPPED_SPLITS": 0,
        "IMPORT_OUTPUT_PARTITIONS": 1,
    }


def test_csv_delimiter_quote_and_latin1(area: Area) -> None:
    text = "id;city;note\n1;Zürich;'a; b'\n2;Malmö;'it''s'\n"
    path = _write(area.sources / "cities.csv", text, encoding="latin-1")
    source = {"kind": "csv", "path": path, "delimiter": ";", "quote": "'", "encoding": "latin-1"}
    run_import(area, source)
    assert imported(area) == [
        {"id": 1, "city": "Zürich", "note": "a; b"},
        {"id": 2, "city": "Malmö", "note": "it's"},
    ]


def test_csv_without_header_names_columns_by_position(area: Area) -> None:
    path = _write(area.sources / "raw.csv", "1,x\n2,y\n")
    run_import(area, {"kind": "csv", "path": path, "header": False})
    assert imported(area) == [{"column0": 1, "column1": "x"}, {"column0": 2, "column1": "y"}]


def test_csv_without_header_takes_schema_names(area: Area) -> None:
    path = _write(area.sources / "raw.csv", "1,x\n2,y\n")
    schema = [{"name": "id", "type": "BIGINT"}, {"name": "code", "type": "VARCHAR"}]
    run_import(area, {"kind": "csv", "path": path, "header": False}, schema=schema)
    assert imported(area) == [{"id": 1, "code": "x"}, {"id": 2, "code": "y"}]


def test_csv_value_not_fitting_detected_type_keeps_column_as_text(area: Area) -> None:
    # Detection samples the first records; a later misfit must not drop data.
    lines = ["n"] + [str(i) for i in range(30_000)] + ["n/a"]
    path = _write(area.sources / "n.csv", "\n".join(lines) + "\n")
    result = run_import(area, {"kind": "csv", "path": path})
    data = imported(area)
    assert result.status == JobStatus.COMPLETED
    assert len(data) == 30_001
    assert data[0] == {"n": "0"} and data[-1] == {"n": "n/a"}


def test_glob_reads_every_matching_file(area: Area) -> None:
    for month in (1, 2, 3):
        _write(area.sources / f"sales-{month}.csv", f"month,total\n{month},{month * 100}\n")
    _write(area.sources / "other.csv", "month,total\n9,9\n")
    result = run_import(area, {"kind": "csv", "path": str(area.sources / "sales-*.csv")})
    assert sorted(r["month"] for r in imported(area)) == [1, 2, 3]
    assert result.counters["IMPORT_RECORDS"] == 3


@pytest.mark.parametrize("kind", ["csv", "jsonl", "parquet"])
def test_files_whose_names_hold_wildcards_are_read_once_each(area: Area, kind: str) -> None:
    # A glob's matches are handed to DuckDB by name; DuckDB would expand a
    # name's own wildcards again: `a?.csv` would read `ab.csv` a second time,
    # `c[1].csv` would read `c1.csv` instead of itself.
    names = {"a?": 1, "ab": 2, "c[1]": 3, "c1": 4, "d*": 5}
    for name, value in names.items():
        path = area.sources / f"{name}.{kind}"
        if kind == "csv":
            _write(path, f"v\n{value}\n")
        elif kind == "jsonl":
            _write(path, json.dumps({"v": value}) + "\n")
        else:
            pq.write_table(pa.table({"v": [value]}), path)
    result = run_import(area, {"kind": kind, "path": str(area.sources / f"*.{kind}")})
    assert sorted(r["v"] for r in imported(area)) == [1, 2, 3, 4, 5]
    assert result.counters["IMPORT_RECORDS"] == 5


def test_jsonl_source(area: Area) -> None:
    lines = [{"id": 1, "tags": ["a"], "ok": True}, {"id": 2, "price": 2.5, "ok": False}]
    path = _write(area.sources / "e.jsonl", "\n".join(json.dumps(x) for x in lines) + "\n")
    result = run_import(area, {"kind": "jsonl", "path": path})
    assert imported(area) == [
        {"id": 1, "tags": '["a"]', "ok": True, "price": None},
        {"id": 2, "tags": None, "ok": False, "price": 2.5},
    ]
    assert result.status == JobStatus.COMPLETED


def test_parquet_source_keeps_types(area: Area) -> None:
    path = area.sources / "p.parquet"
    pq.write_table(pa.table({"id": [1, 2], "day": pa.array([19000, 19001], pa.date32())}), path)
    result = run_import(area, {"kind": "parquet", "path": str(path)})
    data = imported(area)
    assert [r["id"] for r in data] == [1, 2]
    assert str(data[0]["day"]) == "2022-01-08"
    assert result.counters["IMPORT_BYTES"] == path.stat().st_size


@pytest.mark.parametrize("kind", ["parquet", "csv"])
def test_a_folder_named_key_value_adds_no_column(area: Area, kind: str) -> None:
    """Datameer imports a file's own columns; a `year=2024` folder is only a name (docs/jobs.md)."""
    folder = area.sources / "year=2024"
    folder.mkdir()
    path = folder / f"x.{kind}"
    if kind == "parquet":
        pq.write_table(pa.table({"v": [1]}), path)
    else:
        path.write_text("v\n1\n")
    run_import(area, {"kind": kind, "path": str(folder / f"*.{kind}")})
    assert imported(area) == [{"v": 1}]


def _sqlite(area: Area) -> str:
    path = area.sources / "shop.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE orders (id INTEGER, customer TEXT, amount REAL)")
        conn.executemany(
            "INSERT INTO orders VALUES (?, ?, ?)",
            [(i, f"c{i % 3}", i * 1.5) for i in range(25_000)],
        )
    return f"sqlite:///{path}"


def test_sqlite_table_streams_in_batches(area: Area) -> None:
    result = run_import(area, {"kind": "database", "url": _sqlite(area), "table": "orders"})
    data = imported(area)
    assert len(data) == 25_000
    assert data[24_999] == {"id": 24_999, "customer": "c0", "amount": 24_999 * 1.5}
    assert result.counters["IMPORT_BYTES"] > 0
    assert result.sheets == {"data": 25_000}
    assert os.listdir(area.staging) == ["data.parquet"]


def test_sqlite_query(area: Area) -> None:
    query = "SELECT customer, count(*) AS n FROM orders GROUP BY customer ORDER BY customer"
    run_import(area, {"kind": "database", "url": _sqlite(area), "query": query})
    assert imported(area) == [
        {"customer": "c0", "n": 8334},
        {"customer": "c1", "n": 8333},
        {"customer": "c2", "n": 8333},
    ]


def test_sqlite_query_cannot_change_the_database(area: Area) -> None:
    url = _sqlite(area)
    with pytest.raises(JobFailed, match=r"readonly|read-only|only read"):
        run_import(area, {"kind": "database", "url": url, "query": "DELETE FROM orders"})
    with sqlite3.connect(area.sources / "shop.db") as conn:
        assert conn.execute("SELECT count(*) FROM orders").fetchone() == (25_000,)


@pytest.mark.postgres
def test_postgres_table(area: Area, postgres_url: str) -> None:
    table = f"dm_src_{uuid.uuid4().hex[:8]}"
    pg_execute(
        postgres_url,
        f"CREATE TABLE {table} (id bigint, name text, paid numeric(10,2), day date)",
        f"INSERT INTO {table} SELECT i, 'n' || i, i * 1.25, DATE '2024-01-01' + i "
        "FROM generate_series(1, 12000) i",
    )
    try:
        result = run_import(area, {"kind": "database", "url": postgres_url, "table": table})
    finally:
        pg_execute(postgres_url, f"DROP TABLE {table}")
    data = imported(area)
    assert result.counters["IMPORT_RECORDS"] == 12_000
    assert data[0]["id"] == 1 and data[0]["name"] == "n1"
    assert float(data[0]["paid"]) == 1.25 and str(data[0]["day"]) == "2024-01-02"


SCHEMA = [
    {"name": "id", "type": "BIGINT"},
    {"name": "amount", "type": "DOUBLE"},
    {"name": "day", "type": "DATE"},
]
BAD_CSV = (
    "id,amount,day,extra\n"
    "1,1.5,2024-01-01,x\n"
    "2,abc,2024-01-02,x\n"  # amount is not a DOUBLE
    "3,2,2024-13-40,x\n"  # not a date
    "4.5,2,2024-01-04,x\n"  # not an integer (a cast would round it)
    "5,,,x\n"  # empty values are NULL, not bad
    "6,3,2024-01-06,x,surplus\n"  # structurally broken line
)


def test_schema_drop_record_counts_and_warns(area: Area) -> None:
    path = _write(area.sources / "bad.csv", BAD_CSV)
    result = run_import(area, {"kind": "csv", "path": path}, schema=SCHEMA)
    assert [r["id"] for r in imported(area)] == [1, 5]
    assert imported(area)[1] == {"id": 5, "amount": None, "day": None}
    assert result.status == JobStatus.COMPLETED_WITH_WARNINGS
    assert (result.success_count, result.failure_count) == (2, 4)
    assert result.counters["IMPORT_DROPPED_RECORDS"] == 4
    assert result.counters["IMPORT_RECORDS"] == 2
    assert any("3 record(s)" in w for w in result.warnings)
    assert any("line 7" in w for w in result.warnings)


def test_schema_fail_mode_names_count_and_first_bad_value(area: Area) -> None:
    path = _write(area.sources / "bad.csv", BAD_CSV)
    with pytest.raises(JobFailed) as failure:
        run_import(area, {"kind": "csv", "path": path}, schema=SCHEMA, errorMode="FAIL")
    assert "3 record(s)" in failure.value.message
    assert "'abc'" in failure.value.message and "amount" in failure.value.message


def test_fail_mode_fails_on_a_broken_csv_line(area: Area) -> None:
    path = _write(area.sources / "b.csv", "a,b\n1,2\n3,4,5\n")
    with pytest.raises(JobFailed, match="line 3"):
        run_import(area, {"kind": "csv", "path": path}, errorMode="FAIL")


def test_malformed_json_lines_are_dropped_and_counted(area: Area) -> None:
    text = '{"id": 1}\n{"id": 2,\n[1, 2]\n\n{"id": "x"}\n{"id": 4}\n'
    path = _write(area.sources / "m.jsonl", text)
    result = run_import(area, {"kind": "jsonl", "path": path}, schema=[SCHEMA[0]])
    assert [r["id"] for r in imported(area)] == [1, 4]
    assert result.failure_count == 3
    assert result.status == JobStatus.COMPLETED_WITH_WARNINGS


def test_malformed_json_line_fails_in_fail_mode(area: Area) -> None:
    path = _write(area.sources / "m.jsonl", '{"id": 1}\nnot json\n')
    with pytest.raises(JobFailed, match="1 line"):
        run_import(area, {"kind": "jsonl", "path": path}, errorMode="FAIL")


def test_schema_column_missing_from_source_is_clear(area: Area) -> None:
    path = _write(area.sources / "o.csv", ORDERS_CSV)
    schema = [{"name": "total", "type": "DOUBLE"}]
    with pytest.raises(InvalidInput, match="'total' is not in the source"):
        run_import(area, {"kind": "csv", "path": path}, schema=schema)


def test_progress_is_monotonic_and_ends_at_one(area: Area) -> None:
    path = _write(area.sources / "o.csv", ORDERS_CSV)
    _, seen = run(area.request(JobKind.IMPORT, {"source": {"kind": "csv", "path": path}}))
    assert seen and seen[-1] == 1.0
    assert seen == sorted(seen) and all(0.0 <= p <= 1.0 for p in seen)


def test_big_csv_import_with_small_memory_limit(area: Area) -> None:
    path = area.sources / "big.csv"
    generator = duckdb.connect()
    generator.execute(
        "COPY (SELECT i AS id, 'name_' || i AS name, (i * 7) % 1000 / 10.0 AS amount, "
        "DATE '2020-01-01' + (i % 1000)::INT AS day, md5(i::VARCHAR) AS hash "
        f"FROM range(1500000) t(i)) TO '{path}' (HEADER)"
    )
    generator.close()
    assert path.stat().st_size > 90_000_000
    request = area.request(
        JobKind.IMPORT,
        {"source": {"kind": "csv", "path": str(path)}},
        memory_limit="64MB",
        threads=2,
        temp_dir=str(area.root / "spill"),
    )
    result, seen = run(request)
    assert result.counters["IMPORT_RECORDS"] == 1_500_000
    assert result.counters["IMPORT_PREVIEW_RECORDS"] == 5_000
    assert result.status == JobStatus.COMPLETED
    # Progress came from DuckDB while the long queries ran, not only step ends.
    assert len([p for p in seen if p < 0.99]) > 3
