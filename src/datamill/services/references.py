"""References between jobs obey permissions: when a definition is saved and when it runs.

A data sheet or an export source names another job by id, uuid or path. The
user who saves the definition must be able to read that job, and so must the
job's owner each time it runs. A job the user may not read, a missing one, a
file that is no job and a job of the other kind all answer alike.
"""

from __future__ import annotations

from sqlalchemy.engine import Connection

from datamill.domain.definitions import (
    DataSheet,
    DataSheetSource,
    ExportJobDefinition,
    JobDefinition,
    WorkbookDefinition,
)
from datamill.domain.records import JobConfiguration, User
from datamill.domain.status import JobKind
from datamill.errors import InvalidDefinition
from datamill.services.permissions import Access, has_access
from datamill.store.store import Store


def sources(definition: JobDefinition) -> list[tuple[str, DataSheetSource]]:
    """Every job reference of a definition, with the member that holds it."""
    if isinstance(definition, WorkbookDefinition):
        return [
            (f"sheets[{index}].source", sheet.source)
            for index, sheet in enumerate(definition.sheets)
            if isinstance(sheet, DataSheet)
        ]
    if isinstance(definition, ExportJobDefinition):
        return [("source", definition.source)]
    return []


def wanted_kind(source: DataSheetSource) -> JobKind:
    """The kind of job a source must name."""
    return JobKind.IMPORT if source.import_job is not None else JobKind.WORKBOOK


def readable_source(
    conn: Connection, store: Store, user: User | None, source: DataSheetSource
) -> JobConfiguration | None:
    """The job a source names if `user` may read it and it has the right kind, else None.

    None for a missing reference, an unreadable one, a folder and a job of the
    other kind alike, so the caller cannot tell them apart. No user (the owner
    of a job was deleted) reads nothing.
    """
    if user is None:
        return None
    entry = store.files.find(conn, source.reference)
    if entry is None or not has_access(conn, user, entry, Access.READ):
        return None
    config = store.jobs.for_file(conn, entry.id)
    if config is None or config.kind is not wanted_kind(source):
        return None
    return config


def not_readable(kind: JobKind, reader: str) -> str:
    """The one reason given for a reference that cannot be read, whatever the cause."""
    return f"is not {_article(kind)} job that {reader} can read"


def check_references(conn: Connection, store: Store, user: User, definition: JobDefinition) -> None:
    """Refuse a definition naming a job that the user saving it may not read."""
    for where, source in sources(definition):
        if readable_source(conn, store, user, source) is None:
            member = "importJob" if source.import_job is not None else "workbook"
            reason = not_readable(wanted_kind(source), "you")
            raise InvalidDefinition(f"{where}.{member}: {shown(source.reference)} {reason}")


def shown(reference: str) -> str:
    """A reference as a message can carry it: escaped if it holds what UTF-8 cannot encode."""
    try:
        reference.encode("utf-8")
    except UnicodeEncodeError:
        return ascii(reference)
    return reference


def _article(kind: JobKind) -> str:
    return {"import": "an import", "workbook": "a workbook", "export": "an export"}[kind.value]
