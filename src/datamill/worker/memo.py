"""What the worker derives from a job's definition, kept per configuration between runs.

A job run many times unchanged had its definition validated and digested again
at every claim (a fifth of the worker's claim in py-spy of bench/throughput.py).
A value is reused only for the same configuration id, save time, kind AND an
equal definition (compared by value, so an edited definition is derived anew; the
save time too, as 1 and 1.0 or true are equal in Python but not in JSON).
"""

from __future__ import annotations

import copy
import datetime as dt
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from datamill.domain.records import JobConfiguration
from datamill.domain.status import JobKind

T = TypeVar("T")


class PerConfiguration(Generic[T]):
    """A bounded cache of one value derived from each configuration's definition."""

    def __init__(self, derive: Callable[[JobConfiguration], T], size: int = 1024) -> None:
        self._derive = derive
        self._size = size
        self._known: dict[int, tuple[dt.datetime, JobKind, dict[str, Any], T]] = {}
        self._lock = threading.Lock()

    def __call__(self, config: JobConfiguration) -> T:
        """The value derived from `config`, derived again only if its definition changed."""
        with self._lock:
            known = self._known.get(config.id)
        if (
            known is not None
            and known[0] == config.updated_at
            and known[1] is config.kind
            and known[2] == config.definition
        ):
            return known[3]
        # A failure (an invalid definition) raises here and caches nothing.
        value = self._derive(config)
        with self._lock:
            if len(self._known) >= self._size:
                self._known.clear()
            # A copy: the caller's dict must not be able to change what was compared.
            self._known[config.id] = (
                config.updated_at,
                config.kind,
                copy.deepcopy(config.definition),
                value,
            )
        return value
