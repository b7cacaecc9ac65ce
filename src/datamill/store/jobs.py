"""Job configurations: the runnable part of each job file."""

from __future__ import annotations

import dataclasses
import posixpath
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from datamill.domain.definitions import JobDefinition, WorkbookDefinition, dump_definition
from datamill.domain.records import FileEntry, JobConfiguration
from datamill.domain.status import JobKind
from datamill.errors import AlreadyExists, InvalidInput, NotFound
from datamill.store import precompiled
from datamill.store import tables as t
from datamill.store.db import Database, utcnow
from datamill.store.files import FileRepository, file_from_row, normalize_path, reference_key
from datamill.store.runlog import delete_logs


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


Check = Callable[[Connection, JobConfiguration], None]
"""A validation run inside a create transaction."""

_SELECT = sa.select(
    t.job_configurations.c.id,
    t.job_configurations.c.file_id,
    t.job_configurations.c.kind,
    t.job_configurations.c.definition,
    t.job_configurations.c.trigger_mode,
    t.job_configurations.c.updated_at,
    t.files.c.name,
).join(t.files, t.files.c.id == t.job_configurations.c.file_id)
# Built once: the worker reads a configuration per run, the trigger path per
# request, and building a statement cost more than running it.
_BY_ID = _SELECT.where(t.job_configurations.c.id == sa.bindparam("config_id", type_=sa.Integer))
# The worker's read per claim: the configuration and its job file's path (for
# the run's log lines) in one statement.
_BY_ID_WITH_PATH = _BY_ID.add_columns(t.files.c.path.label("job_path"))
_BY_FILE = _SELECT.where(
    t.job_configurations.c.file_id == sa.bindparam("file_id", type_=sa.Integer)
)


@dataclasses.dataclass(frozen=True, slots=True)
class JobKey:
    """Both ids of a job's configuration: what queueing a run needs of it."""

    id: int
    file_id: int


# A file and, if it is a job, its configuration's id: one statement per kind of
# reference (id, uuid, path). The trigger needs no more of the configuration,
# so it reads neither the definition nor a second row.
_FILE_AND_CONFIG = {
    column: sa.select(t.files, t.job_configurations.c.id.label("configuration_id"))
    .select_from(
        t.files.outerjoin(t.job_configurations, t.job_configurations.c.file_id == t.files.c.id)
    )
    .where(t.files.c[column] == sa.bindparam("reference"))
    for column in ("id", "uuid", "path")
}


class JobRepository:
    """Creates and reads job configurations together with their files."""

    def __init__(self, db: Database, files: FileRepository) -> None:
        self._db = db
        self._files = files

    def create(
        self,
        path: str,
        kind: JobKind,
        definition: JobDefinition,
        owner: str,
        *,
        check: Check | None = None,
        before: Callable[[Connection], None] | None = None,
    ) -> tuple[FileEntry, JobConfiguration]:
        """Create the job file and its configuration in one transaction.

        `before` runs inside the transaction before anything is inserted (it sees
        the tree as it is), `check` after the insert; raising from either leaves
        nothing behind.
        """
        with self._db.write() as conn:
            if before is not None:
                before(conn)
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
            config = self.get(conn, int(result.scalar_one()))
            if check is not None:
                check(conn, config)
            return entry, config

    def update(
        self, conn: Connection, config_id: int, definition: JobDefinition
    ) -> JobConfiguration:
        """Replace the definition of a configuration."""
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
        row = conn.execute(_BY_ID, {"config_id": config_id}).first()
        if row is None:
            raise NotFound(f"Entity of type 'JobConfiguration' with id '{config_id}' not found.")
        return configuration_from_row(row)

    def get_with_path(self, conn: Connection, config_id: int) -> tuple[JobConfiguration, str]:
        """The configuration with this id and its job file's path, in one read; or NotFound."""
        row = precompiled.run(conn, _BY_ID_WITH_PATH, {"config_id": config_id}).first()
        if row is None:
            raise NotFound(f"Entity of type 'JobConfiguration' with id '{config_id}' not found.")
        return configuration_from_row(row), row.job_path

    def find_with_key(
        self, conn: Connection, reference: str
    ) -> tuple[FileEntry, JobKey | None] | None:
        """The file a reference names (as FileRepository.find) and its job's key if it is one."""
        key = reference_key(reference)
        if key is None:
            return None
        column, value = key
        row = precompiled.run(conn, _FILE_AND_CONFIG[column], {"reference": value}).first()
        if row is None:
            return None
        entry = file_from_row(row)
        config_id = row.configuration_id
        return entry, JobKey(config_id, entry.id) if config_id is not None else None

    def for_file(self, conn: Connection, file_id: int) -> JobConfiguration | None:
        """The configuration of a job file, None for folders and unknown files."""
        row = conn.execute(_BY_FILE, {"file_id": file_id}).first()
        return configuration_from_row(row) if row is not None else None

    def list_all(self, conn: Connection) -> list[JobConfiguration]:
        """Every configuration, oldest first."""
        rows = conn.execute(_SELECT.order_by(t.job_configurations.c.id)).all()
        return [configuration_from_row(r) for r in rows]


