"""Very wide typed imports on Spark stay bounded: the plan grows with the width, not faster.

The attack review found that 400-1,000 typed columns crashed Python (a left
fold of one OR per column, too deep to serialise) and ran the Spark server
out of heap (the readability test inlined in every column's count: a plan
quadratic in the width). Both are proved here on the plans the import
builds, without running them, at 1,000 columns and more: running them costs
minutes at that width (Spark compiles code for every column's test; 1,000
columns took about 10 minutes on the loaded 2-core machine, see
docs/decisions.md). test_spark_import_attacks.py runs a 120-column import
on both engines and compares them.
"""

from __future__ import annotations

import math
import uuid
from typing import Any

import pytest

from datamill.domain.definitions import CsvSource
from datamill.domain.status import JobKind
from datamill.engine.duckdb.sources import Output, Scan, SourceColumn
from datamill.engine.spark.coercion import Coercion
from datamill.engine.spark.session import HorseSession, SparkRun
from tests.integration.engine_fixtures import Area
from tests.spark.conftest import spark_request


def _depth(expression: Any) -> int:
    """How deep a Spark Connect expression (protobuf) nests functions."""
    if expression.HasField("unresolved_function"):
        arguments = expression.unresolved_function.arguments
        return 1 + max((_depth(a) for a in arguments), default=0)
    return 1


@pytest.mark.parametrize("width", [1_000, 10_000])
def test_any_of_a_test_per_column_is_a_shallow_expression_that_serialises(width: int) -> None:
    # No server: the expression as the client serialises it, where a left
    # fold of 1,000 ORs overflowed Python's recursion limit.
    pytest.importorskip("pyspark")
    from pyspark.sql.connect import functions as F

    from datamill.engine.spark.imports import _any

    misfits = [~F.col(f"_dm_fits{i}") for i in range(width)]
    serialised = _any(misfits)._expr.to_plan(None)
    # A balanced tree of ORs over NOT(column) leaves.
    assert _depth(serialised) == math.ceil(math.log2(width)) + 2
    names = str(serialised).count("_dm_fits")
    assert names == width


def _plan_bytes(spark_remote: str, area: Area, width: int) -> tuple[int, int]:
    """Serialised sizes of the count and the write plans of a CSV import of `width` BIGINTs."""
    from datamill.engine.spark.imports import _checks_once, _counts, _kept, _read_csv

    csv = area.sources / f"wide{width}.csv"
    csv.write_text(",".join(f"c{i}" for i in range(width)) + "\n")
    columns = [SourceColumn(f"c{i}", f'"c{i}"', "VARCHAR") for i in range(width)]
    outputs = [Output(c.name, c, "BIGINT") for c in columns]
    scan = Scan(lambda _: "", columns, [str(csv)], 0)
    request = spark_request(area, spark_remote, JobKind.IMPORT, {})
    session = HorseSession(spark_remote, str(uuid.uuid4()), per_run=True)
    try:
        run = SparkRun(request, session, lambda _: None, lambda _: None)
        read = _read_csv(run, CsvSource(path=str(csv)), scan, [str(csv)])
        checks = [(c, c.fits()) for c in (Coercion(o, read.column(o)) for o in outputs)]
        read, checked = _checks_once(read, checks)
        client = run.spark.client
        plans = (_counts(read, checked, outputs[0]), _kept(read, checked, outputs))
        # The relation as built (to_proto would compress a big one).
        sizes = [len(p._plan.plan(client).SerializeToString()) for p in plans]
    finally:
        session.close()
    return sizes[0], sizes[1]


def test_the_check_and_write_plans_grow_linearly_with_the_width(
    area: Area, spark_remote: str
) -> None:
    # Quadratic (the readability test of every CSV column repeated per
    # column) is 16x for 4x the columns; linear is 4x.
    narrow = _plan_bytes(spark_remote, area, 250)
    wide = _plan_bytes(spark_remote, area, 1_000)
    assert wide[0] < 4.5 * narrow[0]
    assert wide[1] < 4.5 * narrow[1]
    # And small in absolute terms: well under a megabyte at 1,000 columns.
    assert wide[0] < 1_000_000
    assert wide[1] < 1_000_000
