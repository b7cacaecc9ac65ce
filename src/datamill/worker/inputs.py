"""Turning a claimed execution into an engine RunRequest: resolve what it reads."""

from __future__ import annotations

import functools
import hashlib
import os

from sqlalchemy.engine import Connection, make_url

from datamill.domain.definitions import (
    DataSheet,
    DataSheetSource,
    ExportJobDefinition,
    ImportJobDefinition,
    JobDefinition,
    WorkbookDefinition,
    definition_model,
    upstream_references,
)
from datamill.domain.records import DataResult, Execution, JobConfiguration, User
from datamill.domain.runlog import READ, PendingEvent, pending
from datamill.domain.status import TriggerType
from datamill.engine.base import PathRoots, RunRequest
from datamill.engine.registry import not_enabled
from datamill.errors import InvalidInput, JobFailed
from datamill.services.locations import RunIO, policy_from_settings, resolve_run_io
from datamill.services.permissions import Capability, has_capability
from datamill.services.references import not_readable, readable_source, shown, wanted_kind
from datamill.settings import Settings
from datamill.store import data as data_store
from datamill.store.store import Store
from datamill.worker.memo import PerConfiguration


def _resolve_source(
    conn: Connection, store: Store, owner: User | None, source: DataSheetSource, what: str
) -> tuple[str, DataResult]:
    # Checked again at every run with the job owner's rights: READ may have been
    # revoked, the owner changed, or a path may name another file since it was saved.
    config = readable_source(conn, store, owner, source)
    if config is None:
        reader = owner.name if owner is not None else "the owner of this job"
        reason = not_readable(wanted_kind(source), reader)
        raise JobFailed(f"{what} reads {shown(source.reference)}, which {reason}")
    result = data_store.newest_data(conn, config.id, lock=True)
    if result is None:
        raise JobFailed(f"{what} reads {source.reference}, which has no data yet: run it first")
    sheet = source.sheet or "data"
    if sheet not in result.sheets:
        raise JobFailed(f"{what} reads sheet {sheet!r} of {source.reference}, which is not kept")
    return os.path.join(result.location, f"{sheet}.parquet"), result


def _read(name: str, result: DataResult, source: DataSheetSource) -> PendingEvent:
    """The log's event for data a run reads: which, and how many records of its sheet."""
    records = result.sheets.get(source.sheet or "data")
    return pending(READ, sheet=name, records=records, **{"data-id": result.id})


# Runs nobody asked for: they run only while their owner may run jobs.
_AUTOMATIC = frozenset({TriggerType.SCHEDULER, TriggerType.DATA_DRIVEN})


def _owner(conn: Connection, store: Store, config: JobConfiguration) -> User | None:
    """The user a run reads as: the owner of the job file, with their roles and groups."""
    return store.users.get(conn, store.files.get(conn, config.file_id).owner)


def _validated(config: JobConfiguration) -> JobDefinition:
    return definition_model(config.kind).model_validate(config.definition)


# Validated once per saved version of a job, not per run (worker/memo.py); the
# models are frozen, so a run cannot change what the next one gets.
_definitions = PerConfiguration(_validated)


def build_request(
    conn: Connection,
    store: Store,
    settings: Settings,
    execution: Execution,
    config: JobConfiguration,
    events: list[PendingEvent] | None = None,
) -> RunRequest:
    """The engine request for one execution; records the data it reads (and adds it to `events`)."""
    definition = _definitions(config)
    # Saved while the operator allowed its engine, perhaps: they may have narrowed
    # DATAMILL_ENGINES since, and the worker must not start an engine they never set up.
    refusal = not_enabled(definition.engine or settings.engine, settings.enabled_engines)
    if refusal is not None:
        raise JobFailed(refusal)
    inputs: dict[str, str] = {}
    read: list[int] = []
    automatic = execution.trigger_type in _AUTOMATIC
    # Looked up once, and only for runs that read something or started by
    # themselves: a trivial manual run costs no query.
    owner = _owner(conn, store, config) if automatic or upstream_references(definition) else None
    if automatic and (owner is None or not has_capability(conn, owner, Capability.JOB_RUN)):
        # Nobody asked for this run: its owner must still hold the right to run jobs (A7).
        reader = owner.name if owner is not None else "the owner of this job"
        raise JobFailed(
            f"{reader} may no longer run jobs (the capability {Capability.JOB_RUN.value}), "
            f"so this {execution.trigger_type.value} run does not start"
        )
    if isinstance(definition, WorkbookDefinition):
        for index, sheet in enumerate(definition.sheets):
            if isinstance(sheet, DataSheet):
                path, result = _resolve_source(
                    conn, store, owner, sheet.source, f"sheets[{index}] ({sheet.name})"
                )
                inputs[sheet.name] = path
                read.append(result.id)
                if events is not None:
                    events.append(_read(sheet.name, result, sheet.source))
    elif isinstance(definition, ExportJobDefinition):
        path, result = _resolve_source(conn, store, owner, definition.source, "the export source")
        inputs["source"] = path
        read.append(result.id)
        if events is not None:
            events.append(_read("source", result, definition.source))
    data_store.record_inputs(conn, execution.id, read)
    if store.file_policy is None:
        store.file_policy = policy_from_settings(settings)
    io = _resolve_files(conn, store, config, definition, owner)
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
        file_roots=settings.local_file_roots,
        max_source_files=settings.source_max_files,
        max_source_bytes=settings.source_max_bytes,
        attempt=execution.attempts,
        run_key=f"{installation_key(settings)}:{execution.id}",
        engine=settings.engine,
        spark_remote=settings.spark_remote,
        spark_file_access=settings.spark_file_access,
        object_store=settings.object_store,
    )


@functools.cache
def _installation_key(database_url: str) -> str:
    # The metadata database names the installation: another Datamill exporting to
    # the same target has other execution ids under another key. The password
    # is left out, so changing it does not change the key.
    shown = make_url(database_url).render_as_string(hide_password=True)
    return hashlib.sha256(shown.encode()).hexdigest()[:16]


def installation_key(settings: Settings) -> str:
    """A short stable name of this Datamill installation (from its metadata database)."""
    return _installation_key(settings.resolved_database_url)


def _resolve_files(
    conn: Connection,
    store: Store,
    config: JobConfiguration,
    definition: JobDefinition,
    owner: User | None,
) -> RunIO:
    """Locations and connections resolved with the rights of the job's owner, as it runs."""
    if not isinstance(definition, ImportJobDefinition | ExportJobDefinition):
        return RunIO(config.definition, PathRoots((), ()))  # workbooks touch no files
    if owner is None:
        owner = _owner(conn, store, config)
    if owner is None:
        # The owner's account is gone: the run holds no one's rights.
        owner = User(store.files.get(conn, config.file_id).owner, "", (), (), None)
    try:
        return resolve_run_io(conn, store, definition, config.definition, owner)
    except InvalidInput as error:
        raise JobFailed(error.message) from None
