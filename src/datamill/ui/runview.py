"""The run page: counters, failure, warnings, log, lineage and a preview of the data."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import pyarrow.parquet as pq

from datamill.domain.records import Execution, FileEntry, User
from datamill.domain.status import JobKind
from datamill.errors import Forbidden
from datamill.services import data as data_service
from datamill.services import runs
from datamill.services.jobs import JobService
from datamill.store.runlog import LogEvent

PREVIEW_ROWS = 100
# A running log shows its newest lines; the whole log is the API's (/file-job).
LOG_LINES = 500


@dataclasses.dataclass(frozen=True, slots=True)
class Preview:
    """The first rows of one kept sheet of the run's data, and where its CSV is."""

    sheet: str
    columns: list[str]
    rows: list[list[Any]]
    records: int
    download: str


@dataclasses.dataclass(frozen=True, slots=True)
class RunPage:
    """Everything the run page shows."""

    execution: Execution
    entry: FileEntry
    events: list[LogEvent]
    failure: dict[str, Any] | None
    warnings: list[dict[str, Any]]
    lineage: dict[str, Any] | None
    previews: list[Preview] | None  # None: the user's roles do not allow reading data

    @property
    def active(self) -> bool:
        """Whether the run is still queued, waiting or running (the page keeps tailing)."""
        return not self.execution.status.is_terminal


def run_page(jobs: JobService, execution_id: int, user: User, *, full: bool = True) -> RunPage:
    """The run as job details show it (the same check); `full` adds lineage and previews."""
    report = runs.run_report(jobs, execution_id, user)
    lineage = runs.lineage(jobs, execution_id, user) if full else None
    previews = _previews(jobs, report.execution, report.entry, user) if full else []
    return RunPage(
        execution=report.execution,
        entry=report.entry,
        events=report.events[-LOG_LINES:],
        failure=runs.failure(report),
        warnings=runs.warnings(report),
        lineage=lineage,
        previews=previews,
    )


def _previews(
    jobs: JobService, execution: Execution, entry: FileEntry, user: User
) -> list[Preview] | None:
    """The kept sheets this run wrote, through the data listing's check (DATA_READ)."""
    kind = entry.kind
    if kind not in (JobKind.IMPORT, JobKind.WORKBOOK):
        return []
    try:
        sheets = data_service.list_data(jobs.store, kind, execution.job_configuration_id, user)
    except Forbidden:
        return None
    previews = []
    for sheet in sheets:
        for result in sheet.results:
            if result.execution_id != execution.id or result.deleted:
                continue
            path = os.path.join(result.location, f"{sheet.sheet}.parquet")
            columns, rows = _first_rows(path)
            previews.append(
                Preview(
                    sheet=sheet.sheet,
                    columns=columns,
                    rows=rows,
                    records=result.sheets.get(sheet.sheet, result.record_count),
                    download=_download(kind, execution.job_configuration_id, sheet.sheet),
                )
            )
    return previews


def _first_rows(path: str) -> tuple[list[str], list[list[Any]]]:
    """Column names and the first PREVIEW_ROWS rows of a Parquet file; nothing if it is gone."""
    try:
        handle = pq.ParquetFile(path)
    except (OSError, ValueError):
        return [], []
    columns = list(handle.schema_arrow.names)
    for batch in handle.iter_batches(batch_size=PREVIEW_ROWS):
        table = batch.to_pylist()
        return columns, [[row.get(c) for c in columns] for row in table[:PREVIEW_ROWS]]
    return columns, []


def _download(kind: JobKind, config_id: int, sheet: str) -> str:
    """The data route that streams the job's newest result of this sheet as CSV."""
    if kind is JobKind.IMPORT:
        return f"/rest/data/import-job/{config_id}/download"
    return f"/rest/data/workbook/{config_id}/{sheet}/download"
