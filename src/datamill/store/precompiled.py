"""The worker's hot statements, compiled once per dialect and run on the driver's cursor.

A slot's finish-and-claim is about a dozen statements in one transaction;
through SQLAlchemy's execution path (cache key, execution context, result
object) each cost several times what the driver's own `execute` did: a third
of the worker child's CPU (docs/performance.md "Throughput, ninth round").
Here a statement is compiled once per dialect into its SQL string, its
parameters' order and SQLAlchemy's own bind and result processors (so dates,
JSON and booleans are stored and read exactly as through SQLAlchemy, on
SQLite and on PostgreSQL), and run on the DBAPI cursor of the caller's
connection, inside the caller's transaction.

What SQLAlchemy did on the way that still has to happen: a statement that may
change a run marks its transaction (store/run_changes.py); a driver error is
raised as SQLAlchemy's own exception class (IntegrityError for a claim race,
OperationalError for a lost connection, which also invalidates the pooled
connection), so callers catch what they caught before. Statements with
expanding parameters (IN lists) are not precompiled: they go through
SQLAlchemy as before.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.exc import DBAPIError

from datamill.store import run_changes

Processor = Callable[[Any], Any] | None
Params = Mapping[str, Any]


@dataclasses.dataclass(slots=True)
class _Compiled:
    """One statement for one dialect: its SQL, how to build its parameters, how to read its rows."""

    statement: Any  # kept alive: the cache is keyed by its id
    sql: str
    positional: bool
    # (name, default value or _REQUIRED, bind processor) in the order the driver wants them.
    binds: tuple[tuple[str, Any, Processor], ...]
    row: Any  # a named tuple class; None for statements that return no rows
    # The returned columns' types; their result processors are made at the
    # first execution, from the driver's type codes (PostgreSQL's Float needs them).
    types: tuple[Any, ...]
    results: tuple[Processor, ...] | None
    changes_runs: bool


_REQUIRED = object()
_cache: dict[tuple[int, str], _Compiled] = {}


class Ran:
    """What a statement returned: its rows (processed as SQLAlchemy would) and its row count."""

    __slots__ = ("rowcount", "rows")

    def __init__(self, rows: list[Any], rowcount: int) -> None:
        self.rows = rows
        self.rowcount = rowcount

    def first(self) -> Any | None:
        """The first row, or None."""
        return self.rows[0] if self.rows else None

    def all(self) -> list[Any]:
        """Every row."""
        return self.rows

    def one(self) -> Any:
        """The only row (raises if there is not exactly one)."""
        if not self.rows:
            raise sa.exc.NoResultFound("No row was found when one was required")
        if len(self.rows) > 1:
            raise sa.exc.MultipleResultsFound("Multiple rows were found when one was required")
        return self.rows[0]

    def scalar_one(self) -> Any:
        """The only row's first column (raises if there is not exactly one row)."""
        return self.one()[0]


def run(conn: Connection, statement: Any, params: Params | None = None) -> Ran:
    """Run a precompiled statement with one set of parameters in the caller's transaction."""
    return _execute(conn, statement, params or {}, many=False)


def run_many(conn: Connection, statement: Any, params: Sequence[Params]) -> None:
    """Run a precompiled statement (returning nothing) once per set of parameters."""
    _execute(conn, statement, params, many=True)


def _execute(conn: Connection, statement: Any, params: Any, *, many: bool) -> Ran:
    compiled = _compiled(statement, conn.dialect)
    values = [_values(compiled, p) for p in params] if many else _values(compiled, params)
    dbapi = conn.connection.dbapi_connection
    assert dbapi is not None
    cursor = dbapi.cursor()
    rows: list[Any] = []
    try:
        if many:
            cursor.executemany(compiled.sql, values)
        else:
            cursor.execute(compiled.sql, values)
            if compiled.row is not None:
                rows = _rows(compiled, cursor, conn.dialect)
        count = cursor.rowcount
    except conn.dialect.loaded_dbapi.Error as error:
        raise _translated(conn, compiled, values, error, cursor) from error
    finally:
        cursor.close()
    if compiled.changes_runs:
        run_changes.mark(conn)
    return Ran(rows, count)


