"""Data results: listing and deleting them."""

from __future__ import annotations

import dataclasses
import os

from sqlalchemy.engine import Connection

from datamill.domain.definitions import WorkbookDefinition
from datamill.domain.records import DataResult, FileEntry, JobConfiguration, User
from datamill.domain.status import JobKind
from datamill.errors import NotFound
from datamill.services.permissions import Access, Capability, require_access, require_capability
from datamill.store import data as data_store
from datamill.store.db import utcnow
from datamill.store.store import Store


def delete_data(store: Store, data_id: int, user: User) -> bool:
    """Mark a data result for deletion; False if it was already marked.

    It disappears from listings at once; housekeeping removes the files once
    no active execution reads them.
    """
    missing = NotFound(f"Entity of type 'Data' with id '{data_id}' not found.")
    with store.db.write() as conn:
        require_capability(conn, user, Capability.DATA_READ)
        result = data_store.get_data(conn, data_id)
        if result is None:
            raise missing
        config = store.jobs.get(conn, result.job_configuration_id)
        entry = store.files.get(conn, config.file_id)
        try:
            require_access(conn, user, entry, Access.READ)
        except NotFound:
            raise missing from None
        require_access(conn, user, entry, Access.WRITE)
        return data_store.mark_deleted(conn, data_id, utcnow())


@dataclasses.dataclass(frozen=True, slots=True)
class SheetData:
    """The stored results of one output of a job: an import job's data or a kept sheet."""

    path: str
    sheet: str
    results: list[DataResult]


def list_data(store: Store, kind: JobKind, config_id: int, user: User) -> list[SheetData]:
    """The visible results of a job, newest first, per output sheet."""
    with store.db.read() as conn:
        require_capability(conn, user, Capability.DATA_READ)
        entry, config = _readable_job(store, conn, kind, config_id, user)
        results = data_store.data_for_configuration(conn, config.id)
    if kind is JobKind.IMPORT:
        return [SheetData(entry.path, "data", results)]
    definition = WorkbookDefinition.model_validate(config.definition)
    return [
        SheetData(f"{entry.path}/{sheet}", sheet, [r for r in results if sheet in r.sheets])
        for sheet in definition.kept_sheets()
    ]


def newest_sheet_file(
    store: Store, kind: JobKind, config_id: int, sheet: str, user: User
) -> tuple[str, str]:
    """(Parquet file, download name) of the newest result of one output sheet."""
    with store.db.read() as conn:
        require_capability(conn, user, Capability.DATA_READ)
        entry, config = _readable_job(store, conn, kind, config_id, user)
        result = data_store.newest_data(conn, config.id)
    if result is None:
        raise NotFound(f"{entry.path} has no data yet")
    if sheet not in result.sheets:
        raise NotFound(f"{entry.path} keeps no sheet named {sheet!r}")
    name = entry.name.rsplit(".", 1)[0] + ("" if kind is JobKind.IMPORT else f"-{sheet}")
    return os.path.join(result.location, f"{sheet}.parquet"), f"{name}.csv"


def _readable_job(
    store: Store, conn: Connection, kind: JobKind, config_id: int, user: User
) -> tuple[FileEntry, JobConfiguration]:
    missing = NotFound(f"Entity of type 'JobConfiguration' with id '{config_id}' not found.")
    try:
        config = store.jobs.get(conn, config_id)
        entry = store.files.get(conn, config.file_id)
        require_access(conn, user, entry, Access.READ)
    except NotFound:
        raise missing from None
    if config.kind is not kind:
        raise missing
    return entry, config
