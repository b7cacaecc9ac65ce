"""Turning a claimed execution into an engine RunRequest: resolve what it reads."""

from __future__ import annotations

import os

from sqlalchemy.engine import Connection

from datamill.domain.definitions import (
    DataSheet,
    DataSheetSource,
    ExportJobDefinition,
    ImportJobDefinition,
    JobDefinition,
    WorkbookDefinition,
    definition_model,
)
from datamill.domain.records import DataResult, Execution, JobConfiguration, User
from datamill.domain.status import JobKind
from datamill.engine.base import PathRoots, RunRequest
from datamill.errors import InvalidInput, JobFailed
from datamill.services.locations import RunIO, policy_from_settings, resolve_run_io
from datamill.settings import Settings
from datamill.store import data as data_store
from datamill.store.store import Store


def _resolve_source(
    conn: Connection, store: Store, source: DataSheetSource, what: str
) -> tuple[str, DataResult]:
    entry = store.files.find(conn, source.reference)
    config = store.jobs.for_file(conn, entry.id) if entry is not None else None
    wanted = JobKind.IMPORT if source.import_job is not None else JobKind.WORKBOOK
    if config is None or config.kind is not wanted:
        raise JobFailed(f"{what} reads {source.reference}, which is not a {wanted.value} job")
    result = data_store.newest_data(conn, config.id, lock=True)
    if result is None:
        raise JobFailed(f"{what} reads {source.reference}, which has no data yet: run it first")
    sheet = source.sheet or "data"
    if sheet not in result.sheets:
        raise JobFailed(f"{what} reads sheet {sheet!r} of {source.reference}, which is not kept")
    return os.path.join(result.location, f"{sheet}.parquet"), result


def build_request(
    conn: Connection,
    store: Store,
    settings: Settings,
    execution: Execution,
    config: JobConfiguration,
) -> RunRequest:
    """The engine request for one execution; records the data it reads."""
    definition = definition_model(config.kind).model_validate(config.definition)
    inputs: dict[str, str] = {}
    read: list[int] = []
    if isinstance(definition, WorkbookDefinition):
        for index, sheet in enumerate(definition.sheets):
            if isinstance(sheet, DataSheet):
                path, result = _resolve_source(
                    conn, store, sheet.source, f"sheets[{index}] ({sheet.name})"
                )
                inputs[sheet.name] = path
                read.append(result.id)
    elif isinstance(definition, ExportJobDefinition):
        path, result = _resolve_source(conn, store, definition.source, "the export source")
        inputs["source"] = path
        read.append(result.id)
    data_store.record_inputs(conn, execution.id, read)
    if store.file_policy is None:
        store.file_policy = policy_from_settings(settings)
    io = _resolve_files(conn, store, config, definition)
    return RunRequest(
        execution_id=execution.id,
        kind=config.kind,
        definition=io.definition,
        inputs=inputs,
        variables=execution.variables,
        staging_dir=str(settings.staging_root / str(execution.id)),
        roots=io.roots,
        memory_limit=settings.engine_memory_limit,
        threads=settings.engine_threads,
        temp_dir=str(settings.temp_root),
        forbidden_database_urls=(settings.resolved_database_url,),
        shared_database=settings.engine_isolation == "worker",
        data_root=str(settings.resolved_data_root),
        max_source_files=settings.source_max_files,
    )


def _resolve_files(
    conn: Connection, store: Store, config: JobConfiguration, definition: JobDefinition
) -> RunIO:
    """Locations and connections resolved with the rights of the job's owner, as it runs."""
    if not isinstance(definition, ImportJobDefinition | ExportJobDefinition):
        return RunIO(config.definition, PathRoots((), ()))  # workbooks touch no files
    owner_name = store.files.get(conn, config.file_id).owner
    owner = store.users.get(conn, owner_name) or User(owner_name, "", (), (), None)
    try:
        return resolve_run_io(conn, store, definition, config.definition, owner)
    except InvalidInput as error:
        raise JobFailed(error.message) from None
