"""N3: an import's cost grows with its width, not faster; its width is bounded.

One JSON line of 1,000 keys took 190 s and one CSV row of 1,000 columns 108 s
(DuckDB binds one aggregate per column in time that grows with the square of
their number): a few KB held a worker slot for minutes. Wide imports without a
schema now detect and check types in long form, and read at most
MAX_DETECTED_COLUMNS columns. The timeouts below are far above what the runs
take now and far below what they took before.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from datamill.domain.status import JobStatus
from datamill.engine.duckdb.sources import MAX_DETECTED_COLUMNS
from datamill.errors import JobFailed
from tests.integration.engine_fixtures import imported, make_area, run_import

WIDTH = MAX_DETECTED_COLUMNS


def _values(i: int, line: int) -> object:
    """Column i's value on a line: ints, floats, booleans and text in turn."""
    return [line + i, 0.5 + i, i % 2 == 0, f"t{i}"][i % 4]


@pytest.mark.timeout(40)
@pytest.mark.parametrize("shared", [False, True])
def test_a_json_line_of_the_widest_width_imports_quickly_with_its_types(
    tmp_path: Path, shared: bool
) -> None:
    area = make_area(tmp_path, shared=shared)
    lines = [{f"k{i}": _values(i, line) for i in range(WIDTH)} for line in range(2)]
    # A value that does not fit its column's type keeps that one column text.
    lines[1]["k0"] = "not a number"
    path = area.sources / "wide.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines) + "[1]\n")
    result = run_import(area, {"kind": "jsonl", "path": str(path)})
    assert result.status is JobStatus.COMPLETED_WITH_WARNINGS
    assert result.failure_count == 1  # the line that is not an object
    first = imported(area)[0]
    assert len(first) == WIDTH
    assert (first["k0"], first["k4"], first["k1"], first["k2"], first["k3"]) == (
        "0",
        4,
        1.5,
        True,
        "t3",
    )


@pytest.mark.timeout(40)
@pytest.mark.parametrize("shared", [False, True])
def test_a_csv_row_of_the_widest_width_imports_quickly_with_its_types(
    tmp_path: Path, shared: bool
) -> None:
    area = make_area(tmp_path, shared=shared)
    header = ",".join(f"c{i}" for i in range(WIDTH))
    row = ",".join(
        ["12", "1.5", "2024-01-02", "true", "x", ""] * (WIDTH // 6) + ["7"] * (WIDTH % 6)
    )
    other = row.replace("12", "oops", 1)
    path = area.sources / "wide.csv"
    path.write_text(f"{header}\n{row}\n{other}\n")
    result = run_import(area, {"kind": "csv", "path": str(path)})
    assert result.status is JobStatus.COMPLETED
    records = imported(area)
    assert len(records) == 2 and len(records[0]) == WIDTH
    # c0 holds a value that is no number in the second row: text; c6 stays a number.
    expected = ["12", 1.5, dt.date(2024, 1, 2), True, "x", None, 12]
    assert [records[0][f"c{i}"] for i in range(7)] == expected


@pytest.mark.parametrize("kind", ["jsonl", "csv"])
def test_one_column_more_than_the_bound_fails_the_run_clearly(tmp_path: Path, kind: str) -> None:
    area = make_area(tmp_path)
    width = WIDTH + 1
    path = area.sources / f"wider.{kind}"
    if kind == "jsonl":
        path.write_text(json.dumps({f"k{i}": i for i in range(width)}) + "\n")
        what = "the JSON lines have"
    else:
        path.write_text(",".join(f"c{i}" for i in range(width)) + "\n" + "1," * WIDTH + "1\n")
        what = f"{str(path)!r} has"
    with pytest.raises(JobFailed) as failed:
        run_import(area, {"kind": kind, "path": str(path)})
    assert str(failed.value) == (
        f"{what} {width} columns; an import without a declared schema reads at most {WIDTH}"
    )
    assert not (area.staging / "data.parquet").exists()
