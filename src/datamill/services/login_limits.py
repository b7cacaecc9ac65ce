"""Bounds on the work failed sign-ins can cause: token buckets and an argon2 gate.

argon2 costs tens of milliseconds and 64 MiB per check by design. Fifty
concurrent logins with wrong names once held every request thread and 2.3 GB
of memory. So failed logins draw from a bucket per user name and one per
client address (an empty bucket answers 429 at once, no argon2), and at most
`checks_at_once` verifications run together; a few more wait their turn, and
any beyond that are refused at once rather than hold a request thread.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TypeVar

from datamill.errors import TooManyRequests

T = TypeVar("T")

# Each table forgets its least recently used entries past this many, so no
# stream of distinct names or addresses can grow the server's memory.
MAX_TRACKED = 10_000


class FailureBuckets:
    """A token bucket per key: each failure takes a token; tokens refill at a steady rate."""

    def __init__(self, burst: int, refill_per_second: float) -> None:
        self._burst = float(burst)
        self._rate = refill_per_second
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def retry_after(self, key: str) -> int:
        """Seconds until `key` may fail again; 0 when it may now."""
        with self._lock:
            tokens = self._tokens(key, time.monotonic())
        return 0 if tokens >= 1.0 else max(1, math.ceil((1.0 - tokens) / self._rate))

    def take(self, key: str) -> bool:
        """Take a token for a sign-in about to be checked; False when none is left.

        Taken before the check, not after it fails: otherwise every request in
        flight when a token comes back would pass at once and reach argon2.
        """
        now = time.monotonic()
        with self._lock:
            tokens = self._tokens(key, now)
            if tokens < 1.0:
                return False
            self._store(key, tokens - 1.0, now)
        return True

    def give_back(self, key: str) -> None:
        """Return the token of a sign-in that succeeded."""
        now = time.monotonic()
        with self._lock:
            self._store(key, min(self._burst, self._tokens(key, now) + 1.0), now)

    def _store(self, key: str, tokens: float, now: float) -> None:
        self._buckets[key] = (tokens, now)
        self._buckets.move_to_end(key)
        while len(self._buckets) > MAX_TRACKED:
            self._buckets.popitem(last=False)

    def _tokens(self, key: str, now: float) -> float:
        entry = self._buckets.get(key)
        if entry is None:
            return self._burst
        tokens, since = entry
        return min(self._burst, tokens + (now - since) * self._rate)


class VerificationGate:
    """At most `at_once` password checks run together; at most `waiting` more wait."""

    def __init__(self, at_once: int, waiting: int) -> None:
        self._running = threading.BoundedSemaphore(at_once)
        self._slots = threading.BoundedSemaphore(at_once + waiting)

    def run(self, check: Callable[[], T]) -> T:
        """Run `check` when a place is free; TooManyRequests when even the queue is full."""
        if not self._slots.acquire(blocking=False):
            raise TooManyRequests("too many sign-ins at once; try again in a moment", 1)
        try:
            with self._running:
                return check()
        finally:
            self._slots.release()
