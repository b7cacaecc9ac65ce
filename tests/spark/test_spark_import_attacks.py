"""Hostile import definitions and files on Spark: same result as DuckDB, or a clear refusal.

Each case is a source a user controls (column names, keys, dialect options)
that once made Spark read something other than what DuckDB reads, or fail
with an engine error instead of a message.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datamill.domain.status import JobKind
from datamill.errors import JobFailed
from tests.integration.engine_fixtures import Area, rows
from tests.integration.swaps import SwapOnFirstProgress, held_below
from tests.spark.conftest import fresh_staging, spark_request
from tests.spark.test_spark_imports import _both


def _spark_refuses(area: Area, engine: Any, remote: str, source: dict[str, Any]) -> str:
    """The message of an import of `source` that Spark refuses, staging nothing."""
    definition = {"kind": "import", "source": source, "engine": "spark"}
    fresh_staging(area)
    with pytest.raises(JobFailed) as refused:
        engine.run(spark_request(area, remote, JobKind.IMPORT, definition), print)
    assert os.listdir(area.staging) == []
    return refused.value.message


def test_parquet_columns_differing_only_in_case_are_refused_on_spark_by_name(
    area: Area, spark_engine: Any, spark_remote: str
) -> None:
    # DuckDB stores `a` and `A_1`; Spark cannot tell `a` from `A`. Refused with
    # a message naming both columns, not Spark's COLUMN_ALREADY_EXISTS.
    parquet = area.sources / "case.parquet"
    pq.write_table(pa.table({"a": [1, 2], "A": [10, 20]}), parquet)
    source = {"kind": "parquet", "path": str(parquet)}
    assert _spark_refuses(area, spark_engine, spark_remote, source) == (
        "the Parquet source has the columns 'a' and 'A', which the Spark engine cannot "
        'tell apart; run this import with "engine": "duckdb"'
    )


def test_json_keys_differing_only_in_case_import_alike(
    area: Area, spark_engine: Any, spark_remote: str
) -> None:
    jsonl = area.sources / "case.jsonl"
    jsonl.write_text(json.dumps({"a": "x", "A": "y"}) + "\n" + json.dumps({"a": "z"}) + "\n")
    source = {"kind": "jsonl", "path": str(jsonl)}
    outcome = _both(area, spark_engine, {"kind": "import", "source": source}, spark_remote)
    assert [sorted(v for v in r.values() if v) for r in outcome.rows] == [["x", "y"], ["z"]]


def test_json_keys_with_dots_and_backticks_import_alike(
    area: Area, spark_engine: Any, spark_remote: str
) -> None:
    jsonl = area.sources / "dots.jsonl"
    jsonl.write_text(json.dumps({"a.b": "1", "c`d": "2", "a": {"b": "nested"}}) + "\n")
    source = {"kind": "jsonl", "path": str(jsonl)}
    outcome = _both(area, spark_engine, {"kind": "import", "source": source}, spark_remote)
    assert outcome.rows[0]["a.b"] == "1"


def test_parquet_names_with_dots_backticks_and_spaces_import_alike(
    area: Area, spark_engine: Any, spark_remote: str
) -> None:
    parquet = area.sources / "names.parquet"
    names = ["a.b", "c`d", "e f", "g,h;{i}(j)=", "_dm_corrupt", "value"]
    pq.write_table(pa.table({n: [i] for i, n in enumerate(names)}), parquet)
    source = {"kind": "parquet", "path": str(parquet)}
    outcome = _both(area, spark_engine, {"kind": "import", "source": source}, spark_remote)
    assert list(outcome.rows[0].values()) == list(range(len(names)))


@pytest.mark.parametrize(
    ("delimiter", "quote", "data"),
    [
        ("\\", '"', b'a\\b\n1\\"x\\y"\n2\\z\n'),
        (";", "'", b"a;b\n1;'x;y'\n2;'it''s'\n"),
        ("\t", '"', b'a\tb\n1\t"x\ty"\n'),
        ("#", '"', b"a#b\n#1\n1#x\n"),
        ("|", "\\", b"a|b\n1|\\x|y\\\n"),
    ],
)
def test_csv_dialects_import_alike(
    area: Area, spark_engine: Any, spark_remote: str, delimiter: str, quote: str, data: bytes
) -> None:
    csv = area.sources / "dialect.csv"
    csv.write_bytes(data)
    source = {"kind": "csv", "path": str(csv), "delimiter": delimiter, "quote": quote}
    _both(area, spark_engine, {"kind": "import", "source": source}, spark_remote)


def test_a_folder_swapped_for_a_symlink_after_the_check_is_not_read_by_spark(
    area: Area, spark_engine: Any, spark_remote: str
) -> None:
    # The worker checks the path, then Spark reads: the first progress report
    # comes after the check and the planner's read of the keys (JSON lines
    # without a schema), before Spark's read. The folder then leads outside;
    # Spark reads the file the worker held open since the check.
    folder = area.sources / "d"
    folder.mkdir()
    (folder / "x.jsonl").write_text('{"v": "mine"}\n')
    checked = os.path.realpath(folder / "x.jsonl")
    (area.outside / "x.jsonl").write_text('{"v": "secret"}\n')
    source = {"kind": "jsonl", "path": str(folder / "x.jsonl")}
    definition = {"kind": "import", "source": source, "engine": "spark"}
    progress = SwapOnFirstProgress(folder, area.outside)
    fresh_staging(area)
    spark_engine.run(spark_request(area, spark_remote, JobKind.IMPORT, definition), progress)
    assert progress.swapped
    assert progress.held == [checked]
    assert folder.is_symlink()
    assert rows(area.staging / "data.parquet") == [{"v": "mine"}]
    # Held for the run only: the worker keeps no source open afterwards.
    assert held_below(area.sources) == []


@pytest.mark.parametrize("server", ["a cluster", "a server the operator says cannot open /proc"])
def test_a_swap_during_a_clusters_read_fails_the_run(
    area: Area, spark_remote: str, server: str
) -> None:
    # A cluster cannot open the worker's descriptors: it reads the checked
    # paths. The local server stands in for one (`same_machine` off, as for
    # an address of another machine), or for a server on this machine under
    # another user (DATAMILL_SPARK_FILE_ACCESS=paths); a swap still in place
    # after its read fails the run, whose staging is then thrown away.
    import uuid

    from datamill.engine.runs import parse_request
    from datamill.engine.spark.imports import run_import
    from datamill.engine.spark.session import HorseSession, SparkRun

    folder = area.sources / "d"
    folder.mkdir()
    (folder / "x.jsonl").write_text('{"v": "mine"}\n')
    (area.outside / "x.jsonl").write_text('{"v": "secret"}\n')
    checked = os.path.realpath(folder / "x.jsonl")
    source = {"kind": "jsonl", "path": str(folder / "x.jsonl")}
    access = "auto" if server == "a cluster" else "paths"
    request = spark_request(
        area,
        spark_remote,
        JobKind.IMPORT,
        {"kind": "import", "source": source},
        spark_file_access=access,
    )
    session = HorseSession(spark_remote, str(uuid.uuid4()), per_run=True)
    if server == "a cluster":
        session.same_machine = False
    progress = SwapOnFirstProgress(folder, area.outside)
    fresh_staging(area)
    try:
        run = SparkRun(request, session, progress, lambda _: None)
        with pytest.raises(JobFailed) as failed:
            run_import(run, parse_request(request))
    finally:
        session.close()
    assert progress.swapped
    assert failed.value.message == (
        f"source file {checked!r} was replaced while Spark read it; nothing was imported"
    )
    assert held_below(area.sources) == []


def test_a_csv_line_longer_than_duckdb_reads_is_not_imported_silently_on_spark(
    area: Area, spark_engine: Any, spark_remote: str
) -> None:
    # DuckDB refuses a line over its max_line_size (2 MiB); Spark has no limit
    # and would hold the whole value in the server's memory.
    csv = area.sources / "long.csv"
    csv.write_bytes(b"a,b\n1,x\n2," + b"y" * (3 * 1024 * 1024) + b"\n3,z\n")
    source = {"kind": "csv", "path": str(csv)}
    _both(area, spark_engine, {"kind": "import", "source": source}, spark_remote)


CSV_CORNERS = {
    "backslash_before_quote": b'a,b\n1,"x\\"\n2,"y\\""z"\n',
    "nul_bytes": b"a,b\n1,x\x00y\n\x002,z\n",
    "spaces": b'a,b\n1, x \n2," y "\n',
    "cr_only": b"a,b\r1,x\r2,y\r",
    "delimiter_only": b"a,b\n,\n1,x\n",
    "hash_line": b"a,b\n#1,x\n2,y\n",
}


@pytest.mark.parametrize("name", list(CSV_CORNERS))
def test_more_csv_corners_import_alike(
    area: Area, spark_engine: Any, spark_remote: str, name: str
) -> None:
    csv = area.sources / f"{name}.csv"
    csv.write_bytes(CSV_CORNERS[name])
    source = {"kind": "csv", "path": str(csv)}
    _both(area, spark_engine, {"kind": "import", "source": source}, spark_remote)
    schema = [{"name": "a", "type": "VARCHAR"}, {"name": "b", "type": "VARCHAR"}]
    _both(area, spark_engine, {"kind": "import", "source": source, "schema": schema}, spark_remote)


def test_a_wide_csv_with_typed_columns_imports_alike(
    area: Area, spark_engine: Any, spark_remote: str
) -> None:
    # Each typed column adds a term to the "does any value not fit" test: a
    # left fold of ORs overflowed the recursion limit at 400 columns, and at
    # 1,000 the inlined readability test ran the server out of heap. Both are
    # proved on the plans at 1,000-10,000 columns (test_spark_wide_imports.py),
    # where running them costs minutes; here the engines agree on a width past
    # Spark's whole-stage code generation (spark.sql.codegen.maxFields, 100).
    width = 120
    csv = area.sources / "wide.csv"
    header = ",".join(f"c{i}" for i in range(width))
    csv.write_text(f"{header}\n" + ",".join(["1"] * width) + "\n" + ",".join(["x"] * width) + "\n")
    source = {"kind": "csv", "path": str(csv)}
    schema = [{"name": f"c{i}", "type": "BIGINT"} for i in range(width)]
    outcome = _both(
        area, spark_engine, {"kind": "import", "source": source, "schema": schema}, spark_remote
    )
    assert outcome.rows == [{f"c{i}": 1 for i in range(width)}]


def test_a_declared_json_column_reads_only_its_exact_key_on_both_engines(
    area: Area, spark_engine: Any, spark_remote: str
) -> None:
    jsonl = area.sources / "exact.jsonl"
    jsonl.write_text('{"ID": "1", "id": "2"}\n{"ID": "3"}\n{"Id": "4", "x": 1}\n')
    source = {"kind": "jsonl", "path": str(jsonl)}
    schema = [{"name": "id", "type": "VARCHAR"}]
    outcome = _both(
        area, spark_engine, {"kind": "import", "source": source, "schema": schema}, spark_remote
    )
    assert [r["id"] for r in outcome.rows] == ["2", None, None]


@pytest.mark.parametrize(
    "second", [{"a": [1.5]}, {"b": [2]}, {"A": [2]}], ids=["double", "other", "case"]
)
def test_parquet_files_with_differing_columns_import_alike(
    area: Area, spark_engine: Any, spark_remote: str, second: dict[str, Any]
) -> None:
    pq.write_table(pa.table({"a": [1]}), area.sources / "p1.parquet")
    pq.write_table(pa.table(second), area.sources / "p2.parquet")
    source = {"kind": "parquet", "path": str(area.sources / "p*.parquet")}
    _both(area, spark_engine, {"kind": "import", "source": source}, spark_remote)


@pytest.mark.parametrize("text", ["02", "x"])
def test_parquet_files_mixing_text_and_numbers_in_a_column_are_refused_on_spark(
    area: Area, spark_engine: Any, spark_remote: str, text: str
) -> None:
    # DuckDB stores '1' and '02' as text; Spark's union cast '02' to 2 (silently
    # altered) or failed on 'x' with CAST_INVALID_INPUT.
    pq.write_table(pa.table({"a": [1]}), area.sources / "p1.parquet")
    pq.write_table(pa.table({"a": [text]}), area.sources / "p2.parquet")
    source = {"kind": "parquet", "path": str(area.sources / "p*.parquet")}
    assert _spark_refuses(area, spark_engine, spark_remote, source) == (
        "column 'a' is text in some Parquet files and not in others, which the Spark "
        'engine reads otherwise; run this import with "engine": "duckdb"'
    )
