"""Import jobs on Spark: CSV, JSON lines and Parquet read by Spark, typed as on DuckDB.

The worker's DuckDB plans the import exactly as a DuckDB import does
(engine/duckdb/sources.py): the files a path or glob names, checked against
the roots; the columns; and, without a schema, their types, detected from a
sample (CSV), the keys and types of every line (JSON lines) or the footer
(Parquet). Spark then reads every value as the source holds it (text for CSV
and JSON lines), checks and casts it by the same rules (engine/spark/
coercion.py), counts what does not fit in one pass and writes the kept
records as one Parquet file in the run's staging folder, in a second. So the
types never differ between engines, and the counters, warnings and FAIL
messages are built by the DuckDB import's own code.

CSV lines Spark cannot read are described (line numbers, DuckDB's reasons)
by the worker's DuckDB, which reads the file only when there are any, and
must count as many as Spark did, or the run fails rather than differ.
Database sources are read through the worker (engine/spark/dispatch.py).
"""

from __future__ import annotations

import functools
import os
import re
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from datamill.domain import runlog as rl
from datamill.domain.definitions import (
    CsvSource,
    ImportJobDefinition,
    JsonLinesSource,
    ParquetSource,
)
from datamill.engine.base import RunResult
from datamill.engine.duckdb import sources
from datamill.engine.duckdb.imports import (
    csv_rejects,
    failed_message,
    import_result,
    record_problems,
    source_label,
)
from datamill.engine.duckdb.session import Session
from datamill.engine.duckdb.sources import Output, Scan
from datamill.engine.spark.coercion import Coercion, check_casts
from datamill.engine.spark.files import write_one_file
from datamill.engine.spark.inputs import FOLDER, link_inputs, unlink_inputs
from datamill.engine.spark.session import SparkRun
from datamill.errors import JobFailed

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

_CORRUPT = "_dm_corrupt"
_REPLACEMENT = "\ufffd"
# A link to a source file as Spark's messages show it (engine/spark/inputs.py).
_LINK = re.compile(r"(file:)?/\S*/" + FOLDER + r"/[0-9]{5}\b")
# DuckDB's encoding names -> Java's.
_ENCODINGS = {"utf-8": "UTF-8", "latin-1": "ISO-8859-1", "utf-16": "UTF-16"}


