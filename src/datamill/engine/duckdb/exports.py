"""Sink connectors of export jobs: staged CSV, Parquet and JSON-lines files, database tables.

A file sink is written to the staging folder and moved into place by the
worker when the run is published, so a failed or stopped run never leaves a
half-written file at the user's path.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from datamill.domain import runlog as rl
from datamill.domain.definitions import MARKS_TABLE, DatabaseSink, ExportJobDefinition, FileSink
from datamill.engine.base import RunResult
from datamill.engine.duckdb.literals import lit
from datamill.engine.duckdb.sources import database_error
from datamill.engine.paths import check_database_url, check_sink_path, resolved_url
from datamill.engine.runs import export_result, export_source
from datamill.errors import InvalidInput, JobFailed

if TYPE_CHECKING:
    from datamill.engine.duckdb.session import Session

DB_BATCH_ROWS = 5_000
_COPY_OPTIONS = {"parquet": "FORMAT parquet", "jsonl": "FORMAT json"}


def run_export(session: Session, definition: ExportJobDefinition) -> RunResult:
    """Write the source sheet to a staged file (moved at publish) or to a database table."""
    real = export_source(session.request)
    session.lock_down([real])
    moves: tuple[tuple[str, str], ...] = ()
    sink = definition.sink
    target = sink.path if isinstance(sink, FileSink) else f"database table {sink.table}"
    session.where = {"target": target}
    earlier: dict[str, int] = {}
    if isinstance(sink, FileSink):
        staged, final, records, written = stage_file(session, sink, real)
        moves = ((staged, final),)
    else:
        records, written, by = write_database(session, sink, real)
        if by is not None:
            # The rows are there once, from a lost attempt: this one wrote nothing.
            earlier = {"written-by-attempt": by}
    session.event(rl.EXPORTED, target=target, records=records, bytes=written, **earlier)
    session.where = {}
    return export_result(records, written, moves)


def stage_file(session: Session, sink: FileSink, source: str) -> tuple[str, str, int, int]:
    """Write the file into staging: (staged path, final path, records, bytes)."""
    roots = session.request.roots
    final = check_sink_path(sink.path, roots.sink_roots, roots.excluded)
    folder = os.path.join(session.staging_dir, "export")
    os.makedirs(folder, exist_ok=True)
    staged = os.path.join(folder, os.path.basename(final))
    options = _COPY_OPTIONS.get(sink.kind)
    if options is None:
        options = f"FORMAT csv, HEADER {str(sink.header).lower()}, DELIMITER {lit(sink.delimiter)}"
    rows = session.execute(
        f"COPY (SELECT * FROM read_parquet({lit(source)})) TO {lit(staged)} ({options})",
        context=f"writing {sink.kind} file {sink.path!r}",
        share=0.99,
    )
    return staged, final, int(rows[0][0]), os.path.getsize(staged)


# ---------------------------------------------------------------- databases


def _column_type(type_: pa.DataType) -> sa.types.TypeEngine[Any]:
    """The SQLAlchemy type for an Arrow type; nested and unknown types become JSON text."""
    if pa.types.is_boolean(type_):
        return sa.Boolean()
    if pa.types.is_int8(type_) or pa.types.is_int16(type_) or pa.types.is_int32(type_):
        return sa.Integer()
    if pa.types.is_uint8(type_) or pa.types.is_uint16(type_):
        return sa.Integer()
    if pa.types.is_int64(type_) or pa.types.is_uint32(type_):
        return sa.BigInteger()
    if pa.types.is_floating(type_):
        return sa.Double()
    if pa.types.is_decimal(type_):
        return sa.Numeric(type_.precision, type_.scale)
    if pa.types.is_date(type_):
        return sa.Date()
    if pa.types.is_timestamp(type_):
        return sa.DateTime(timezone=type_.tz is not None)
    if pa.types.is_time(type_):
        return sa.Time()
    if pa.types.is_binary(type_) or pa.types.is_large_binary(type_):
        return sa.LargeBinary()
    return sa.Text()


def _plain(value: Any) -> Any:
    """A value a database driver accepts for a TEXT column."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, default=str)


