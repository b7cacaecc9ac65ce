"""Import jobs on DuckDB: read the source, enforce the schema, stage data.parquet."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from typing import Any

from datamill.domain import runlog as rl
from datamill.domain.definitions import CsvSource, DatabaseSource, ImportJobDefinition
from datamill.domain.status import JobStatus
from datamill.engine.base import RunResult
from datamill.engine.duckdb import sources
from datamill.engine.duckdb.literals import lit, lit_list
from datamill.engine.duckdb.session import Session
from datamill.engine.duckdb.sources import Output, Scan
from datamill.errors import JobFailed

_PREVIEW_RECORDS = 5_000


def _bad_records(session: Session, scan: Scan, outputs: list[Output], bad: str) -> list[str]:
    """The first few records that do not match the schema, each as what does not fit."""
    checked = [o for o in outputs if o.fits() is not None]
    items = [f"{o.fits()}, {o.source.expr}" for o in checked]
    rows = session.execute(
        f"SELECT {', '.join(items)} FROM {scan.relation('example')} "
        f"WHERE {scan.readable} AND {bad} LIMIT {rl.MAX_SAMPLE_LINES}",
        context="finding the first bad records",
    )
    found = []
    for row in rows:
        for index, output in enumerate(checked):
            if not row[2 * index]:
                found.append(
                    f"column {output.name!r} value {row[2 * index + 1]!r} is not a {output.target}"
                )
                break
    return found or ["unknown"]


def csv_rejects(session: Session, tag: str) -> tuple[int, str, list[dict[str, Any]]]:
    """How many CSV lines could not be read, the first in words, and a sample with line numbers."""
    count = session.execute(
        f"SELECT count(*) FROM (SELECT DISTINCT file_id, line FROM dm_rejects_{tag})",
        context="counting unreadable CSV lines",
    )[0][0]
    rows = session.execute(
        f"SELECT s.file_path, r.line, r.error_message, r.csv_line FROM dm_rejects_{tag} r "
        f"JOIN dm_scans_{tag} s USING (scan_id, file_id) ORDER BY r.file_id, r.line "
        f"LIMIT {rl.MAX_SAMPLE_LINES}",
        context="reading unreadable CSV lines",
    )
    sample = [
        {
            "file": os.path.basename(session.shown(str(path))),
            "line": int(line),
            "text": str(text),
            "reason": str(message),
        }
        for path, line, message, text in rows
    ]
    first = (
        f"line {rows[0][1]} of {os.path.basename(session.shown(str(rows[0][0])))}: {rows[0][2]}"
        if rows
        else ""
    )
    return int(count), first, sample


def failed_message(problems: list[str]) -> str:
    return "found " + "; ".join(problems) + "; errorMode FAIL stops the import"


def _check_long(
    session: Session, scan: Scan, outputs: list[Output], share: float
) -> tuple[int, list[Output]]:
    """Unreadable records, and the outputs with a column whose values do not all fit made text."""
    unreadable = 0
    if scan.readable != "TRUE":
        unreadable = int(
            session.execute(
                f"SELECT count(*) FILTER (WHERE NOT {scan.readable}) FROM {scan.relation('lines')}",
                context="checking the records",
                share=share / 4,
            )[0][0]
        )
    types = lit_list([o.target or "VARCHAR" for o in outputs])
    long = sources.long_form(scan, scan.relation("check"), scan.readable)
    failing = session.execute(
        f"SELECT DISTINCT __dm_i FROM {long} WHERE NOT {sources.type_fits(types)}",
        context="checking the records",
        share=share / 2,
    )
    text = {int(row[0]) for row in failing}
    return unreadable, [
        Output(o.name, o.source, "VARCHAR") if i in text else o for i, o in enumerate(outputs)
    ]


def source_label(source: Any) -> str:
    """The source as the log names it: its path, or the table or query of a database."""
    if isinstance(source, DatabaseSource):
        return f"database table {source.table}" if source.table else "database query"
    return str(source.path)


def record_problems(
    event: Callable[..., None], bad: int, unreadable: int, bad_sample: list[str], *, fail: bool
) -> list[str]:
    """The problems of records that do not fit or cannot be read, logged; FAIL raises."""
    problems = []
    if bad:
        problems.append(f"{bad} record(s) that do not match the schema (first: {bad_sample[0]})")
    if unreadable:
        problems.append(f"{unreadable} line(s) that are not JSON objects")
    log_drops(event, bad, unreadable, bad_sample)
    if fail and problems:
        raise JobFailed(failed_message(problems))
    return problems


def log_drops(event: Callable[..., None], bad: int, unreadable: int, bad_sample: list[str]) -> None:
    """DROPPED events (told to `event`) for records left out for their type or being unreadable."""
    if bad:
        event(
            rl.DROPPED,
            count=bad,
            reason="the record does not match the schema",
            sample=[{"record": text} for text in bad_sample],
        )
    if unreadable:
        event(rl.DROPPED, count=unreadable, reason="the line is not a JSON object")


def run_import(session: Session, definition: ImportJobDefinition) -> RunResult:
    """Read the source, enforce the schema, stage data.parquet."""
    source = definition.source
    declared = definition.columns
    session.where = {"source": source_label(source)}
    scan = sources.open_scan(session, source, declared)
    header = source.header if isinstance(source, CsvSource) else True
    outputs = sources.plan_outputs(session, scan, declared, header)
    if not outputs:
        raise JobFailed("no columns could be read from the source")
    fail = definition.error_mode == "FAIL"
    checks = [(o, o.fits()) for o in outputs]
    bad_any = " OR ".join(f"NOT {f}" for _, f in checks if f is not None) or "FALSE"
    remaining = 0.99 - session.progress.done
    unreadable = bad = 0
    problems: list[str] = []
    bad_sample: list[str] = []
    if declared is None and len(outputs) > sources.LONG_FORM_ABOVE:
        # Wide and without a schema: the same check in statements whose
        # length does not grow with the width (see sources.long_form).
        unreadable, outputs = _check_long(session, scan, outputs, remaining)
        bad_any = "FALSE"
        problems = record_problems(session.event, 0, unreadable, [], fail=fail)
    elif scan.readable != "TRUE" or bad_any != "FALSE":
        items = [f"count(*) FILTER (WHERE NOT {scan.readable})"]
        items.append(f"count(*) FILTER (WHERE {scan.readable} AND ({bad_any}))")
        items += [f"count(*) FILTER (WHERE {scan.readable} AND NOT {f})" for _, f in checks if f]
        counts = session.execute(
            f"SELECT {', '.join(items)} FROM {scan.relation('check')}",
            context="checking the records",
            share=remaining / 2,
        )[0]
        unreadable, bad = int(counts[0]), int(counts[1])
        if declared is None:
            # Without a schema nothing is dropped for its type: a column with a
            # value that does not fit the detected type stays text.
            failing = iter(counts[2:])
            outputs = [
                Output(o.name, o.source, "VARCHAR") if f and next(failing) else o for o, f in checks
            ]
            bad_any, bad = "FALSE", 0
        elif bad:
            bad_sample = _bad_records(session, scan, outputs, f"({bad_any})")
        problems = record_problems(session.event, bad, unreadable, bad_sample, fail=fail)
    target = os.path.join(session.staging_dir, "data.parquet")
    selects = ", ".join(o.select() for o in outputs)
    written = int(
        session.execute(
            f"COPY (SELECT {selects} FROM {scan.relation('write')} "
            f"WHERE {scan.readable} AND NOT ({bad_any})) TO {lit(target)} (FORMAT parquet)",
            context="writing the imported data",
            share=0.99 - session.progress.done,
        )[0][0]
    )
    # Staged database rows were only a means: staging must hold just the output.
    shutil.rmtree(os.path.join(session.staging_dir, "_source"), ignore_errors=True)
    broken = 0
    if scan.csv_rejects:
        broken, first, lines = csv_rejects(session, "write")
        if broken:
            problems.append(f"{broken} CSV line(s) that could not be read (first: {first})")
            session.event(
                rl.DROPPED, count=broken, reason="the CSV line could not be read", sample=lines
            )
            if fail:
                raise JobFailed(failed_message(problems))
    session.where = {}
    return import_result(
        session.event, source, scan, (written, bad + unreadable + broken), target, problems
    )


def import_result(
    event: Callable[..., None],
    source: Any,
    scan: Scan,
    counts: tuple[int, int],
    target: str,
    problems: list[str],
) -> RunResult:
    """Log the READ event of an import that staged `counts` = (written, dropped); its result."""
    written, dropped = counts
    source_bytes = scan.source_bytes
    event(
        rl.READ,
        source=source_label(source),
        files=len(scan.files),
        records=written + dropped,
        bytes=source_bytes,
    )
    return RunResult(
        status=JobStatus.COMPLETED_WITH_WARNINGS if dropped else JobStatus.COMPLETED,
        success_count=written,
        failure_count=dropped,
        counters={
            "IMPORT_RECORDS": written,
            "IMPORT_BYTES": source_bytes,
            "IMPORT_DROPPED_RECORDS": dropped,
            "IMPORT_PREVIEW_RECORDS": min(written, _PREVIEW_RECORDS),
            "IMPORT_OUTPUT_BYTES": os.path.getsize(target),
            "IMPORT_DROPPED_SPLITS": 0,
            "IMPORT_OUTPUT_PARTITIONS": 1,
        },
        sheets={"data": written},
        warnings=tuple(f"dropped {p}" for p in problems),
    )
