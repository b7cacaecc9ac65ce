"""Data results on the wire (spec §4.8, §6): listings, CSV downloads, deletion."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Annotated, Any

import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from fastapi import APIRouter, Path, Request
from starlette.responses import Response, StreamingResponse

from datamill.api.types import CurrentUser, EntityId
from datamill.api.wire import Clock, PrettyJSONResponse
from datamill.domain.status import JobKind
from datamill.services.data import delete_data, list_data, newest_sheet_file
from datamill.services.jobs import JobService

router = APIRouter()
BATCH_ROWS = 65_536
_KINDS = {"import-job": JobKind.IMPORT, "workbook": JobKind.WORKBOOK}
KindName = Annotated[str, Path(pattern="^(import-job|workbook)$")]


def _jobs(request: Request) -> JobService:
    jobs: JobService = request.app.state.jobs
    return jobs


@router.delete("/rest/data/{data_id}")
def delete(data_id: EntityId, request: Request, user: CurrentUser) -> Response:
    """Mark a data result for deletion: {"status": true}, or false if already marked."""
    return PrettyJSONResponse({"status": delete_data(_jobs(request).store, data_id, user)})


@router.get("/rest/data/{kind}/{config_id}")
def listing(kind: KindName, config_id: EntityId, request: Request, user: CurrentUser) -> Response:
    """The stored results of an import job or workbook, newest first."""
    clock: Clock = request.app.state.clock
    outputs = list_data(_jobs(request).store, _KINDS[kind], config_id, user)
    body: list[dict[str, Any]] = []
    for output in outputs:
        datas = [
            {
                "timestamp": clock.datameer(result.created_at),
                "record-count": result.sheets.get(output.sheet, 0),
                "id": result.id,
            }
            for result in output.results
        ]
        body.append(
            {
                "path": output.path,
                "record-count": datas[0]["record-count"] if datas else 0,
                "datas": datas,
            }
        )
    return PrettyJSONResponse(body)


@router.get("/rest/data/import-job/{config_id}/download")
def download_import(config_id: EntityId, request: Request, user: CurrentUser) -> Response:
    """The newest data of an import job as CSV, streamed."""
    return _stream_csv(request, JobKind.IMPORT, config_id, "data", user)


@router.get("/rest/data/workbook/{config_id}/{sheet}/download")
def download_sheet(
    config_id: EntityId, sheet: str, request: Request, user: CurrentUser
) -> Response:
    """The newest data of a kept workbook sheet as CSV, streamed."""
    return _stream_csv(request, JobKind.WORKBOOK, config_id, sheet, user)


def _stream_csv(request: Request, kind: JobKind, config_id: int, sheet: str, user: Any) -> Response:
    parquet, name = newest_sheet_file(_jobs(request).store, kind, config_id, sheet, user)
    # Open now, so a file removed meanwhile fails before the 200 is sent.
    handle = pq.ParquetFile(parquet)
    return StreamingResponse(
        _csv_chunks(handle),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


def _csv_chunks(handle: pq.ParquetFile) -> Iterator[bytes]:
    """CSV in record batches, so a large result never sits whole in memory."""
    first = True
    try:
        for batch in handle.iter_batches(batch_size=BATCH_ROWS):
            buffer = io.BytesIO()
            options = pa_csv.WriteOptions(include_header=first)
            pa_csv.write_csv(batch, buffer, write_options=options)
            first = False
            yield buffer.getvalue()
        if first:  # no rows at all: still send the header
            buffer = io.BytesIO()
            pa_csv.write_csv(handle.schema_arrow.empty_table(), buffer)
            yield buffer.getvalue()
    finally:
        handle.close()
