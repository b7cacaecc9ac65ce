"""Running workbooks, and the window: the one folder a workbook's DuckDB database may open.

User SQL exists only in workbooks. Whatever the SQL check (engine/sql.py)
lets through, the database that runs it is the second wall: it is locked
(`allowed_directories`, external access off, for good) to one folder per
engine, its *window*. Before a run the engine hard-links exactly that run's
input files into a fresh folder of the window, named after the run's staging
folder (the execution id), the run writes its results into that folder's
`output` folder, and afterwards they are moved into the run's staging folder
and the folder is removed. The worker measures `output` against the run's
output limit while the run goes on (`run_output_folders`). A warm child runs
one run at a time, so while a run goes on the window holds its own inputs and
nothing else.

Hard links, not symbolic links: DuckDB refuses a symbolic link that leads
out of an allowed folder, and a link to a *folder* would let `link/../x`
(allowed by name, resolved by the kernel outside) escape. A hard link is the
file itself. Where one cannot be made (the input on another file system),
the run falls back to a fresh database locked to its own files, which is
slower but as tight.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import shutil
import socket
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from datamill.domain import runlog as rl
from datamill.domain.definitions import DataSheet, SqlSheet, WorkbookDefinition
from datamill.domain.status import JobStatus
from datamill.engine.base import RunResult
from datamill.engine.sources import ident, lit
from datamill.engine.sql import bind_workbook
from datamill.errors import InvalidInput, JobFailed
from datamill.processes import pid_alive

if TYPE_CHECKING:
    from datamill.engine.duckdb import Session

WINDOW_PREFIX = ".window-"
# The window's one run folder (a child runs one run at a time) and, inside it,
# what the run writes, which the worker measures for the output limit.
RUN_FOLDER = "run"
OUTPUT_FOLDER = "output"
_windows = itertools.count(1)


# Windows of several hosts may share a staging root (a shared data root), and
# a process id means something only on its own host.
_HOST = hashlib.sha256(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:8]


def window_prefix(pid: int) -> str:
    """The start of the names of the windows of the engines of process `pid` (this host)."""
    return f"{WINDOW_PREFIX}{_HOST}-{pid}-"


def run_output_folders(staging_root: str, pid: int) -> list[str]:
    """The output folders of the windows of process `pid` (normally one): its current run's."""
    prefix = window_prefix(pid)
    try:
        names = [n for n in os.listdir(staging_root) if n.startswith(prefix)]
    except OSError:
        return []
    return [os.path.join(staging_root, n, RUN_FOLDER, OUTPUT_FOLDER) for n in names]


def remove_windows_of(staging_root: str, pid: int) -> None:
    """Remove the windows of process `pid`, which must have ended (killed by the worker)."""
    prefix = window_prefix(pid)
    with contextlib.suppress(OSError):
        for name in os.listdir(staging_root):
            if name.startswith(prefix):
                shutil.rmtree(os.path.join(staging_root, name), ignore_errors=True)


def remove_dead_windows(parent: str) -> None:
    """Windows of this host's engine processes that ended: their links keep data alive.

    Called when an engine opens its window and by the worker's housekeeping,
    so a window of a process killed mid-run goes even if no workbook runs again.
    """
    mine = f"{WINDOW_PREFIX}{_HOST}-"
    with contextlib.suppress(OSError):
        for name in os.listdir(parent):
            pid = name.removeprefix(mine).split("-")[0]
            if name.startswith(mine) and pid.isdigit() and not pid_alive(int(pid)):
                shutil.rmtree(os.path.join(parent, name), ignore_errors=True)


class Window:
    """One engine's window folder below the staging root (same file system as the data).

    Its folders are made once and kept while the engine lives, emptied after
    each run: on this kind of disk a mkdir and rmdir pair costs ~0.4 ms, a
    third of a trivial run's engine time.
    """

    def __init__(self, staging_root: str) -> None:
        remove_dead_windows(staging_root)
        # One per engine, not per process: two engines of one process (tests,
        # an in-process worker) never see each other's runs.
        self.root = os.path.join(staging_root, f"{window_prefix(os.getpid())}{next(_windows)}")
        shutil.rmtree(self.root, ignore_errors=True)
        self.folder = os.path.join(self.root, RUN_FOLDER)

    def open_run(self, inputs: Mapping[str, str]) -> str | None:
        """The run folder holding a hard link to each input, None if one cannot be linked.

        `inputs` maps the link's name to the real path of the input file.
        """
        output = os.path.join(self.folder, OUTPUT_FOLDER)
        if not os.path.isdir(output):
            os.makedirs(output)
        else:
            self._empty()  # normally empty already: close_run empties it
        try:
            for name, real in inputs.items():
                os.link(real, os.path.join(self.folder, name))
        except OSError:  # another file system, or links refused: the caller falls back
            self._empty()
            return None
        return self.folder

    def close_run(self, folder: str) -> None:
        """Remove a run's links and anything it or its SQL left in the window."""
        self._empty()

    def _empty(self) -> None:
        """Remove everything in the run folder but its (emptied) output folder."""
        for parent in (os.path.join(self.folder, OUTPUT_FOLDER), self.folder):
            with contextlib.suppress(OSError), os.scandir(parent) as entries:
                for entry in entries:
                    if parent == self.folder and entry.name == OUTPUT_FOLDER:
                        continue
                    if entry.is_dir(follow_symlinks=False):
                        shutil.rmtree(entry.path, ignore_errors=True)
                    else:
                        with contextlib.suppress(OSError):
                            os.unlink(entry.path)

    def close(self) -> None:
        """Remove the window."""
        shutil.rmtree(self.root, ignore_errors=True)


def is_idle_window(path: str) -> bool:
    """Whether `path` is a window holding no file (an engine between runs)."""
    if not os.path.basename(path).startswith(WINDOW_PREFIX):
        return False
    return not any(files for _root, _dirs, files in os.walk(path))


def workbook_inputs(session: Session, definition: WorkbookDefinition) -> dict[str, str]:
    """Data-sheet name -> real path of its input file, checked to exist."""
    found: dict[str, str] = {}
    for index, sheet in enumerate(definition.sheets):
        if isinstance(sheet, DataSheet):
            path = session.request.inputs.get(sheet.name)
            if path is None:
                raise InvalidInput(f'sheets[{index}]: no data was given for sheet "{sheet.name}"')
            real = os.path.realpath(path)
            if not os.path.isfile(real):
                raise JobFailed(f'sheets[{index}]: the data of sheet "{sheet.name}" is missing')
            found[sheet.name] = real
    return found


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
    records = sum(kept.values())
    return RunResult(
        status=JobStatus.COMPLETED,
        success_count=records,
        failure_count=0,
        counters={
            "WORKBOOK_RECORDS": records,
            "WORKBOOK_DROPPED_RECORDS": 0,
            "WORKBOOK_OUTPUT_BYTES": output_bytes,
            "WORKBOOK_SHEETS": len(definition.sheets),
        },
        sheets=kept,
    )
