"""Workbooks on DuckDB: data sheets as views, SQL sheets in order, kept sheets staged.

The database that runs them is locked to the engine's window (engine/windows.py).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from datamill.domain import runlog as rl
from datamill.domain.definitions import DataSheet, SqlSheet, WorkbookDefinition
from datamill.engine.base import RunResult
from datamill.engine.duckdb.literals import ident, lit
from datamill.engine.runs import workbook_result
from datamill.engine.sql import bind_workbook

if TYPE_CHECKING:
    from datamill.engine.duckdb.session import Session


def run_workbook(
    session: Session,
    definition: WorkbookDefinition,
    inputs: Mapping[str, str],
    out_dir: str,
) -> RunResult:
    """Register data sheets as views, run SQL sheets in order, stage the kept ones.

    `inputs` are the files DuckDB opens for the data sheets (the window's
    links, or the real files); results are written to `out_dir` and then
    moved into the staging folder if that is elsewhere.
    """
    request = session.request
    # Every sheet is checked and bound before any data is touched.
    bound = bind_workbook(definition, request.variables)
    for index, sheet in enumerate(definition.sheets):
        if isinstance(sheet, DataSheet):
            session.execute(
                f"CREATE TEMP VIEW {ident(sheet.name)} AS SELECT * FROM "
                f"read_parquet({lit(inputs[sheet.name])})",
                context=f'sheets[{index}]: reading the data of sheet "{sheet.name}"',
            )
    session.lock_down(list(inputs.values()))
    work_dir = os.path.join(out_dir, "_work")
    if not all(sheet.keep for sheet in definition.sheets if isinstance(sheet, SqlSheet)):
        os.makedirs(work_dir, exist_ok=True)
    steps = [s for s in definition.sheets if isinstance(s, SqlSheet) or s.keep]
    share = 0.99 / len(steps)
    kept: dict[str, int] = {}
    for index, sheet in enumerate(definition.sheets):
        folder = out_dir if sheet.keep else work_dir
        target = lit(os.path.join(folder, f"{sheet.name}.parquet"))
        context = f'sheets[{index}] "{sheet.name}"'
        session.where = {"sheet": sheet.name, "index": index}
        began = time.monotonic()
        rows: list[tuple[Any, ...]] = []
        if isinstance(sheet, SqlSheet):
            query = bound[sheet.name]
            rows = session.execute(
                f"COPY ({query.sql}) TO {target} (FORMAT parquet)",
                query.params,
                context=context,
                share=share,
                user_sql=f"sheets[{index}].sql",
            )
            # Later sheets read the stored result, so each query runs once.
            if index < len(definition.sheets) - 1:
                session.execute(
                    f"CREATE TEMP VIEW {ident(sheet.name)} AS SELECT * FROM read_parquet({target})",
                    context=context,
                )
        elif sheet.keep:
            rows = session.execute(
                f"COPY (SELECT * FROM {ident(sheet.name)}) TO {target} (FORMAT parquet)",
                context=context,
                share=share,
            )
        if rows:
            session.event(
                rl.SHEET,
                sheet=sheet.name,
                records=int(rows[0][0]),
                ms=round((time.monotonic() - began) * 1000),
                kept=sheet.keep,
            )
        if sheet.keep:
            kept[sheet.name] = int(rows[0][0])
    session.where = {}
    if os.path.lexists(work_dir):
        shutil.rmtree(work_dir, ignore_errors=True)
    output_bytes = 0
    for name in kept:
        staged = os.path.join(session.staging_dir, f"{name}.parquet")
        if out_dir != session.staging_dir:
            shutil.move(os.path.join(out_dir, f"{name}.parquet"), staged)
        output_bytes += os.path.getsize(staged)
    return workbook_result(definition, kept, output_bytes)
