"""The window: the one folder a workbook's database may open, and its housekeeping.

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
from collections.abc import Mapping

from datamill.processes import pid_alive

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