def move_job_file(conn: Connection, files: FileRepository, entry: FileEntry, path: str) -> None:
    """Give a job file a new path (rename and/or move), creating missing folders."""
    path = normalize_path(path)
    if path == entry.path:
        return
    if entry.kind is not None and not path.endswith(entry.kind.extension):
        raise InvalidInput(
            f"a {entry.kind.value} job file name must end with {entry.kind.extension}"
        )
    if conn.execute(sa.select(t.files.c.id).where(t.files.c.path == path)).first():
        raise AlreadyExists(f"{path} already exists")
    parent_id = files.ensure_folder(conn, posixpath.dirname(path), entry.owner)
    conn.execute(
        sa.update(t.files)
        .where(t.files.c.id == entry.id)
        .values(path=path, name=posixpath.basename(path), parent_id=parent_id, updated_at=utcnow())
    )


def delete_job(conn: Connection, config: JobConfiguration) -> list[str]:
    """Delete a job file with its configuration, history and data rows.

    Returns the data folders to remove once the transaction has committed.
    """
    E, D = t.executions, t.data
    execution_ids = sa.select(E.c.id).where(E.c.job_configuration_id == config.id)
    data_ids = sa.select(D.c.id).where(D.c.job_configuration_id == config.id)
    folders = [
        row.location
        for row in conn.execute(
            sa.select(D.c.location).where(D.c.job_configuration_id == config.id)
        )
        if row.location
    ]
    conn.execute(
        sa.delete(t.execution_inputs).where(
            sa.or_(
                t.execution_inputs.c.execution_id.in_(execution_ids),
                t.execution_inputs.c.data_id.in_(data_ids),
            )
        )
    )
    dep = t.execution_dependencies
    conn.execute(
        sa.delete(dep).where(
            sa.or_(
                dep.c.execution_id.in_(execution_ids),
                dep.c.upstream_execution_id.in_(execution_ids),
            )
        )
    )
    deps = t.job_dependencies
    conn.execute(
        sa.delete(deps).where(
            sa.or_(
                deps.c.job_configuration_id == config.id,
                deps.c.upstream_configuration_id == config.id,
            )
        )
    )
    conn.execute(sa.delete(D).where(D.c.job_configuration_id == config.id))
    delete_logs(conn, execution_ids)
    conn.execute(sa.delete(E).where(E.c.job_configuration_id == config.id))
    # After the executions: on PostgreSQL that delete waits for a housekeeper
    # deleting runs of this job, so the gaps it recorded are seen here.
    gaps = t.execution_gaps
    conn.execute(sa.delete(gaps).where(gaps.c.job_configuration_id == config.id))
    conn.execute(sa.delete(t.job_configurations).where(t.job_configurations.c.id == config.id))
    conn.execute(
        sa.delete(t.file_group_permissions).where(
            t.file_group_permissions.c.file_id == config.file_id
        )
    )
    conn.execute(sa.delete(t.files).where(t.files.c.id == config.file_id))
    return folders