def _quoted(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


class _Read:
    """The source as a Spark DataFrame: each output's source column, which records are readable."""

    def __init__(self, frame: DataFrame, readable: Column, column: Any) -> None:
        self.frame = frame
        self.readable = readable
        self.column = column


def _union(frames: list[DataFrame], by_name: bool = False) -> DataFrame:
    # One read per file, in the files' order: Spark would order one read's
    # files by size, and the records must keep DuckDB's (file) order.
    return functools.reduce(
        lambda a, b: a.unionByName(b, allowMissingColumns=True) if by_name else a.union(b), frames
    )


def _read_csv(run: SparkRun, source: CsvSource, scan: Scan, paths: list[str]) -> _Read:
    from pyspark.sql.connect import functions as F
    from pyspark.sql.types import StringType, StructField, StructType

    names = [f"_c{i}" for i in range(len(scan.columns))]
    schema = StructType([StructField(n, StringType()) for n in [*names, _CORRUPT]])
    reader = run.spark.read.schema(schema).options(
        header=str(source.header).lower(),
        # Spark reads a lone `\` as the start of an escape (`\t`) and fails.
        sep="\\\\" if source.delimiter == "\\" else source.delimiter,
        quote=source.quote,
        escape=source.quote,
        encoding=_ENCODINGS[source.encoding],
        # Quoted values may span lines, as on DuckDB (a file is then one task).
        multiLine="true",
        # A quote inside a quoted value fails the read: DuckDB drops such a
        # line, Spark would keep a value DuckDB never reads.
        mode="PERMISSIVE",
        columnNameOfCorruptRecord=_CORRUPT,
        unescapedQuoteHandling="RAISE_ERROR",
    )
    frame = _union([reader.csv(p) for p in paths])
    index = {c.name: i for i, c in enumerate(scan.columns)}
    readable = F.col(_CORRUPT).isNull()
    if source.encoding != "latin-1":
        # Spark decodes bytes that are not valid text as U+FFFD, where DuckDB
        # cannot read the line: counted as unreadable here, so DuckDB describes
        # (and must count) the same lines (_describe_broken).
        readable &= ~F.concat_ws("", *names).contains(_REPLACEMENT)
    return _Read(frame, readable, lambda o: F.col(names[index[o.source.name]]))


def _read_jsonl(run: SparkRun, scan: Scan, paths: list[str]) -> _Read:
    from pyspark.sql.connect import functions as F
    from pyspark.sql.types import StringType, StructField, StructType

    keys = [str(c.key) for c in scan.columns]
    frame = _union([run.spark.read.text(p) for p in paths])
    # DuckDB skips lines of JSON whitespace alone; any other must be one JSON object.
    frame = frame.filter(~F.col("value").rlike("^[ \\t\\r\\n]*\\z"))
    unique = list(dict.fromkeys(keys))
    schema = StructType([StructField(k, StringType()) for k in unique])
    # Keys differing only in case (`a`, `A`) are two columns on DuckDB; Spark
    # resolves field names case-insensitively and refuses either as ambiguous.
    # A struct cast is positional: the fields are then reached by our names.
    fields = StructType([StructField(f"k{i}", StringType()) for i in range(len(unique))])
    parsed = F.from_json("value", schema).cast(fields)
    frame = frame.select("value", parsed.alias("_dm_json"))
    field = {k: f"k{i}" for i, k in enumerate(unique)}
    value = F.col("value")
    # parse_json takes one JSON value and nothing after it (from_json and
    # get_json_object stop after the first); a valid value opening with `{` is
    # an object. DuckDB cannot read a line with bytes that are not UTF-8.
    readable = (
        F.is_valid_utf8(value)
        & F.try_parse_json(value).isNotNull()
        & value.rlike("^[ \\t\\r\\n]*[{]")
    )
    return _Read(frame, readable, lambda o: F.col("_dm_json").getField(field[str(o.source.key)]))


def _check_parquet_files(planner: Session, files: list[str]) -> None:
    """Refuse Parquet files Spark would read otherwise: case twins, text and non-text mixed."""
    textual: dict[str, set[bool]] = {}
    for file in files:
        try:
            schema = pq.read_schema(file)
        except (OSError, ValueError) as error:
            raise JobFailed(planner.shown(f"cannot read the Parquet source: {error}")) from None
        seen: dict[str, str] = {}
        for field in schema:
            twin = seen.setdefault(field.name.lower(), field.name)
            if twin != field.name:
                # DuckDB renames the second (`A_1`), a name Spark cannot find, and
                # Spark finds neither by name: it compares names ignoring case.
                raise JobFailed(
                    f"the Parquet source has the columns {twin!r} and {field.name!r}, which "
                    'the Spark engine cannot tell apart; run this import with "engine": "duckdb"'
                )
            is_text = pa.types.is_string(field.type) or pa.types.is_large_string(field.type)
            kinds = textual.setdefault(field.name.lower(), set())
            kinds.add(is_text)
            if len(kinds) > 1:
                # DuckDB unites the files' types as text ('02' stays '02'); Spark's
                # union casts the text to the other type ('02' -> 2, 'x' fails).
                raise JobFailed(
                    f"column {field.name!r} is text in some Parquet files and not in others, "
                    'which the Spark engine reads otherwise; run this import with "engine": '
                    '"duckdb"'
                )


def _read_parquet(run: SparkRun, planner: Session, scan: Scan, paths: list[str]) -> _Read:
    from pyspark.sql.connect import functions as F

    _check_parquet_files(planner, scan.reads)
    frame = _union([run.spark.read.parquet(p) for p in paths], by_name=True)
    return _Read(frame, F.lit(True), lambda o: F.col(_quoted(o.source.name)))


def _any(columns: list[Column]) -> Column:
    from pyspark.sql.connect import functions as F

    if not columns:
        return F.lit(False)
    if len(columns) == 1:
        return columns[0]
    # Halves, not a left fold: a chain of 1,000 ORs (one per typed column)
    # overflows Python's recursion limit when the plan is serialised.
    middle = len(columns) // 2
    return _any(columns[:middle]) | _any(columns[middle:])


Checks = list[tuple[Coercion, "Column"]]


def _checks_once(read: _Read, checks: list[tuple[Coercion, Column | None]]) -> tuple[_Read, Checks]:
    """The read with each test computed once, as a column; the tests (None: always fits) by name.

    Inlined, `readable` (which reads every CSV column) would be repeated in
    every column's count, a plan that grows with the square of the width
    (1,000 columns ran the server out of heap).
    """
    from pyspark.sql.connect import functions as F

    checked = [(c, f) for c, f in checks if f is not None]
    tests = [f.alias(f"_dm_fits{i}") for i, (_, f) in enumerate(checked)]
    frame = read.frame.select("*", read.readable.alias("_dm_readable"), *tests)
    once = _Read(frame, F.col("_dm_readable"), read.column)
    return once, [(c, F.col(f"_dm_fits{i}")) for i, (c, _) in enumerate(checked)]


def _counts(read: _Read, checked: Checks, first: Output) -> DataFrame:
    """One row: unreadable records, readable ones that do not fit, each test's misfits, and more."""
    from pyspark.sql.connect import functions as F

    return read.frame.agg(
        F.count_if(~read.readable),
        F.count_if(read.readable & _any([~f for _, f in checked])),
        *[F.count_if(read.readable & ~f) for _, f in checked],
        # Spark refuses a query of a CSV's corrupt-record column alone.
        F.count(read.column(first)),
    )


def _kept(read: _Read, checked: Checks, outputs: list[Output]) -> DataFrame:
    """The records to store: readable, every value fitting, converted to the output columns."""
    kept = read.frame.filter(read.readable & ~_any([~f for _, f in checked]))
    return kept.select(*[Coercion(o, read.column(o)).select() for o in outputs])


def _bad_records(run: SparkRun, read: _Read, checked: list[tuple[Coercion, Column]]) -> list[str]:
    """The first few records that do not match the schema, each as what does not fit."""
    bad = _any([~f for _, f in checked])
    items = []
    for index, (coercion, fits) in enumerate(checked):
        items += [fits.alias(f"f{index}"), coercion.source.alias(f"v{index}")]
    rows = run.execute(
        lambda: (
            read.frame.filter(read.readable & bad)
            .select(*items)
            .limit(rl.MAX_SAMPLE_LINES)
            .collect()
        ),
        context="finding the first bad records",
    )
    found = []
    for row in rows:
        for index, (coercion, _) in enumerate(checked):
            if not row[2 * index]:
                value = row[2 * index + 1]
                found.append(
                    f"column {coercion.output.name!r} value {value!r} "
                    f"is not a {coercion.output.target}"
                )
                break
    return found or ["unknown"]


def run_import(run: SparkRun, definition: ImportJobDefinition) -> RunResult:
    """Plan with the worker's DuckDB, read, check and write with Spark; stage data.parquet."""
    planner = Session(run.request, run.progress.report, events=run.emit)
    try:
        return _import(run, planner, definition)
    except JobFailed as error:
        # Spark names the links it read; the user knows the source by its path.
        error.args = (_LINK.sub("the source file", planner.shown(error.message)),)
        raise
    finally:
        planner.close()
        unlink_inputs(run.staging_dir)


def _import(run: SparkRun, planner: Session, definition: ImportJobDefinition) -> RunResult:
    source = definition.source
    assert isinstance(source, CsvSource | JsonLinesSource | ParquetSource)
    declared = definition.columns
    run.where = planner.where = {"source": source_label(source)}
    scan = sources.open_scan(planner, source, declared)
    header = source.header if isinstance(source, CsvSource) else True
    outputs = sources.plan_outputs(planner, scan, declared, header)
    if not outputs:
        raise JobFailed("no columns could be read from the source")
    check_casts(outputs)
    run.progress.done = planner.progress.done
    held = planner.held
    assert held is not None  # a file source: its files are held since their check
    # A Spark server on this machine reads the files the worker holds open, so
    # what it reads is what was checked; a cluster reads the checked paths,
    # which are checked again after its read (docs/engines.md), as does a
    # server on this machine the operator says cannot open the worker's /proc.
    local = run.session.same_machine and run.request.spark_file_access != "paths"
    paths = link_inputs(run.staging_dir, held.paths(os.getpid()) if local else scan.files)
    if isinstance(source, CsvSource):
        read = _read_csv(run, source, scan, paths)
    elif isinstance(source, JsonLinesSource):
        read = _read_jsonl(run, scan, paths)
    else:
        read = _read_parquet(run, planner, scan, paths)
    fail = definition.error_mode == "FAIL"

    def coerce(output: Output) -> Coercion:
        return Coercion(output, read.column(output))

    read, checked = _checks_once(read, [(c, c.fits()) for c in map(coerce, outputs)])
    counts = run.execute(
        lambda: _counts(read, checked, outputs[0]).collect()[0],
        context="checking the records",
        share=(0.99 - run.progress.done) / 2,
    )
    # Unreadable: CSV lines Spark could not split into the columns, or JSON
    # lines that are not objects.
    csv = isinstance(source, CsvSource)
    unreadable, bad = int(counts[0]), int(counts[1])
    broken, unreadable = (unreadable, 0) if csv else (0, unreadable)
    bad_sample: list[str] = []
    if declared is None:
        # Without a schema nothing is dropped for its type: a column with a
        # value that does not fit the detected type stays text.
        text = {c.output.name for (c, _), n in zip(checked, counts[2:-1], strict=True) if n}
        outputs = [Output(o.name, o.source, "VARCHAR") if o.name in text else o for o in outputs]
        checked, bad = [], 0
    elif bad:
        bad_sample = _bad_records(run, read, checked)
    problems = record_problems(run.event, bad, unreadable, bad_sample, fail=fail)
    if broken:
        # Known before writing on Spark (DuckDB learns it while writing): the
        # same problems, events and FAIL message, without a write to throw away.
        problems.append(_describe_broken(planner, scan, broken))
        if fail:
            raise JobFailed(failed_message(problems))
    target = os.path.join(run.staging_dir, "data.parquet")
    kept = _kept(read, checked, outputs)
    run.execute(
        lambda: write_one_file(kept, target),
        context="writing the imported data",
        share=0.99 - run.progress.done,
    )
    moved = [] if local else held.moved()
    if moved:
        raise JobFailed(
            f"source file {moved[0]!r} was replaced while Spark read it; nothing was imported"
        )
    written = pq.ParquetFile(target).metadata.num_rows
    run.where = {}
    dropped = bad + unreadable + broken
    return import_result(run.event, source, scan, (written, dropped), target, problems)


def _describe_broken(planner: Session, scan: Scan, broken: int) -> str:
    """The problem of CSV lines Spark could not read, in DuckDB's words (it reads them too)."""
    # Every column is read (a bare count(*) would not decode the values).
    planner.execute(
        f"SELECT count(COLUMNS(*)) FROM {scan.relation('write')}",
        context="reading unreadable CSV lines",
    )
    count, first, lines = csv_rejects(planner, "write")
    if count != broken:
        raise JobFailed(
            f"Spark could not read {broken} line(s) of the CSV source and DuckDB {count}; "
            'the engines read this file differently: run this import with "engine": "duckdb"'
        )
    planner.event(rl.DROPPED, count=count, reason="the CSV line could not be read", sample=lines)
    return f"{count} CSV line(s) that could not be read (first: {first})"