def _values(compiled: _Compiled, params: Params) -> Any:
    out: list[Any] = []
    for name, default, process in compiled.binds:
        value = params[name] if name in params or default is _REQUIRED else default
        out.append(process(value) if process is not None else value)
    if compiled.positional:
        return tuple(out)
    return {name: value for (name, _, _), value in zip(compiled.binds, out, strict=True)}


def _rows(compiled: _Compiled, cursor: Any, dialect: Dialect) -> list[Any]:
    row = compiled.row
    assert row is not None
    results = compiled.results
    if results is None:
        codes = [column[1] for column in cursor.description]
        results = compiled.results = tuple(
            kind.result_processor(dialect, code)
            for kind, code in zip(compiled.types, codes, strict=True)
        )
    if not any(results):
        return [row._make(r) for r in cursor.fetchall()]
    return [
        row._make([p(v) if p is not None else v for p, v in zip(results, r, strict=True)])
        for r in cursor.fetchall()
    ]


def _translated(
    conn: Connection, compiled: _Compiled, values: Any, error: Any, cursor: Any
) -> BaseException:
    """The driver's error as SQLAlchemy raises it; a lost connection is invalidated first."""
    dialect = conn.dialect
    lost = dialect.is_disconnect(error, conn.connection.dbapi_connection, cursor)
    if lost:
        conn.invalidate(error)
    translated: BaseException = DBAPIError.instance(
        compiled.sql,
        values,
        error,
        dialect.loaded_dbapi.Error,
        connection_invalidated=lost,
        dialect=dialect,
    )
    return translated


def _compiled(statement: Any, dialect: Dialect) -> _Compiled:
    key = (id(statement), dialect.name)
    found = _cache.get(key)
    if found is None or found.statement is not statement:
        found = _cache[key] = _compile(statement, dialect)
    return found


def _compile(statement: Any, dialect: Dialect) -> _Compiled:
    if isinstance(statement, str):  # SQL without parameters or rows: BEGIN IMMEDIATE
        return _Compiled(
            statement, statement, True, (), None, (), None, run_changes.changes_runs(statement)
        )
    compiled = statement.compile(dialect=dialect)
    by_name = {name: bind for bind, name in compiled.bind_names.items()}
    if compiled.positional:
        names = list(compiled.positiontup or ())
    else:
        names = list(dict.fromkeys(by_name))
    binds = []
    for name in names:
        bind = by_name[name]
        if bind.expanding:
            raise ValueError(f"{name}: statements with IN lists are not precompiled")
        default = _REQUIRED if bind.required else bind.effective_value
        binds.append((name, default, bind.type.dialect_impl(dialect).bind_processor(dialect)))
    columns = _returned(statement)
    # A named tuple per statement: rows read by attribute, as SQLAlchemy's Row.
    row = collections.namedtuple("Row", [c[0] for c in columns], rename=True) if columns else None
    sql = str(compiled)
    return _Compiled(
        statement=statement,
        sql=sql,
        positional=bool(compiled.positional),
        binds=tuple(binds),
        row=row,
        types=tuple(c[1].dialect_impl(dialect) for c in columns),
        results=None,
        changes_runs=run_changes.changes_runs(sql),
    )


def _returned(statement: Any) -> list[tuple[str, Any]]:
    """The names and types of the columns a statement returns (none for plain DML)."""
    if isinstance(statement, sa.Select | sa.CompoundSelect):
        columns = statement.selected_columns
    elif getattr(statement, "_returning", ()):
        columns = statement.exported_columns
    else:
        return []
    return [(key, column.type) for key, column in columns.items()]
