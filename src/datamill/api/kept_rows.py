"""What the status fast path keeps between polls on SQLite, and when it drops it.

The fast path's statement reads nothing but the database, so its rows stay
exactly what it would read again until some connection commits. SQLite's
`PRAGMA data_version` tells whether one did (any other connection, in this
process or another); reading it opens a read transaction, which is the
largest fixed cost of a poll left.

So it is read at most once per batch of callbacks of the event loop: every
request answered in a batch was received before the batch started, hence
before the version was read, so each answer is the database as of a moment
after its request arrived (and before its answer left), which is all a
client can tell apart. The version counts as read until the loop's next
batch starts: `call_soon` queues its expiry before any callback that
handles a request received later, and the loop runs callbacks in order.
A client that saw a commit's answer and then polls always gets a fresh read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

# Bounds what is kept (keys are the references and users pollers send).
LIMIT = 10_000


class KeptRows:
    """Rows by (statement, user, reference) and estimate means, as of one data version."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str, Any], list[tuple[Any, ...]]] = {}
        self.means: dict[tuple[Any, ...], float | None] = {}
        self._version: Any = None
        # The loop whose current batch has read the version (None: read it again).
        self._fresh_on: asyncio.AbstractEventLoop | None = None
        # How often the version was read (tests look at it).
        self.version_reads = 0

    def refresh(self, read_version: Callable[[], Any]) -> None:
        """Drop everything if anyone committed since it was read; once per loop batch."""
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None  # not in an event loop: no batch to share the read with
        if loop is not None and loop is self._fresh_on:
            return
        self.version_reads += 1
        version = read_version()
        if version != self._version:
            self.clear()
            self._version = version
        if loop is not None:
            self._fresh_on = loop
            loop.call_soon(self._expire, loop)

    def _expire(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._fresh_on is loop:
            self._fresh_on = None

    def keep(self, key: tuple[str, str, Any], rows: list[tuple[Any, ...]]) -> None:
        """Keep a statement's rows."""
        if len(self.rows) >= LIMIT:
            self.clear()
        self.rows[key] = rows

    def clear(self) -> None:
        """Forget all rows and means."""
        self.rows.clear()
        self.means.clear()

    def forget(self) -> None:
        """Forget everything, the version too (the connection is gone)."""
        self.clear()
        self._version = None
        self._fresh_on = None
