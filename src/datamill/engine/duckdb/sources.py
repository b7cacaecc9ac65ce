"""Source connectors of import jobs: CSV, JSON lines, Parquet files and database tables.

Each connector yields a Scan: a DuckDB FROM item plus its columns. Text
sources (CSV, JSON lines) are read as VARCHAR and typed afterwards, so a value
that does not fit its type drops one record instead of failing the whole read.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import os
import sqlite3
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from datamill.domain.definitions import (
    Column,
    CsvSource,
    DatabaseSource,
    JsonLinesSource,
    ParquetSource,
)
from datamill.engine.duckdb.literals import file_list, ident, lit
from datamill.engine.paths import check_database_url, expand_source_paths, resolved_url, safe_url
from datamill.errors import InvalidDefinition, InvalidInput, JobFailed, PassingFailure

if TYPE_CHECKING:
    from datamill.engine.duckdb.session import Session

DB_BATCH_ROWS = 10_000
# The most columns an import without a declared schema reads from a CSV header
# or the keys of JSON lines. DuckDB's planning of one statement grows faster
# than its width (measured: a 1,000-column COPY plans in about 2 s, 5,000 in a
# minute), so a few KB of input must not hold a worker slot for minutes.
MAX_DETECTED_COLUMNS = 1_000
# Above this width, type detection and checks run on the values in long form
# (one row per value), whose SQL does not grow with the width.
LONG_FORM_ABOVE = 64
_PY_ENCODINGS = {"utf-8": "utf-8-sig", "latin-1": "latin-1", "utf-16": "utf-16"}
_MIB = 1024 * 1024


@dataclasses.dataclass(frozen=True, slots=True)
class SourceColumn:
    """A column as the source offers it: an SQL expression over the scan and its type."""

    name: str
    expr: str
    type: str
    # The key of a JSON lines column (its name may differ: names are made unique).
    key: str | None = None


@dataclasses.dataclass(slots=True)
class Scan:
    """What an import reads, as DuckDB SQL."""

    # tag -> FROM item; the tag names the reject tables of that one CSV scan.
    relation: Callable[[str], str]
    columns: list[SourceColumn]
    files: list[str]
    source_bytes: int
    # SQL that is false for a record that could not be read at all (bad JSON line).
    readable: str = "TRUE"
    csv_rejects: bool = False
    # Column name -> type found by scanning the whole source (JSON lines without a schema).
    detected: dict[str, str] = dataclasses.field(default_factory=dict)
    # The paths the files are read by: each held file's /proc path (engine/held.py).
    reads: list[str] = dataclasses.field(default_factory=list)


def unique_names(names: Sequence[str]) -> list[str]:
    """Column names made non-empty and unique (case-insensitively, as DuckDB compares)."""
    seen: set[str] = set()
    result: list[str] = []
    for index, raw in enumerate(names):
        base = raw.strip() or f"column{index}"
        name, suffix = base, 1
        while name.lower() in seen:
            suffix += 1
            name = f"{base}_{suffix}"
        seen.add(name.lower())
        result.append(name)
    return result


def memory_bytes(limit: str) -> int:
    """Bytes of a DuckDB memory limit such as '64MB' or '2GiB' (2 GiB if unreadable)."""
    text = limit.strip().upper().replace(" ", "")
    units = {"KIB": 1024, "MIB": _MIB, "GIB": 1024**3, "TIB": 1024**4}
    units |= {"KB": 1000, "MB": 1000**2, "GB": 1000**3, "TB": 1000**4, "B": 1}
    for unit, factor in units.items():
        if text.endswith(unit):
            try:
                return int(float(text[: -len(unit)]) * factor)
            except ValueError:
                break
    return 2 * 1024**3


# ---------------------------------------------------------------- files


def _first_row(path: str, source: CsvSource, shown: str) -> list[str]:
    try:
        with open(path, encoding=_PY_ENCODINGS[source.encoding], newline="") as handle:
            reader = csv.reader(handle, delimiter=source.delimiter, quotechar=source.quote)
            return next(reader, [])
    except (UnicodeError, csv.Error) as error:
        raise InvalidInput(
            f"cannot read the first line of {shown!r} as {source.encoding} CSV: {error}"
        ) from None


def _too_wide(count: int, what: str) -> str:
    return (
        f"{what} {count} columns; an import without a declared schema reads at most "
        f"{MAX_DETECTED_COLUMNS}"
    )


def _csv_scan(
    session: Session,
    source: CsvSource,
    files: list[str],
    reads: list[str],
    declared: list[Column] | None,
) -> Scan:
    if source.quote == source.delimiter:
        raise InvalidDefinition("the CSV quote and delimiter must differ")
    first = _first_row(reads[0], source, files[0])
    if not first:
        raise InvalidInput(f"source file {files[0]!r} is empty")
    if source.header:
        for other, read in zip(files[1:], reads[1:], strict=True):
            if _first_row(read, source, other) != first:
                raise InvalidInput(f"{other!r} has other columns than {files[0]!r}")
        names = unique_names(first)
    else:
        names = [f"column{i}" for i in range(len(first))]
    if len(names) > MAX_DETECTED_COLUMNS and declared is None:
        raise JobFailed(_too_wide(len(names), f"{files[0]!r} has"))
    # DuckDB reads CSV in buffers of this size per thread; the 32 MiB default
    # alone would exhaust a small memory limit.
    threads = max(1, session.request.threads)
    buffer = max(
        4 * _MIB, min(32 * _MIB, memory_bytes(session.request.memory_limit) // (4 * threads))
    )
    types = "{" + ", ".join(f"{lit(n)}: 'VARCHAR'" for n in names) + "}"
    options = (
        f"header = {str(source.header).lower()}, auto_detect = false, columns = {types}, "
        f"delim = {lit(source.delimiter)}, quote = {lit(source.quote)}, "
        f"escape = {lit(source.quote)}, encoding = {lit(source.encoding)}, "
        f"buffer_size = {buffer}, store_rejects = true, hive_partitioning = false"
    )

    def relation(tag: str) -> str:
        return (
            f"read_csv({file_list(reads)}, {options}, "
            f"rejects_table = 'dm_rejects_{tag}', rejects_scan = 'dm_scans_{tag}')"
        )

    columns = [SourceColumn(n, ident(n), "VARCHAR") for n in names]
    size = sum(os.path.getsize(f) for f in reads)
    return Scan(relation, columns, files, size, csv_rejects=True, reads=reads)


def _json_pointer(key: str) -> str:
    return "/" + key.replace("~", "~0").replace("/", "~1")


def _json_column(name: str, key: str, type_: str) -> SourceColumn:
    pointer = lit(_json_pointer(key))
    return SourceColumn(name, f"json_extract_string(__dm_json, {pointer})", type_, key)


# JSON structure types (json_group_structure) -> the type a column is read as.
_JSON_TYPES = {"BOOLEAN": "BOOLEAN", "UBIGINT": "BIGINT", "BIGINT": "BIGINT", "HUGEINT": "BIGINT"}
_JSON_TYPES |= {"DOUBLE": "DOUBLE"}


def _jsonl_scan(
    session: Session, files: list[str], reads: list[str], declared: list[Column] | None
) -> Scan:
    def relation(tag: str) -> str:
        del tag
        return (
            f"(SELECT json AS __dm_json FROM read_ndjson_objects({file_list(reads)}, "
            "ignore_errors = true))"
        )

    readable = "(__dm_json IS NOT NULL AND json_type(__dm_json) = 'OBJECT')"
    size = sum(os.path.getsize(f) for f in reads)
    scan = Scan(relation, [], files, size, readable=readable, reads=reads)
    if declared is not None:
        scan.columns = [_json_column(c.name, c.name, "VARCHAR") for c in declared]
        return scan
    session.lock_down(reads)
    rows = session.execute(
        # json_group_structure is a macro, so it takes no FILTER clause.
        f"SELECT json_group_structure(CASE WHEN {readable} THEN __dm_json END) "
        f"FROM {relation('structure')}",
        context="reading the JSON lines",
        share=0.3,
    )
    structure = json.loads(rows[0][0]) if rows and rows[0][0] else {}
    if isinstance(structure, dict):
        keys = list(structure)
        if len(keys) > MAX_DETECTED_COLUMNS:
            raise JobFailed(_too_wide(len(keys), "the JSON lines have"))
        for name, key in zip(unique_names(keys), keys, strict=True):
            detected = structure[key]
            type_ = _JSON_TYPES.get(detected, "VARCHAR") if isinstance(detected, str) else "VARCHAR"
            scan.columns.append(_json_column(name, key, "VARCHAR"))
            scan.detected[name] = type_
    return scan


def _parquet_scan(session: Session, files: list[str], reads: list[str], source_bytes: int) -> Scan:
    def relation(tag: str) -> str:
        del tag
        # A folder named key=value adds no column: the file's own columns are
        # the data, as on Spark (which reads through links named 00000...).
        return f"read_parquet({file_list(reads)}, union_by_name = true, hive_partitioning = false)"

    rows = session.execute(f"DESCRIBE SELECT * FROM {relation('')}", context="reading Parquet")
    columns = [SourceColumn(str(r[0]), ident(str(r[0])), str(r[1])) for r in rows]
    return Scan(relation, columns, files, source_bytes, reads=reads)


# ---------------------------------------------------------------- databases


def _arrow_column(values: Sequence[Any]) -> pa.Array:
    if any(isinstance(v, dict | list) for v in values):
        values = [None if v is None else json.dumps(v, default=str) for v in values]
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError):
        # Mixed types in one column (SQLite allows it), or a type Arrow lacks: text.
        return pa.array([None if v is None else str(v) for v in values], pa.string())


def _arrow_table(names: list[str], rows: Sequence[Sequence[Any]]) -> pa.Table:
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in names]
    return pa.table({n: _arrow_column(c) for n, c in zip(names, columns, strict=True)})


def _select_sql(engine: sa.Engine, source: DatabaseSource) -> str:
    if source.query is not None:
        return source.query
    quote = engine.dialect.identifier_preparer.quote
    return "SELECT * FROM " + ".".join(quote(p) for p in str(source.table).split("."))


def database_error(what: str, url: sa.URL, error: sa.exc.SQLAlchemyError) -> JobFailed:
    """A JobFailed for a database error, without the SQLAlchemy boilerplate or password.

    A refused connection is a PassingFailure: no connection was made, so nothing
    was read or written, and the database may be back for the next attempt.
    """
    original = getattr(error, "orig", None)
    text = str(original if original is not None else error).strip()
    detail = text.splitlines()
    message = f"{what} {safe_url(url)}: {detail[0] if detail else type(error).__name__}"
    if connection_refused(error):
        return PassingFailure(message)
    return JobFailed(message)


def connection_refused(error: BaseException) -> bool:
    """Whether a database error is a refused connection (nothing listens at the address)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ConnectionRefusedError):
            return True
        # Drivers (psycopg, for one) report it in their own exception's text.
        if "connection refused" in str(current).lower():
            return True
        current = getattr(current, "orig", None) or current.__cause__ or current.__context__
    return False


