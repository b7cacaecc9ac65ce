"""Export jobs on real DuckDB: staged file sinks, SQLite and PostgreSQL tables."""

from __future__ import annotations

import json
import os
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datamill.domain.status import JobKind, JobStatus
from datamill.engine.base import RunRequest, RunResult
from datamill.engine.duckdb import DuckDBEngine
from datamill.errors import InvalidInput, PathNotAllowed
from tests.integration.engine_fixtures import (
    Area,
    pg_execute,
    rows,
    run,
)

SHEET = {"id": [1, 2, 3], "name": ["a", "b,c", 'say "hi"'], "price": [1.5, None, 3.0]}


@pytest.fixture
def sheet(area: Area) -> str:
    """The kept sheet to export, as the worker hands it over."""
    path = area.data / "sheet.parquet"
    pq.write_table(pa.table(SHEET), path)
    return str(path)


def export_request(area: Area, sheet: str, sink: dict[str, Any]) -> RunRequest:
    """An export RunRequest for `sink`."""
    definition = {"kind": "export", "source": {"workbook": "/w.wbk", "sheet": "s"}, "sink": sink}
    return area.request(JobKind.EXPORT, definition, inputs={"source": sheet})


def export(area: Area, sheet: str, sink: dict[str, Any]) -> RunResult:
    """Run an export and return its result."""
    result, _ = run(export_request(area, sheet, sink))
    return result


def test_csv_sink_is_staged_not_written(area: Area, sheet: str) -> None:
    final = area.sinks / "out.csv"
    result = export(area, sheet, {"kind": "csv", "path": str(final), "delimiter": ";"})
    assert not final.exists()
    ((staged, target),) = result.moves
    assert target == str(final.resolve())
    assert Path(staged).is_relative_to(area.staging.resolve())
    assert Path(staged).read_text().splitlines() == [
        "id;name;price",
        "1;a;1.5",
        "2;b,c;",
        '3;"say ""hi""";3.0',
    ]
    assert result.status == JobStatus.COMPLETED
    assert result.counters == {
        "EXPORT_RECORDS": 3,
        "EXPORT_DROPPED_RECORDS": 0,
        "EXPORT_BYTES": os.path.getsize(staged),
    }


def test_csv_sink_without_header(area: Area, sheet: str) -> None:
    sink = {"kind": "csv", "path": str(area.sinks / "o.csv"), "header": False}
    ((staged, _),) = export(area, sheet, sink).moves
    assert Path(staged).read_text().splitlines()[0] == "1,a,1.5"


def test_parquet_and_jsonl_sinks(area: Area, sheet: str) -> None:
    ((staged, _),) = export(
        area, sheet, {"kind": "parquet", "path": str(area.sinks / "o.pq")}
    ).moves
    assert rows(staged) == pq.read_table(sheet).to_pylist()
    ((staged, _),) = export(
        area, sheet, {"kind": "jsonl", "path": str(area.sinks / "o.jsonl")}
    ).moves
    lines = [json.loads(line) for line in Path(staged).read_text().splitlines()]
    assert lines[1] == {"id": 2, "name": "b,c", "price": None}


def test_sink_outside_the_roots_is_refused(area: Area, sheet: str) -> None:
    escape = f"{area.sinks}/../outside/o.csv"
    for path in (str(area.outside / "o.csv"), escape, "relative/o.csv"):
        with pytest.raises(PathNotAllowed):
            export(area, sheet, {"kind": "csv", "path": path})
    (area.sinks / "link").symlink_to(area.outside)
    with pytest.raises(PathNotAllowed):
        export(area, sheet, {"kind": "csv", "path": str(area.sinks / "link" / "o.csv")})
    assert not any(area.outside.iterdir())


def test_sink_folder_must_exist(area: Area, sheet: str) -> None:
    with pytest.raises(InvalidInput, match="does not exist"):
        export(area, sheet, {"kind": "csv", "path": str(area.sinks / "missing" / "o.csv")})


