"""Source files held open from their check to the end of the run (the check-to-read race).

engine/paths.py checks the path of each source file: inside the roots, no
symbolic link out of them. A reader that opened that path later would
resolve it again, so a folder on the way swapped for a symbolic link in
between (by someone who can write in a source folder) would lead the read
outside the roots. So each checked file is opened once, right after its
check, and what the kernel opened is checked in turn: a regular file whose
path (as /proc shows the open file) is the checked real path. From then on
every reader names the open file, `/proc/self/fd/<n>` (DuckDB, pyarrow) or
`/proc/<pid>/fd/<n>` (a Spark server on this machine, running as this user):
opening that reaches the held file whatever becomes of its path. The files
are closed when the run ends (its Session's close), so a long-lived engine
process keeps none across runs. Linux only, as the engine is.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import resource
import stat
from collections.abc import Sequence

from datamill.errors import InvalidInput, PathNotAllowed

# Open files an engine process needs besides a run's sources (DuckDB's
# files, sockets, logs); counted in before a run holds its sources.
SPARE_FDS = 256
# Non-blocking: a FIFO swapped in must not hang the open. Never inherited.
_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_FD_PATH = re.compile(r"/proc/(?:self|[0-9]+)/fd/([0-9]+)")


def fd_path(fd: int, pid: int | None = None) -> str:
    """The path that opens the file descriptor `fd` of process `pid` (this one if None)."""
    return f"/proc/{'self' if pid is None else pid}/fd/{fd}"


def make_room(count: int) -> None:
    """Raise the soft open-file limit so `count` more files fit; InvalidInput past the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        used = len(os.listdir("/proc/self/fd"))
    except OSError:
        used = SPARE_FDS
    need = used + count + SPARE_FDS
    if soft == resource.RLIM_INFINITY or need <= soft:
        return
    if hard != resource.RLIM_INFINITY and need > hard:
        raise InvalidInput(
            f"the source has {count} files, more than this worker may hold open at once "
            f"(open-file limit {hard}); read fewer files per import, or raise the worker's "
            "limit (ulimit -n, systemd LimitNOFILE)"
        )
    resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))


def _open_checked(real: str) -> int:
    """A descriptor of the file at the checked real path `real`, or a refusal."""
    try:
        fd = os.open(real, _FLAGS)
    except OSError as error:
        if error.errno in (errno.EMFILE, errno.ENFILE):
            # The worker's limit (or the system's), not the file: say so, or the
            # user hunts for a file that is there.
            raise InvalidInput(
                f"source file {real!r} could not be opened: the worker has too many files "
                "open; read fewer files per import, or raise the worker's open-file limit"
            ) from None
        raise InvalidInput(f"source file {real!r} does not exist or is not a file") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise InvalidInput(f"source file {real!r} does not exist or is not a file")
        # The path of what was opened: another than the checked one if a
        # folder on the way became a symbolic link after the check.
        if os.readlink(fd_path(fd)) != real:
            raise PathNotAllowed(
                f"source file {real!r} changed between its check and its opening "
                "(a folder on its path was replaced); it was not read"
            )
    except BaseException:
        os.close(fd)
        raise
    return fd


class HeldFiles:
    """Checked source files, each held open until `close`; readers get their /proc paths."""

    def __init__(self, files: Sequence[str]) -> None:
        make_room(len(files))
        self.files = list(files)
        self.fds: list[int] = []
        try:
            for real in self.files:
                self.fds.append(_open_checked(real))
        except BaseException:
            self.close()
            raise
        self._names = {str(fd): real for fd, real in zip(self.fds, self.files, strict=True)}

    def paths(self, pid: int | None = None) -> list[str]:
        """Paths that open the held files: through this process's /proc, or `pid`'s."""
        return [fd_path(fd, pid) for fd in self.fds]

    def named(self, text: str) -> str:
        """`text` (a message, a path) with each held file's /proc path replaced by its real one."""
        return _FD_PATH.sub(lambda m: self._names.get(m.group(1), m.group(0)), text)

    def moved(self) -> list[str]:
        """The checked paths that no longer lead to the file held open (read by path elsewhere)."""
        found = []
        for real, fd in zip(self.files, self.fds, strict=True):
            held = os.fstat(fd)
            try:
                now = os.stat(real)
            except OSError:
                found.append(real)
                continue
            if (now.st_dev, now.st_ino) != (held.st_dev, held.st_ino):
                found.append(real)
        return found

    def close(self) -> None:
        """Close every held file (once; later calls do nothing)."""
        fds, self.fds = self.fds, []
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)