# What a SQLite source query may do: read the main database, call functions,
# recurse. ATTACH (which creates a file anywhere, even on a read-only
# connection, N2), VACUUM INTO, PRAGMA and every write are denied.
_SQLITE_ALLOWED = frozenset(
    {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE}
)


def _sqlite_authorizer(
    action: int, arg1: str | None, arg2: str | None, database: str | None, trigger: str | None
) -> int:
    if action == sqlite3.SQLITE_READ and database not in (None, "main", "temp"):
        return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK if action in _SQLITE_ALLOWED else sqlite3.SQLITE_DENY


def _sqlite_connect(path: str) -> sqlite3.Connection:
    """The source file opened read-only by the driver, limited to reads of it."""
    uri = "file:" + urllib.parse.quote(path) + "?mode=ro"
    conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
    conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
    conn.set_authorizer(_sqlite_authorizer)
    return conn


def _quote_sqlite(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@contextlib.contextmanager
def _sqlite_batches(
    url: sa.URL, source: DatabaseSource
) -> Iterator[tuple[list[str], Iterator[Sequence[Any]]]]:
    conn = _sqlite_connect(str(url.database))
    try:
        query = source.query
        if query is None:
            query = "SELECT * FROM " + ".".join(
                _quote_sqlite(p) for p in str(source.table).split(".")
            )
        cursor = conn.execute(query)
        names = unique_names([str(d[0]) for d in cursor.description or ()])
        yield names, iter(lambda: cursor.fetchmany(DB_BATCH_ROWS), [])
    finally:
        conn.close()


@contextlib.contextmanager
def _server_batches(
    url: sa.URL, source: DatabaseSource
) -> Iterator[tuple[list[str], Iterator[Sequence[Any]]]]:
    engine = sa.create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            # Read-only, whatever the query says: the user's database is not ours to change.
            conn.exec_driver_sql("SET TRANSACTION READ ONLY")
            result = conn.execution_options(stream_results=True, yield_per=DB_BATCH_ROWS)
            cursor = result.exec_driver_sql(_select_sql(engine, source))
            names = unique_names([str(k) for k in cursor.keys()])  # noqa: SIM118
            yield names, iter(cursor.partitions(DB_BATCH_ROWS))
    finally:
        engine.dispose()


def _sqlite_failed(url: sa.URL, error: sqlite3.Error) -> JobFailed:
    # Named by its file name only: the folder is the server's, not the user's business.
    detail = (str(error).strip().splitlines() or [type(error).__name__])[0]
    if "not authorized" in detail:
        detail = "a source query may only read the database (SELECT), nothing else"
    name = os.path.basename(str(url.database))
    return JobFailed(f"database source: SQLite file {name!r}: {detail}")


def _stage_database(session: Session, source: DatabaseSource, folder: str) -> tuple[list[str], int]:
    """Stream the rows into Parquet parts in batches, so memory stays bounded."""
    request = session.request
    url = check_database_url(
        resolved_url(source.url),
        request.roots.source_roots,
        request.forbidden_database_urls,
        "database source",
        must_exist=True,
        forbidden_folders=(request.data_root,) if request.data_root else (),
    )
    sqlite = url.get_backend_name() == "sqlite"
    batches = _sqlite_batches if sqlite else _server_batches
    parts: list[str] = []
    read_bytes = 0
    writer: pq.ParquetWriter | None = None
    try:
        with batches(url, source) as (names, rows_batches):
            for rows in rows_batches:
                table = _arrow_table(names, rows)
                read_bytes += table.nbytes
                # A batch whose types differ starts a new part; DuckDB unifies them.
                if writer is None or not writer.schema.equals(table.schema):
                    if writer is not None:
                        writer.close()
                    parts.append(os.path.join(folder, f"part-{len(parts):05d}.parquet"))
                    writer = pq.ParquetWriter(parts[-1], table.schema)
                writer.write_table(table)
            if writer is None:
                parts.append(os.path.join(folder, "part-00000.parquet"))
                empty = pa.table({n: pa.array([], pa.string()) for n in names})
                pq.write_table(empty, parts[-1])
    except sa.exc.SQLAlchemyError as error:
        raise database_error("database source", url, error) from None
    except sqlite3.Error as error:
        raise _sqlite_failed(url, error) from None
    finally:
        if writer is not None:
            writer.close()
    return parts, read_bytes


# ---------------------------------------------------------------- entry point


def open_scan(
    session: Session,
    source: CsvSource | JsonLinesSource | ParquetSource | DatabaseSource,
    declared: list[Column] | None,
) -> Scan:
    """The Scan of an import source; the session is locked down to its files."""
    roots = session.request.roots.source_roots
    if isinstance(source, DatabaseSource):
        folder = os.path.join(session.staging_dir, "_source")
        os.makedirs(folder, exist_ok=True)
        parts, read_bytes = _stage_database(session, source, folder)
        session.progress.advance(0.4)
        scan = _parquet_scan(session, parts, parts, read_bytes)
    else:
        limit, excluded = session.request.max_source_files, session.request.roots.excluded
        files = expand_source_paths(source.path, roots, limit, excluded)
        # Read through descriptors opened and checked now: a path resolved
        # again later could lead elsewhere (engine/held.py).
        reads = session.hold(files)
        if isinstance(source, CsvSource):
            scan = _csv_scan(session, source, files, reads, declared)
        elif isinstance(source, JsonLinesSource):
            scan = _jsonl_scan(session, files, reads, declared)
        else:
            size = sum(os.path.getsize(f) for f in reads)
            scan = _parquet_scan(session, files, reads, size)
    session.lock_down(scan.reads)
    return scan


# ---------------------------------------------------------------- typing records

DETECT_SAMPLE_ROWS = 20_000
_DUCK_TYPES = {"DECIMAL": "DECIMAL(18, 3)"}
_INT = "regexp_full_match({v}, '[+-]?[0-9]+')"
# What a text value must look like for a type: stricter than DuckDB's casts,
# which would turn '1.5' into the BIGINT 2 or '1' into the BOOLEAN true.
_PATTERNS = {
    "BIGINT": _INT,
    "INTEGER": _INT,
    "DOUBLE": r"regexp_full_match({v}, '[+-]?([0-9]+[.]?[0-9]*|[.][0-9]+)([eE][+-]?[0-9]+)?')",
    "DATE": "regexp_full_match({v}, '[0-9]{4}-[0-9]{2}-[0-9]{2}')",
    "TIMESTAMP": "regexp_full_match({v}, "
    "'[0-9]{4}-[0-9]{2}-[0-9]{2}[ T][0-9]{2}:[0-9]{2}(:[0-9]{2}([.][0-9]+)?)?')",
    "BOOLEAN": "lower({v}) IN ('true', 'false')",
}
_DETECT_ORDER = ("BIGINT", "DOUBLE", "DATE", "TIMESTAMP", "BOOLEAN")


@dataclasses.dataclass(frozen=True, slots=True)
class Output:
    """One column of the import's output: a source column cast to a type."""

    name: str
    source: SourceColumn
    # None keeps the source's own type.
    target: str | None
    # Detected types demand the pattern; declared ones only a successful cast
    # (integers excepted, where a cast would round).
    strict: bool = False

    def _value(self) -> str:
        if self.source.type == "VARCHAR" and self.target not in (None, "VARCHAR"):
            return f"NULLIF(trim({self.source.expr}), '')"
        return self.source.expr

    def fits(self) -> str | None:
        """SQL that is true when the record's value can be stored, or None if always."""
        if self.target in (None, "VARCHAR"):
            return None
        value = self._value()
        check = f"TRY_CAST({value} AS {_DUCK_TYPES.get(self.target, self.target)}) IS NOT NULL"
        pattern = _PATTERNS.get(self.target)
        if self.source.type == "VARCHAR" and pattern and (self.strict or pattern == _INT):
            check = f"{pattern.replace('{v}', value)} AND {check}"
        return f"({value} IS NULL OR ({check}))"

    def select(self) -> str:
        """The SELECT item that produces the column."""
        if self.target is None:
            return f"{self.source.expr} AS {ident(self.name)}"
        duck = _DUCK_TYPES.get(self.target, self.target)
        return f"TRY_CAST({self._value()} AS {duck}) AS {ident(self.name)}"


_VALUE = SourceColumn("__dm_v", "__dm_v", "VARCHAR")


def long_form(scan: Scan, relation: str, where: str = "TRUE") -> str:
    """A FROM item of one row (__dm_i, __dm_v) per value of each record of `relation`.

    __dm_i is the column's index. The statements over it are as long whatever
    the width, unlike one aggregate per column (DuckDB binds those in time
    that grows with the square of their number).
    """
    values = ", ".join(f"CAST({c.expr} AS VARCHAR)" for c in scan.columns)
    return (
        f"(SELECT unnest(range({len(scan.columns)})) AS __dm_i, unnest([{values}]) AS __dm_v "
        f"FROM {relation} WHERE {where})"
    )


def type_fits(types: str) -> str:
    """SQL true when __dm_v fits the type `types[__dm_i + 1]` (strict, as detected)."""
    cases = " ".join(
        f"WHEN {lit(t)} THEN {Output('v', _VALUE, t, True).fits()}" for t in _DETECT_ORDER
    )
    return f"(CASE ({types})[__dm_i + 1] {cases} ELSE TRUE END)"


def _detect_long(session: Session, scan: Scan, sample: str) -> list[Output]:
    items = ", ".join(f"bool_and({Output('v', _VALUE, t, True).fits()})" for t in _DETECT_ORDER)
    rows = session.execute(
        f"SELECT __dm_i, count(__dm_v), {items} FROM {long_form(scan, sample)} GROUP BY __dm_i",
        context="detecting types",
    )
    found: dict[int, str] = {}
    for index, seen, *fits in rows:
        ok = [t for t, good in zip(_DETECT_ORDER, fits, strict=True) if good] if seen else []
        found[int(index)] = ok[0] if ok else "VARCHAR"
    return [Output(c.name, c, found.get(i, "VARCHAR"), True) for i, c in enumerate(scan.columns)]


def _detect(session: Session, scan: Scan) -> list[Output]:
    """Types of CSV columns guessed from the first records; checked on all later."""
    sample = f"(SELECT * FROM {scan.relation('detect')} LIMIT {DETECT_SAMPLE_ROWS})"
    if len(scan.columns) > LONG_FORM_ABOVE:
        return _detect_long(session, scan, sample)
    items: list[str] = []
    for column in scan.columns:
        items.append(f"count({column.expr})")
        for type_ in _DETECT_ORDER:
            items.append(f"bool_and({Output(column.name, column, type_, True).fits()})")
    row = session.execute(f"SELECT {', '.join(items)} FROM {sample}", context="detecting types")[0]
    outputs: list[Output] = []
    width = 1 + len(_DETECT_ORDER)
    for index, column in enumerate(scan.columns):
        seen, *fits = row[index * width : (index + 1) * width]
        found = [t for t, ok in zip(_DETECT_ORDER, fits, strict=True) if ok] if seen else []
        outputs.append(Output(column.name, column, found[0] if found else "VARCHAR", True))
    return outputs


def plan_outputs(
    session: Session, scan: Scan, declared: list[Column] | None, header: bool
) -> list[Output]:
    """The output columns: declared ones mapped onto the source, or detected types."""
    if declared is None:
        if scan.csv_rejects:
            return _detect(session, scan)
        if scan.detected:
            return [Output(c.name, c, scan.detected[c.name], True) for c in scan.columns]
        # A database column that held only NULLs has no type; store it as text.
        return [Output(c.name, c, "VARCHAR" if "NULL" in c.type else None) for c in scan.columns]
    if scan.csv_rejects and not header:
        if len(declared) > len(scan.columns):
            raise InvalidInput(
                f"the schema declares {len(declared)} columns, the CSV has {len(scan.columns)}"
            )
        return [Output(d.name, c, d.type) for d, c in zip(declared, scan.columns, strict=False)]
    by_name = {c.name.lower(): c for c in scan.columns}
    outputs = []
    for column in declared:
        found = by_name.get(column.name.lower())
        if found is None:
            have = ", ".join(c.name for c in scan.columns)
            raise InvalidInput(
                f"schema column {column.name!r} is not in the source (it has: {have})"
            )
        outputs.append(Output(column.name, found, column.type))
    return outputs