def _sqlite_rows(path: Path, table: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as conn:
        return conn.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()


def test_sqlite_replace_and_append(area: Area, sheet: str) -> None:
    db = area.sinks / "out.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE items (old TEXT)")
        conn.execute("INSERT INTO items VALUES ('stale')")
    url = f"sqlite:///{db}"
    result = export(area, sheet, {"kind": "database", "url": url, "table": "items"})
    assert _sqlite_rows(db, "items") == [(1, "a", 1.5), (2, "b,c", None), (3, 'say "hi"', 3.0)]
    assert result.counters["EXPORT_RECORDS"] == 3 and result.counters["EXPORT_BYTES"] > 0
    assert result.moves == ()
    export(area, sheet, {"kind": "database", "url": url, "table": "items", "mode": "append"})
    assert len(_sqlite_rows(db, "items")) == 6
    with sqlite3.connect(db) as conn:
        tables = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    assert tables == [("items",)]


def test_append_to_a_table_without_the_columns_is_clear(area: Area, sheet: str) -> None:
    db = area.sinks / "out.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE items (id INTEGER)")
    sink = {"kind": "database", "url": f"sqlite:///{db}", "table": "items", "mode": "append"}
    with pytest.raises(InvalidInput, match="has no column 'name', 'price'"):
        export(area, sheet, sink)


class Stop(Exception):
    """Raised by the progress callback to end the run midway."""


def test_sqlite_replace_is_atomic(area: Area, tmp_path: Path) -> None:
    big = tmp_path / "big.parquet"
    pq.write_table(pa.table({"id": list(range(20_000))}), big)
    db = area.sinks / "out.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE items (id INTEGER)")
        conn.execute("INSERT INTO items VALUES (-1)")
    sink = {"kind": "database", "url": f"sqlite:///{db}", "table": "items"}
    request = export_request(area, str(big), sink)

    def stop_midway(fraction: float) -> None:
        if fraction > 0.3:
            raise Stop

    with pytest.raises(Stop):
        DuckDBEngine().run(request, stop_midway)
    assert _sqlite_rows(db, "items") == [(-1,)]
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM sqlite_master").fetchone() == (1,)


def test_sqlite_sink_outside_roots_or_on_the_store_is_refused(area: Area, sheet: str) -> None:
    outside = {"kind": "database", "url": f"sqlite:///{area.outside}/x.db", "table": "t"}
    with pytest.raises(PathNotAllowed):
        export(area, sheet, outside)
    store = area.sinks / "store.db"
    store.touch()
    (area.sinks / "alias.db").symlink_to(store)
    request = export_request(
        area, sheet, {"kind": "database", "url": f"sqlite:///{area.sinks}/alias.db", "table": "t"}
    )
    request = RunRequest(**{**_fields(request), "forbidden_database_urls": (f"sqlite:///{store}",)})
    with pytest.raises(PathNotAllowed, match="Datamill's own database"):
        DuckDBEngine().run(request, lambda _: None)


def _fields(request: RunRequest) -> dict[str, Any]:
    return {name: getattr(request, name) for name in RunRequest.__dataclass_fields__}


@pytest.mark.postgres
def test_postgres_replace_and_append(area: Area, sheet: str, postgres_url: str) -> None:
    table = f"dm_sink_{uuid.uuid4().hex[:8]}"
    pg_execute(postgres_url, f"CREATE TABLE {table} (legacy int)")
    sink = {"kind": "database", "url": postgres_url, "table": table}
    try:
        export(area, sheet, sink)
        query = f"SELECT id, name, price FROM {table} ORDER BY id"
        assert pg_execute(postgres_url, query) == [
            (1, "a", 1.5),
            (2, "b,c", None),
            (3, 'say "hi"', 3.0),
        ]
        export(area, sheet, {**sink, "mode": "append"})
        assert pg_execute(postgres_url, f"SELECT count(*) FROM {table}") == [(6,)]
    finally:
        pg_execute(postgres_url, f"DROP TABLE IF EXISTS {table}")


@pytest.mark.postgres
def test_postgres_store_database_is_refused_under_another_spelling(
    area: Area, sheet: str, postgres_url: str
) -> None:
    import sqlalchemy as sa

    url = sa.make_url(postgres_url)
    alias = url.set(host="localhost" if url.host != "localhost" else "127.0.0.1")
    request = export_request(
        area,
        sheet,
        {"kind": "database", "url": alias.render_as_string(hide_password=False), "table": "t"},
    )
    request = RunRequest(**{**_fields(request), "forbidden_database_urls": (postgres_url,)})
    with pytest.raises(PathNotAllowed, match="Datamill's own database"):
        DuckDBEngine().run(request, lambda _: None)
