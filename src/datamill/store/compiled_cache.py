"""One compiled-statement cache for every engine of a process that speaks the same SQL.

SQLAlchemy caches a statement's compiled form per engine, keyed by the
engine's dialect instance, so a second engine compiles every statement anew
(about a millisecond each; a test suite that opens a store per test paid it
~25 times a test). Here the engines of one process share one cache, keyed by
what the compiled SQL can depend on instead of the instance: the dialect's
class and every plain setting of it (its server's version and what
`initialize` learned from the server: standard strings, identity columns,
JSON subscripts, the paramstyle ...). Two dialects share entries only when all
of those are equal; they then compile every statement to the same SQL with
the same bind processors, as store/precompiled.py already relies on for its
own cache (keyed by the dialect's name alone).
"""

from __future__ import annotations

import inspect
import itertools
import threading
import weakref
from typing import Any

from sqlalchemy.engine import Dialect
from sqlalchemy.util import LRUCache, memoized_property

# Entries across all engines (SQLAlchemy's own default is 500 per engine).
CAPACITY = 2000

_PLAIN = (type(None), bool, int, float, str, tuple)
_unshared = itertools.count()


class SharedCompiledCache:
    """A mapping for SQLAlchemy's `compiled_cache` option, shared by alike dialects."""

    def __init__(self, capacity: int = CAPACITY) -> None:
        self._entries: LRUCache[Any, Any] = LRUCache(capacity)
        self._signatures: weakref.WeakKeyDictionary[Dialect, Any] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def get(self, key: tuple[Any, ...], default: Any = None) -> Any:
        """The compiled statement for SQLAlchemy's key, from any alike dialect."""
        return self._entries.get(self._shared(key), default)

    def __setitem__(self, key: tuple[Any, ...], value: Any) -> None:
        self._entries[self._shared(key)] = value

    def _shared(self, key: tuple[Any, ...]) -> tuple[Any, ...]:
        # SQLAlchemy's key: (dialect, statement key, column keys, schema map?, executemany?).
        dialect, *rest = key
        return (self._signature(dialect), *rest)

    def _signature(self, dialect: Dialect) -> Any:
        # Made at the first statement, so after the first connection's initialize().
        with self._lock:
            found = self._signatures.get(dialect)
            if found is None:
                found = self._signatures[dialect] = signature(dialect)
            return found


def signature(dialect: Dialect) -> tuple[Any, ...]:
    """What a dialect's compiled SQL depends on: its class and its plain settings.

    Settings that are objects (the identifier preparer, the type compiler,
    the driver's adapters) and memoized properties and methods are built by the dialect
    from its class and those plain settings; a setting of any other kind
    makes the dialect share nothing.
    """
    settings = []
    for name, value in sorted(vars(dialect).items()):
        if name in _DERIVED or _memoized(type(dialect), name, value):
            continue
        if not isinstance(value, _PLAIN) or not _hashable(value):
            return (type(dialect), "unshared", next(_unshared))
        settings.append((name, value))
    return (type(dialect), tuple(settings))


def _memoized(kind: type, name: str, value: Any) -> bool:
    """A memoized property or method of the class, kept on the instance at first use."""
    static = inspect.getattr_static(kind, name, None)
    return isinstance(static, memoized_property) or (inspect.isfunction(static) and callable(value))


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


# Objects every dialect instance builds for itself from its class and plain
# settings, the driver module itself, and the dialect's event listeners
# (run_changes and the metrics watch its executions; they compile nothing).
_DERIVED = frozenset(
    {
        "dispatch",
        "dbapi",
        "loaded_dbapi",
        "identifier_preparer",
        "type_compiler",
        "type_compiler_instance",
        "_type_memos",
        "_psycopg_adapters_map",
        "_psycopg_TransactionStatus",
        "dbapi_version",
    }
)
