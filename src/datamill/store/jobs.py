"""Job configurations: the runnable part of each job file."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from datamill.domain.definitions import JobDefinition, WorkbookDefinition, dump_definition
from datamill.domain.records import FileEntry, JobConfiguration
from datamill.domain.status import JobKind
from datamill.errors import NotFound
from datamill.store import tables as t
from datamill.store.db import Database, utcnow
from datamill.store.files import FileRepository


def configuration_from_row(row: Any) -> JobConfiguration:
    """Build a JobConfiguration from a joined job_configurations/files row."""
    return JobConfiguration(
        id=row.id,
        file_id=row.file_id,
        kind=JobKind(row.kind),
        name=row.name,
        definition=dict(row.definition),
        trigger_mode=row.trigger_mode,
        updated_at=row.updated_at,
    )


def _trigger_fields(definition: JobDefinition) -> dict[str, Any]:
    if isinstance(definition, WorkbookDefinition):
        return {"trigger_mode": definition.triggering.mode, "cron": definition.triggering.cron}
    return {"trigger_mode": "MANUAL", "cron": None}


_SELECT = sa.select(
    t.job_configurations.c.id,
    t.job_configurations.c.file_id,
    t.job_configurations.c.kind,
    t.job_configurations.c.definition,
    t.job_configurations.c.trigger_mode,
    t.job_configurations.c.updated_at,
    t.files.c.name,
).join(t.files, t.files.c.id == t.job_configurations.c.file_id)


class JobRepository:
    """Creates and reads job configurations together with their files."""

    def __init__(self, db: Database, files: FileRepository) -> None:
        self._db = db
        self._files = files

    def create(
        self, path: str, kind: JobKind, definition: JobDefinition, owner: str
    ) -> tuple[FileEntry, JobConfiguration]:
        """Create the job file and its configuration in one transaction."""
        with self._db.write() as conn:
            entry = self._files.create_file(conn, path, kind, owner)
            result = conn.execute(
                sa.insert(t.job_configurations)
                .values(
                    file_id=entry.id,
                    kind=kind.value,
                    definition=dump_definition(definition),
                    updated_at=utcnow(),
                    **_trigger_fields(definition),
                )
                .returning(t.job_configurations.c.id)
            )
            config_id = int(result.scalar_one())
            return entry, self.get(conn, config_id)

    def update(self, config_id: int, definition: JobDefinition) -> JobConfiguration:
        """Replace the definition of a configuration."""
        with self._db.write() as conn:
            conn.execute(
                sa.update(t.job_configurations)
                .where(t.job_configurations.c.id == config_id)
                .values(
                    definition=dump_definition(definition),
                    updated_at=utcnow(),
                    **_trigger_fields(definition),
                )
            )
            return self.get(conn, config_id)

    def get(self, conn: Connection, config_id: int) -> JobConfiguration:
        """The configuration with this id, or NotFound."""
        row = conn.execute(_SELECT.where(t.job_configurations.c.id == config_id)).first()
        if row is None:
            raise NotFound(f"Entity of type 'JobConfiguration' with id '{config_id}' not found.")
        return configuration_from_row(row)

    def for_file(self, conn: Connection, file_id: int) -> JobConfiguration | None:
        """The configuration of a job file, None for folders and unknown files."""
        row = conn.execute(_SELECT.where(t.job_configurations.c.file_id == file_id)).first()
        return configuration_from_row(row) if row is not None else None

    def list_all(self, conn: Connection) -> list[JobConfiguration]:
        """Every configuration, oldest first."""
        rows = conn.execute(_SELECT.order_by(t.job_configurations.c.id)).all()
        return [configuration_from_row(r) for r in rows]
