"""The shared database of isolation "worker": one DuckDB database, a connection per run."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datamill.domain.status import JobKind, JobStatus
from datamill.engine.duckdb import DuckDBEngine
from datamill.engine.duckdb import dispatch as engine_module
from datamill.engine.duckdb.database import SharedDatabase
from datamill.engine.duckdb.session import Session
from datamill.engine.windows import is_idle_window
from datamill.errors import InvalidSql, JobFailed
from tests.integration.engine_fixtures import Area, make_area, rows


@pytest.fixture
def area(tmp_path: Path) -> Area:
    """Folders for runs in the shared database."""
    return make_area(tmp_path, shared=True)


def _orders(area: Area) -> str:
    path = area.data / "orders.parquet"
    pq.write_table(pa.table({"id": [1, 2, 3], "region": ["EU", "US", "EU"]}), path)
    return str(path)


def _workbook(sql: str) -> dict[str, Any]:
    return {
        "kind": "workbook",
        "sheets": [
            {"kind": "data", "name": "orders", "source": {"importJob": "/Data/o.imp"}},
            {"kind": "sql", "name": "out", "sql": sql, "keep": True},
        ],
    }


def _user_objects(database: SharedDatabase) -> list[tuple[Any, ...]]:
    con = database.con.cursor()
    try:
        return con.execute(
            "SELECT 'view', view_name FROM duckdb_views() WHERE NOT internal "
            "UNION ALL SELECT 'table', table_name FROM duckdb_tables()"
        ).fetchall()
    finally:
        con.close()


def test_runs_share_one_database_and_leave_nothing_in_it(area: Area) -> None:
    orders = _orders(area)
    (area.sources / "people.csv").write_text("name,age\nann,31\nbob,oops\n")
    engine = DuckDBEngine(keep_warm=True)
    try:
        first = engine.run(
            area.request(
                JobKind.WORKBOOK,
                _workbook("SELECT region, count(*) AS n FROM orders GROUP BY region"),
                inputs={"orders": orders},
            ),
            lambda _: None,
        )
        database = engine.workbook_database
        assert database is not None
        assert first.sheets == {"out": 2}
        assert _user_objects(database) == []
        # Nothing of the run stays in the window either: only its empty folders.
        assert database.window is not None and is_idle_window(database.window.root)
        shutil.rmtree(area.staging)
        # An import whose bad line lands in DuckDB's reject tables (TEMP tables).
        imported = engine.run(
            area.request(
                JobKind.IMPORT,
                {
                    "source": {"kind": "csv", "path": str(area.sources / "people.csv")},
                    "schema": [
                        {"name": "name", "type": "VARCHAR"},
                        {"name": "age", "type": "INTEGER"},
                    ],
                    "errorMode": "DROP_RECORD",
                },
            ),
            lambda _: None,
        )
        assert imported.status == JobStatus.COMPLETED_WITH_WARNINGS
        assert rows(area.staging / "data.parquet") == [{"name": "ann", "age": 31}]
        # Imports run in the trusted database, never in the one of user SQL.
        trusted = engine.shared_database
        assert trusted is not None and trusted is not database
        assert _user_objects(trusted) == []
        shutil.rmtree(area.staging)
        # The same sheet name again: the first run's view is gone, not reused.
        second = engine.run(
            area.request(
                JobKind.WORKBOOK,
                _workbook("SELECT id FROM orders WHERE region = 'US'"),
                inputs={"orders": orders},
            ),
            lambda _: None,
        )
        assert second.sheets == {"out": 1}
        assert rows(area.staging / "out.parquet") == [{"id": 2}]
        assert engine.workbook_database is database
        assert _user_objects(database) == []
    finally:
        engine.close()


def test_a_failed_run_leaves_the_database_usable(area: Area) -> None:
    orders = _orders(area)
    engine = DuckDBEngine(keep_warm=True)
    try:
        failing = _workbook("SELECT CAST(region AS INTEGER) AS n FROM orders")
        with pytest.raises(JobFailed, match="Could not convert"):
            engine.run(
                area.request(JobKind.WORKBOOK, failing, inputs={"orders": orders}),
                lambda _: None,
            )
        shutil.rmtree(area.staging, ignore_errors=True)
        fine = area.request(
            JobKind.WORKBOOK, _workbook("SELECT * FROM orders"), inputs={"orders": orders}
        )
        assert engine.run(fine, lambda _: None).sheets == {"out": 3}
    finally:
        engine.close()


def test_the_shared_database_is_locked_to_the_worker_folders(area: Area) -> None:
    orders = _orders(area)
    secret = area.outside / "secret.csv"
    secret.write_text("a\n1\n")
    request = area.request(JobKind.WORKBOOK, _workbook("SELECT 1"), inputs={"orders": orders})
    database = SharedDatabase(request)
    session = Session(request, lambda _: None, shared=database)
    try:
        con = session.con
        # The trade-off of isolation "worker": the whole data root is readable,
        # not only this run's inputs (SQL checking is what keeps users apart).
        assert con.execute(f"SELECT count(*) FROM read_parquet('{orders}')").fetchone() == (3,)
        refused = [
            f"SELECT * FROM read_csv('{secret}')",
            f"SELECT * FROM '{secret}'",
            f"ATTACH '{area.outside / 'x.db'}' AS x",
            f"COPY (SELECT 1) TO '{area.outside / 'leak.csv'}'",
            "INSTALL httpfs",
            "LOAD httpfs",
            "SET enable_external_access = true",
            "SET allowed_directories = ['/']",
            "SET temp_directory = '/tmp'",
        ]
        for statement in refused:
            with pytest.raises(duckdb.Error):
                con.execute(statement)
        con.execute(f"COPY (SELECT 1 AS one) TO '{area.staging / 'ok.parquet'}' (FORMAT parquet)")
    finally:
        session.close()
        database.close()
    assert not (area.outside / "leak.csv").exists()


def test_spill_folders_are_per_process_and_dead_ones_are_removed(
    area: Area, tmp_path: Path
) -> None:
    spill = tmp_path / "spill"
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    dead = spill / f"engine-{int(done.stdout)}"
    dead.mkdir(parents=True)
    (dead / "duckdb_temp_storage.tmp").write_bytes(b"x" * 10)
    request = area.request(JobKind.WORKBOOK, _workbook("SELECT 1"), temp_dir=str(spill))
    database = SharedDatabase(request)
    try:
        assert not dead.exists()
        assert Path(database.spill_dir).parent == spill.resolve()
        assert Path(database.spill_dir).is_dir()
    finally:
        database.close()
    assert not Path(database.spill_dir).exists()


def test_a_database_grown_by_a_big_run_is_replaced_between_runs(
    area: Area, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine_module, "RECYCLE_BYTES", 64 * 1024 * 1024)
    orders = _orders(area)
    engine = DuckDBEngine(keep_warm=True)
    try:
        small = area.request(
            JobKind.WORKBOOK, _workbook("SELECT * FROM orders"), inputs={"orders": orders}
        )
        engine.run(small, lambda _: None)
        engine.between_runs()
        database = engine.workbook_database
        assert database is not None
        shutil.rmtree(area.staging)
        big_sql = (
            "SELECT i, md5(CAST(i AS VARCHAR)) AS h FROM orders, range(3000000) AS t(i) "
            "WHERE orders.id = 1 ORDER BY h"
        )
        big = area.request(JobKind.WORKBOOK, _workbook(big_sql), inputs={"orders": orders})
        assert engine.run(big, lambda _: None).sheets == {"out": 3_000_000}
        grown = engine_module.resident_bytes()
        assert grown - database.opened_rss > 64 * 1024 * 1024
        engine.between_runs()
        assert engine.workbook_database is not database
        assert engine_module.resident_bytes() < grown
        shutil.rmtree(area.staging)
        assert engine.run(small, lambda _: None).sheets == {"out": 3}
    finally:
        engine.close()


def _ignore(_fraction: float) -> None:
    return None


def _progress_settings(con: duckdb.DuckDBPyConnection) -> list[tuple[Any, ...]]:
    names = ("enable_progress_bar", "enable_progress_bar_print")
    return con.execute(f"SELECT {', '.join(f'current_setting({n!r})' for n in names)}").fetchall()


def test_the_next_runs_connection_is_made_between_runs_and_sees_nothing_of_the_last(
    area: Area,
) -> None:
    orders = _orders(area)
    engine = DuckDBEngine(keep_warm=True)
    try:
        # Three sheets: the middle one is a TEMP view of the first run's connection.
        first = {
            "kind": "workbook",
            "sheets": [
                {"kind": "data", "name": "orders", "source": {"importJob": "/Data/o.imp"}},
                {"kind": "sql", "name": "eu", "sql": "SELECT * FROM orders WHERE region = 'EU'"},
                {"kind": "sql", "name": "out", "sql": "SELECT count(*) AS n FROM eu", "keep": True},
            ],
        }
        engine.run(area.request(JobKind.WORKBOOK, first, inputs={"orders": orders}), _ignore)
        database = engine.workbook_database
        assert database is not None
        assert database._next is None  # made between runs, not during one
        engine.between_runs()
        ready = database._next
        assert ready is not None
        # Progress reporting is on for it, printing off, as for a connection made at the start.
        assert _progress_settings(ready) == [(True, False)]
        shutil.rmtree(area.staging)
        # The next run gets that connection: it cannot see the last run's view.
        reusing = _workbook("SELECT * FROM eu")
        with pytest.raises(InvalidSql, match="eu"):
            engine.run(area.request(JobKind.WORKBOOK, reusing, inputs={"orders": orders}), _ignore)
        assert database._next is None
        engine.between_runs()
        shutil.rmtree(area.staging, ignore_errors=True)
        seen: list[float] = []
        fine = area.request(
            JobKind.WORKBOOK, _workbook("SELECT * FROM orders"), inputs={"orders": orders}
        )
        assert engine.run(fine, seen.append).sheets == {"out": 3}
        assert seen[-1] == 1.0
        engine.between_runs()
        unused = database._next
        assert unused is not None
    finally:
        engine.close()
    # Closing the engine closes a prepared connection no run used.
    with pytest.raises(duckdb.ConnectionException):
        unused.execute("SELECT 1")
