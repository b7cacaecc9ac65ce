"""Workbooks on Spark: the same checked SQL as on DuckDB, transpiled to Spark SQL.

Every sheet's SQL passes engine/sql.py (one read-only query over earlier
sheets, no files, no settings, no denied functions) exactly as on DuckDB; the
checked DuckDB SQL that sqlglot regenerated is transpiled to Spark SQL, and
variables stay positional `?` parameters bound to typed values by Spark.
"""

from __future__ import annotations

import functools
import os
import shutil
import time
from collections.abc import Mapping

import pyarrow.parquet as pq
import sqlglot
from sqlglot.errors import ErrorLevel

from datamill.domain import runlog as rl
from datamill.domain.definitions import DataSheet, SqlSheet, WorkbookDefinition
from datamill.engine.base import RunResult
from datamill.engine.runs import workbook_inputs, workbook_result
from datamill.engine.spark.files import write_one_file
from datamill.engine.spark.session import SparkRun
from datamill.engine.sql import DIALECT, bind_workbook
from datamill.errors import InvalidSql

RAISE = ErrorLevel.RAISE


def to_spark_sql(sql: str, where: str) -> str:
    """Checked DuckDB SQL (with `?` parameters) as Spark SQL."""
    try:
        spark = sqlglot.transpile(sql, read=DIALECT, write="spark", unsupported_level=RAISE)
    except sqlglot.errors.SqlglotError as error:
        raise InvalidSql(f"{where}: cannot be run on Spark: {error}") from None
    return str(spark[0])


def run_workbook(run: SparkRun, definition: WorkbookDefinition) -> RunResult:
    """Register data sheets as views, run SQL sheets in order, stage the kept ones."""
    request = run.request
    # Every sheet is checked, bound and transpiled before any data is touched.
    bound = bind_workbook(definition, request.variables)
    spark_sql = {
        s.name: to_spark_sql(bound[s.name].sql, f"sheets[{i}].sql")
        for i, s in enumerate(definition.sheets)
        if isinstance(s, SqlSheet)
    }
    inputs: Mapping[str, str] = workbook_inputs(request, definition)

    def source(name: str, path: str) -> None:
        run.view(name, run.session.source(path))

    def view(name: str, path: str) -> None:
        run.view(name, run.session.source(path))

    def query(name: str, target: str) -> None:
        params = list(bound[name].params)
        write_one_file(run.spark.sql(spark_sql[name], args=params or None), target)

    def copy(name: str, target: str) -> None:
        write_one_file(run.spark.table(name), target)

    for index, sheet in enumerate(definition.sheets):
        if isinstance(sheet, DataSheet):
            run.execute(
                functools.partial(source, sheet.name, inputs[sheet.name]),
                context=f'sheets[{index}]: reading the data of sheet "{sheet.name}"',
            )
    work_dir = os.path.join(run.staging_dir, "_work")
    os.makedirs(work_dir, exist_ok=True)
    steps = [s for s in definition.sheets if isinstance(s, SqlSheet) or s.keep]
    share = 0.99 / len(steps)
    kept: dict[str, int] = {}
    # No sheet after the last SQL sheet can name it: its result is not read back.
    last_sql = max(
        (i for i, s in enumerate(definition.sheets) if isinstance(s, SqlSheet)), default=-1
    )
    for index, sheet in enumerate(definition.sheets):
        if not (isinstance(sheet, SqlSheet) or sheet.keep):
            continue
        folder = run.staging_dir if sheet.keep else work_dir
        target = os.path.join(folder, f"{sheet.name}.parquet")
        context = f'sheets[{index}] "{sheet.name}"'
        run.where = {"sheet": sheet.name, "index": index}
        began = time.monotonic()
        if isinstance(sheet, SqlSheet):
            run.execute(
                functools.partial(query, sheet.name, target),
                context=context,
                share=share,
                user_sql=f"sheets[{index}].sql",
            )
            if index < last_sql:
                # Later sheets read the stored result, so each query runs once.
                run.execute(functools.partial(view, sheet.name, target), context=context)
        else:
            run.execute(functools.partial(copy, sheet.name, target), context=context, share=share)
        records = pq.ParquetFile(target).metadata.num_rows
        run.event(
            rl.SHEET,
            sheet=sheet.name,
            records=records,
            ms=round((time.monotonic() - began) * 1000),
            kept=sheet.keep,
        )
        if sheet.keep:
            kept[sheet.name] = records
    run.where = {}
    shutil.rmtree(work_dir, ignore_errors=True)
    output_bytes = sum(
        os.path.getsize(os.path.join(run.staging_dir, f"{name}.parquet")) for name in kept
    )
    return workbook_result(definition, kept, output_bytes)
