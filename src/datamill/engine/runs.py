"""What every engine's runs share: the parsed definition, workbook inputs, results."""

from __future__ import annotations

import os

from pydantic import ValidationError

from datamill.domain.definitions import (
    DataSheet,
    JobDefinition,
    WorkbookDefinition,
    definition_model,
)
from datamill.domain.status import JobStatus
from datamill.engine.base import RunRequest, RunResult
from datamill.errors import InvalidDefinition, InvalidInput, JobFailed


def workbook_inputs(request: RunRequest, definition: WorkbookDefinition) -> dict[str, str]:
    """Data-sheet name -> real path of its input file, checked to exist."""
    found: dict[str, str] = {}
    for index, sheet in enumerate(definition.sheets):
        if isinstance(sheet, DataSheet):
            path = request.inputs.get(sheet.name)
            if path is None:
                raise InvalidInput(f'sheets[{index}]: no data was given for sheet "{sheet.name}"')
            real = os.path.realpath(path)
            if not os.path.isfile(real):
                raise JobFailed(f'sheets[{index}]: the data of sheet "{sheet.name}" is missing')
            found[sheet.name] = real
    return found


def workbook_result(
    definition: WorkbookDefinition, kept: dict[str, int], output_bytes: int
) -> RunResult:
    """The result of a workbook run that staged the `kept` sheets (name -> records)."""
    records = sum(kept.values())
    return RunResult(
        status=JobStatus.COMPLETED,
        success_count=records,
        failure_count=0,
        counters={
            "WORKBOOK_RECORDS": records,
            "WORKBOOK_DROPPED_RECORDS": 0,
            "WORKBOOK_OUTPUT_BYTES": output_bytes,
            "WORKBOOK_SHEETS": len(definition.sheets),
        },
        sheets=kept,
    )


def parse_request(request: RunRequest) -> JobDefinition:
    """The request's definition, checked again by the engine (it may run elsewhere)."""
    try:
        return definition_model(request.kind).model_validate(request.definition)
    except ValidationError as error:
        raise InvalidDefinition(f"invalid {request.kind.value} definition: {error}") from None


def export_result(records: int, written: int, moves: tuple[tuple[str, str], ...] = ()) -> RunResult:
    """The result of an export run that wrote `records` records, `written` bytes."""
    return RunResult(
        status=JobStatus.COMPLETED,
        success_count=records,
        failure_count=0,
        counters={"EXPORT_RECORDS": records, "EXPORT_DROPPED_RECORDS": 0, "EXPORT_BYTES": written},
        sheets={},
        moves=moves,
    )


def export_source(request: RunRequest) -> str:
    """The real path of the data an export run writes, checked to exist."""
    source = request.inputs.get("source")
    if source is None:
        raise InvalidInput("an export run needs its 'source' data")
    real = os.path.realpath(source)
    if not os.path.isfile(real):
        raise JobFailed("the data to export is missing")
    return real