def _sqlite_transactions(engine: sa.Engine) -> None:
    """Make pysqlite run DDL inside the transaction, so a replace is atomic.

    By default Python's sqlite3 module only opens a transaction before DML,
    so CREATE/DROP/ALTER would commit on their own.
    """

    @sa.event.listens_for(engine, "connect")
    def _no_implicit(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None

    @sa.event.listens_for(engine, "begin")
    def _begin(conn: sa.Connection) -> None:
        conn.exec_driver_sql("BEGIN")


def _marks_table() -> sa.Table:
    """The marker table Datamill keeps in a sink's database: one row per run that wrote."""
    return sa.Table(
        MARKS_TABLE,
        sa.MetaData(),
        # installation:execution id, the same for every attempt of a run: a second
        # attempt's marker collides with the first's, so only one write commits.
        sa.Column("run_key", sa.String(80), primary_key=True),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("target", sa.String(128), nullable=False),
        sa.Column("records", sa.BigInteger, nullable=False),
        sa.Column("written_at", sa.DateTime, nullable=False),
    )


class _AlreadyWritten(Exception):
    """An earlier attempt of this run committed its write (its marker row is there)."""


def _mark(conn: sa.Connection, session: Session, sink: DatabaseSink, records: int) -> None:
    """Record this run's write in the sink's own transaction, first of all its statements.

    Committed with the rows or not at all: after a lost worker, the next
    attempt finds the marker if and only if the rows are there. A retried
    run's marker collides with an earlier attempt's (primary key), so two
    attempts never both commit, even one that outlived its declared-lost worker.
    """
    request = session.request
    marks = _marks_table()
    marks.create(conn, checkfirst=True)
    row = {
        "run_key": request.run_key,
        "attempt": request.attempt,
        "target": sink.table,
        "records": records,
        "written_at": dt.datetime.now(dt.UTC).replace(tzinfo=None),
    }
    try:
        with conn.begin_nested():
            conn.execute(marks.insert(), [row])
    except sa.exc.IntegrityError:
        raise _AlreadyWritten from None


def _earlier_write(engine: sa.Engine, session: Session) -> tuple[int, int]:
    """(attempt, records) of the earlier attempt whose marker row is in the sink's database."""
    marks = _marks_table()
    request = session.request
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(marks.c.attempt, marks.c.records).where(marks.c.run_key == request.run_key)
        ).one()
    return int(row.attempt), int(row.records)


def write_database(
    session: Session, sink: DatabaseSink, source: str
) -> tuple[int, int, int | None]:
    """Write all records to the table in one transaction: (records, bytes, None).

    With a marker (the default), a run an earlier attempt of which committed
    writes nothing again: (its records, 0, that attempt); a marker no earlier
    attempt can have written (on the first attempt) fails the run.
    """
    request = session.request
    url = check_database_url(
        resolved_url(sink.url),
        request.roots.sink_roots,
        request.forbidden_database_urls,
        "database sink",
        must_exist=False,
        forbidden_folders=(request.data_root,) if request.data_root else (),
    )
    parquet = pq.ParquetFile(source)
    total = max(1, parquet.metadata.num_rows)
    engine = sa.create_engine(url, poolclass=NullPool)
    if url.get_backend_name() == "sqlite":
        _sqlite_transactions(engine)
    records = written = 0
    try:
        with engine.begin() as conn:
            # A run without a key (the engine used directly, never retried) needs no marker.
            if sink.marks_writes and session.request.run_key:
                _mark(conn, session, sink, parquet.metadata.num_rows)
            exists = sa.inspect(conn).has_table(sink.table)
            if sink.mode == "replace" or not exists:
                # Replace builds a new table beside the old one and swaps it in at
                # the end of the same transaction: readers see old or new, never half.
                name = f"{sink.table[:48]}__dm_new" if exists else sink.table
                table = sa.Table(
                    name,
                    sa.MetaData(),
                    *(sa.Column(f.name, _column_type(f.type)) for f in parquet.schema_arrow),
                )
                table.drop(conn, checkfirst=True)
                table.create(conn)
            else:
                table = sa.Table(sink.table, sa.MetaData(), autoload_with=conn)
                have = {c.name.lower() for c in table.columns}
                missing = [f.name for f in parquet.schema_arrow if f.name.lower() not in have]
                if missing:
                    raise InvalidInput(
                        f"table {sink.table!r} has no column {', '.join(map(repr, missing))}"
                    )
            names = {c.name.lower(): c.name for c in table.columns}
            text = {c.name for c in table.columns if isinstance(c.type, sa.Text)}
            for batch in parquet.iter_batches(batch_size=DB_BATCH_ROWS):
                rows = [
                    {
                        names[k.lower()]: _plain(v) if names[k.lower()] in text else v
                        for k, v in row.items()
                    }
                    for row in batch.to_pylist()
                ]
                if rows:
                    conn.execute(table.insert(), rows)
                records += batch.num_rows
                written += batch.nbytes
                session.progress.report(0.99 * records / total)
            if table.name != sink.table:
                quote = engine.dialect.identifier_preparer.quote
                conn.exec_driver_sql(f"DROP TABLE {quote(sink.table)}")
                conn.exec_driver_sql(
                    f"ALTER TABLE {quote(table.name)} RENAME TO {quote(sink.table)}"
                )
    except _AlreadyWritten:
        try:
            attempt, records = _earlier_write(engine, session)
        except sa.exc.SQLAlchemyError as error:
            raise database_error("database sink", url, error) from None
        finally:
            engine.dispose()
        if not 1 <= attempt < request.attempt:
            # No earlier attempt of this run wrote it (on the first attempt, none
            # exists): anyone
            # who can write the sink's database can guess a run key, and
            # reporting success here would make a run that wrote nothing
            # look done (docs/decisions.md, "Enabled engines, planted markers").
            raise JobFailed(
                f"database table {sink.table!r} was not written: {MARKS_TABLE} already holds"
                f" the marker of this run (attempt {attempt}), which no earlier attempt of"
                f" this run (this is attempt {request.attempt}) wrote; someone else did"
            ) from None
        session.progress.report(0.99)
        return records, 0, attempt
    except sa.exc.SQLAlchemyError as error:
        raise database_error("database sink", url, error) from None
    finally:
        engine.dispose()
    return records, written, None
