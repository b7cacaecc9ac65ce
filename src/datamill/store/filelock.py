"""Writers of every process on one SQLite file take turns on an advisory file lock first.

SQLite's own lock decides who writes; a writer that finds it taken waits in
SQLite's busy handler, which sleeps 1, 2, 5, 10, 15, 20, 25 ms... between
tries. With the embedded worker in its own process (worker/child.py), the
API's triggers and the worker's finishes meet on that lock hundreds of times
a second, and a trigger slept 8 ms for a lock released after 2 (issue #16,
docs/performance.md "Throughput, seventh round"). A writer that holds this
file lock across its whole write transaction lets the others wait on the
lock file instead, where they look again every fraction of a millisecond.

It is only ever a way to wait: SQLite's lock still guards the data. A writer
that cannot open the file (another OS user's home, a read-only folder), a
writer of an older version and a migration go straight to SQLite's lock, and
a wait here that outlasts the busy timeout stops and leaves the verdict to
SQLite (which answers "database is locked" as before). The kernel releases
the lock of a process that dies, so a crash leaves nothing held.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time

# How a waiter's pauses between looks grow, and their ceiling: far below
# SQLite's steps, and a few looks per millisecond at most.
FIRST_PAUSE_SECONDS = 0.00005
LONGEST_PAUSE_SECONDS = 0.0005


class WriterFileLock:
    """An exclusive lock on `<database file>-writers`, taken per write transaction.

    Not thread-safe: the caller holds its process's writer lock around it.
    """

    def __init__(self, database_path: str, timeout_seconds: float) -> None:
        self.path = f"{database_path}-writers"
        self.timeout_seconds = timeout_seconds
        self._fd: int | None = None
        self._pid = 0
        # Set once the file could not be opened: no use trying on every write.
        self._unusable = False

    def acquire(self) -> bool:
        """Wait for the lock; False (not held) if the file cannot be used or the wait timed out."""
        fd = self._open()
        if fd is None:
            return False
        pause = FIRST_PAUSE_SECONDS
        deadline: float | None = None
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                pass
            except OSError:
                return False
            now = time.monotonic()
            if deadline is None:
                deadline = now + self.timeout_seconds
            elif now >= deadline:
                return False
            time.sleep(pause)
            pause = min(pause * 2, LONGEST_PAUSE_SECONDS)

    def release(self) -> None:
        """Let the next writer go."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        """Close the lock file (a lock still held goes with it)."""
        fd, self._fd = self._fd, None
        if fd is not None and self._pid == os.getpid():
            with contextlib.suppress(OSError):
                os.close(fd)

    def _open(self) -> int | None:
        if self._fd is not None and self._pid == os.getpid():
            return self._fd
        if self._fd is not None:
            # Inherited by a fork: the parent's open file carries the parent's
            # lock, so the child opens its own (closing this one frees nothing
            # of the parent's: the parent still has the file open).
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
        if self._unusable:
            return None
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError:
            self._unusable = True
            return None
        self._pid = os.getpid()
        return self._fd
