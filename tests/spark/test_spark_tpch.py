"""Differential TPC-H: the 22 queries as one workbook on DuckDB and on Spark, same answers.

Data: `tpchgen-cli` at scale factor 0.01, imported by Datamill's import job
(Parquet source), so the Spark workbook reads data a DuckDB import wrote.
"""

from __future__ import annotations

import datetime as dt
import decimal
import math
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from datamill.domain.status import JobKind
from datamill.engine.duckdb import DuckDBEngine
from tests.conftest import IN_CI
from tests.integration.engine_fixtures import Area, make_area, run_import
from tests.spark.conftest import fresh_staging, spark_request

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from tpch_queries import Q15_SHEETS, QUERIES, TABLES

pytestmark = pytest.mark.spark
SCALE = "0.01"


def _tpchgen() -> str:
    found = shutil.which("tpchgen-cli") or str(Path(sys.executable).parent / "tpchgen-cli")
    if not Path(found).exists():
        if IN_CI:
            pytest.fail("tpchgen-cli is missing (pip install -e '.[dev]')")
        pytest.skip("tpchgen-cli is missing")
    return found


@pytest.fixture(scope="module")
def tpch(tmp_path_factory: pytest.TempPathFactory) -> tuple[Area, dict[str, str]]:
    """TPC-H tables imported by Datamill: the area and table -> published Parquet file."""
    area = make_area(tmp_path_factory.mktemp("tpch"))
    generated = area.sources / "tpch"
    subprocess.run(
        [_tpchgen(), "parquet", "-s", SCALE, "--output-dir", str(generated)],
        check=True,
        capture_output=True,
    )
    published: dict[str, str] = {}
    for table in TABLES:
        run_import(area, {"kind": "parquet", "path": str(generated / f"{table}.parquet")})
        target = area.data / f"{table}.parquet"
        (area.staging / "data.parquet").rename(target)
        fresh_staging(area)
        published[table] = str(target)
    return area, published


def _workbook() -> dict[str, Any]:
    sheets: list[dict[str, Any]] = [
        {"kind": "data", "name": t, "source": {"importJob": f"/Data/ImportJobs/{t}.imp"}}
        for t in TABLES
    ]
    for number, sql in sorted(QUERIES.items()):
        if number == 15:
            sheets.append({"kind": "sql", "name": "revenue0", "sql": Q15_SHEETS[0][1]})
            sheets.append({"kind": "sql", "name": "q15", "sql": Q15_SHEETS[1][1], "keep": True})
        else:
            sheets.append({"kind": "sql", "name": f"q{number:02d}", "sql": sql, "keep": True})
    return {"kind": "workbook", "sheets": sheets}


def _plain(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, dt.datetime):
        return value.date() if value.time() == dt.time() else value
    return value


def _same(a: Any, b: Any) -> bool:
    a, b = _plain(a), _plain(b)
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-6)
    return bool(a == b)


def _answers(folder: Path) -> dict[str, list[tuple[Any, ...]]]:
    found = {}
    for number in QUERIES:
        table = pq.read_table(folder / f"q{number:02d}.parquet")
        found[f"q{number:02d}"] = [tuple(row.values()) for row in table.to_pylist()] + [
            tuple(name.lower() for name in table.column_names)
        ]
    return found


def test_the_22_tpch_queries_give_the_same_answers_on_duckdb_and_spark(
    tpch: tuple[Area, dict[str, str]], spark_remote: str, spark_engine: Any
) -> None:
    area, tables = tpch
    definition = _workbook()
    duck = DuckDBEngine().run(
        area.request(JobKind.WORKBOOK, definition, inputs=tables), lambda _: None
    )
    duck_dir = area.root / "duckdb"
    area.staging.rename(duck_dir)
    spark = spark_engine.run(
        spark_request(area, spark_remote, JobKind.WORKBOOK, definition, inputs=tables),
        lambda _: None,
    )
    assert spark.sheets == duck.sheets
    assert len(spark.sheets) == 22
    duck_answers, spark_answers = _answers(duck_dir), _answers(area.staging)
    differ = {}
    for query, expected in duck_answers.items():
        got = spark_answers[query]
        if len(got) != len(expected) or not all(
            len(g) == len(e) and all(_same(x, y) for x, y in zip(g, e, strict=True))
            for g, e in zip(got, expected, strict=True)
        ):
            differ[query] = (expected[:3], got[:3])
    assert differ == {}
    # The answers are not empty by accident: most queries return rows at this scale.
    assert sum(1 for rows in duck_answers.values() if len(rows) > 1) >= 20
