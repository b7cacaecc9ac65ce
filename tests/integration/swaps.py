"""A folder swapped for a symbolic link in the middle of a run, and the files a run holds open."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


class SwapOnFirstProgress:
    """A progress callback that, at its first call, swaps `folder` for a symlink to `target`.

    It also notes which files below `folder`'s parent the run holds open then.

    An import reports progress first after it checked (and held) its source
    files and read them once to plan, before the reads that store the data.
    """

    def __init__(self, folder: Path, target: Path | None) -> None:
        self.folder = folder
        self.target = target
        self.swapped: list[float] = []
        self.held: list[str] = []

    def __call__(self, fraction: float) -> None:
        if not self.swapped:
            self.swapped.append(fraction)
            # What the run holds open at that moment, below the source folder's parent.
            self.held = held_below(self.folder.parent)
            if self.target is None:
                return  # only watching
            self.folder.rename(self.folder.with_name(self.folder.name + ".old"))
            self.folder.symlink_to(self.target)


def held_below(root: Path) -> list[str]:
    """The files below `root` this process holds open, as /proc names them."""
    prefix = os.path.realpath(root) + os.sep
    found = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith(prefix):
                found.append(target)
    return sorted(found)
