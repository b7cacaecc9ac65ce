"""Import jobs, workbooks and export jobs as documents: create, read, update, delete, list.

A document is the job's definition plus its `path`. What `read` returns can be
sent back to `update` unchanged.
"""

from __future__ import annotations

import shutil
import uuid
from typing import Any, Literal

from sqlalchemy.engine import Connection

from datamill.domain.definitions import JobDefinition, WorkbookDefinition, definition_model
from datamill.domain.records import FileEntry, JobConfiguration, User
from datamill.domain.status import JobKind
from datamill.errors import Conflict, InvalidDefinition, NotFound
from datamill.services.folders import require_create
from datamill.services.graph import (
    cycle_text,
    downstream_graph,
    find_cycle,
    reachable,
    rebuild_dependencies,
    upstream_graph,
)
from datamill.services.jobs import ByConfiguration, JobService, parse_definition
from datamill.services.locations import check_definition_access
from datamill.services.permissions import Access, Capability, has_access, require_capability
from datamill.services.references import check_references
from datamill.store import executions as ex
from datamill.store import jobs as job_store


def document_path(kind: JobKind, document: dict[str, Any]) -> str:
    """The file path a document names; a bare name goes to the kind's default folder."""
    path = document.get("path")
    if not isinstance(path, str) or not path.strip():
        raise InvalidDefinition(
            f"path: required, e.g. {kind.default_folder}/name{kind.extension} or just a name"
        )
    path = path.strip()
    if "/" not in path:
        path = f"{kind.default_folder}/{path}"
    others = [k.extension for k in JobKind if k is not kind]
    if any(path.endswith(extension) for extension in others):
        raise InvalidDefinition(
            f"path: a {kind.value} job file name must end with {kind.extension}"
        )
    if not path.endswith(kind.extension):
        path += kind.extension
    return path


def document_schema(kind: JobKind) -> dict[str, Any]:
    """The JSON Schema of a job document: the definition plus its path."""
    schema = definition_model(kind).model_json_schema(by_alias=True, mode="validation")
    schema["properties"] = {
        "path": {
            "type": "string",
            "description": f"Where the job file lives, e.g. {kind.default_folder}/name"
            f"{kind.extension}; a bare name goes to {kind.default_folder}.",
        },
        **schema["properties"],
    }
    schema["required"] = ["path", *schema.get("required", [])]
    schema["$id"] = f"https://datamill.invalid/schemas/{kind.value}-job-v1.json"
    return schema


def _require_run_for_triggering(conn: Connection, user: User, definition: JobDefinition) -> None:
    # A workbook that runs by itself (schedule, new data) makes runs without a
    # trigger request, so saving one needs the right to run jobs (A7).
    if isinstance(definition, WorkbookDefinition) and definition.triggering.mode != "MANUAL":
        require_capability(conn, user, Capability.JOB_RUN)


Direction = Literal["upstream", "downstream", "both"]


def _is_uuid(text: str) -> bool:
    try:
        return len(text) == 36 and str(uuid.UUID(text)) == text.lower()
    except ValueError:
        return False


def _neighbour(config: JobConfiguration, entry: FileEntry, level: int) -> dict[str, Any]:
    return {
        "id": config.id,
        "type": _DATAMEER_TYPES[config.kind],
        "path": entry.path,
        "name": entry.name.rsplit(".", 1)[0],
        "fileId": entry.id,
        "uuid": entry.uuid,
        "level": level,
    }


# The names Datameer's routes give the kinds (/api/import-job/<id>/dependencies ...).
_DATAMEER_TYPES = {
    JobKind.IMPORT: "import-job",
    JobKind.WORKBOOK: "workbook",
    JobKind.EXPORT: "export-job",
}


def _definition_part(document: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in document.items() if k != "path"}


class ArtifactService:
    """CRUD of job documents, with permissions and dependency rules."""

    def __init__(self, jobs: JobService) -> None:
        self.jobs = jobs
        self.store = jobs.store

    def create(self, kind: JobKind, document: dict[str, Any], user: User) -> JobConfiguration:
        """Create a job file from a document; the caller becomes its owner."""
        path = document_path(kind, document)
        with self.store.db.read() as conn:
            require_capability(conn, user, Capability.JOB_DEFINE)

        definition = parse_definition(kind, _definition_part(document))
        with self.store.db.read() as conn:
            _require_run_for_triggering(conn, user, definition)

        def before(conn: Connection) -> None:
            # In the creating transaction, before its folders exist: the tree cannot
            # change between the check and the insert.
            require_create(conn, self.store, user, path, job=True)
            check_references(conn, self.store, user, definition)
            check_definition_access(conn, self.store, definition, user)

        def check(conn: Connection, config: JobConfiguration) -> None:
            self._refuse_cycles(conn, config, user)

        _entry, config = self.jobs.define_job(
            path, kind, _definition_part(document), user.name, check=check, before=before
        )
        return config

    def read(self, kind: JobKind, config_id: int, user: User) -> dict[str, Any]:
        """The document of a job: its path and definition."""
        with self.store.db.read() as conn:
            require_capability(conn, user, Capability.JOB_READ)
            entry, config = self._locate(conn, kind, config_id, user, Access.READ)
        return {"path": entry.path, **config.definition}

    def read_by_uuid(self, kind: JobKind, file_uuid: str, user: User) -> dict[str, Any]:
        """The document of a job named by its file's uuid, under the rules of `read`.

        Anything but a readable job of this kind (no such uuid, another kind, a
        folder, a file the caller may not read) answers the same 404.
        """
        missing = NotFound(f"Entity of type '{kind.value}' with uuid '{file_uuid}' not found.")
        if not _is_uuid(file_uuid):
            raise missing
        with self.store.db.read() as conn:
            require_capability(conn, user, Capability.JOB_READ)
            entry = self.store.files.find(conn, file_uuid)
            config = self.store.jobs.for_file(conn, entry.id) if entry is not None else None
            if entry is None or config is None or config.kind is not kind:
                raise missing
            if not has_access(conn, user, entry, Access.READ):
                raise missing
        return {"path": entry.path, **config.definition}

    def dependencies(
        self, kind: JobKind, config_id: int, user: User, direction: Direction, level: int
    ) -> dict[str, Any]:
        """The jobs a job reads from (upstream) and that read from it (downstream).

        Up to `level` steps away, each once with its shortest distance; jobs the
        caller may not read are left out and not walked through.
        """
        with self.store.db.read() as conn:
            require_capability(conn, user, Capability.JOB_READ)
            entry, config = self._locate(conn, kind, config_id, user, Access.READ)
            upstream = upstream_graph(conn, self.store)
            edges = {"upstream": upstream, "downstream": downstream_graph(upstream)}
            configs = {c.id: c for c in self.store.jobs.list_all(conn)}
            entries = self.store.files.get_many(conn, (c.file_id for c in configs.values()))

            def readable(node: int) -> bool:
                found = entries.get(configs[node].file_id)
                return found is not None and has_access(conn, user, found, Access.READ)

            body: dict[str, Any] = {
                "id": config.id,
                "path": entry.path,
                "uuid": entry.uuid,
                "direction": direction.upper(),
                "level": level,
            }
            for way in ("upstream", "downstream"):
                if direction in (way, "both"):
                    body[way] = [
                        _neighbour(configs[node], entries[configs[node].file_id], distance)
                        for node, distance in reachable(edges[way], config.id, level, readable)
                    ]
        return body

    def update(self, kind: JobKind, config_id: int, document: dict[str, Any], user: User) -> None:
        """Replace a job's definition; a different path renames or moves the file."""
        definition = parse_definition(kind, _definition_part(document))
        with self.store.db.write() as conn:
            require_capability(conn, user, Capability.JOB_DEFINE)
            _require_run_for_triggering(conn, user, definition)
            entry, _config = self._locate(conn, kind, config_id, user, Access.WRITE)
            # Every reference, old or new: one the user may no longer read cannot be saved again.
            check_references(conn, self.store, user, definition)
            check_definition_access(conn, self.store, definition, user)
            if "path" in document:
                path = document_path(kind, document)
                if path != entry.path:
                    require_create(conn, self.store, user, path, job=True)
                    job_store.move_job_file(conn, self.store.files, entry, path)
            config = self.store.jobs.update(conn, config_id, definition)
            self.jobs.refresh_job(conn, config)
            self._refuse_cycles(conn, config, user)

    def delete(self, kind: JobKind, config_id: int, user: User) -> None:
        """Delete a job, its history and its data; refused only while it runs.

        Jobs that read its data never pin it (nobody else's permission is needed):
        their next run fails, saying that the reference names no job their owner can read.
        """
        with self.store.db.write() as conn:
            require_capability(conn, user, Capability.JOB_DEFINE)
            entry, config = self._locate(conn, kind, config_id, user, Access.WRITE)
            if ex.active_execution_for_config(conn, config.id) is not None:
                raise Conflict(f"{entry.path} cannot be deleted while it is queued or running")
            folders = job_store.delete_job(conn, config)
            rebuild_dependencies(conn, self.store)
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)

    def list_jobs(self, kind: JobKind, user: User) -> list[dict[str, Any]]:
        """Every job of a kind the caller may read."""
        items = []
        with self.store.db.read() as conn:
            require_capability(conn, user, Capability.JOB_READ)
            for config in self.store.jobs.list_all(conn):
                if config.kind is not kind:
                    continue
                entry = self.store.files.get(conn, config.file_id)
                if has_access(conn, user, entry, Access.READ):
                    items.append(
                        {
                            "path": entry.path,
                            "id": config.id,
                            "name": entry.name.rsplit(".", 1)[0],
                            "file-id": entry.id,
                            "uuid": entry.uuid,
                            "owner": entry.owner,
                            "description": config.definition.get("description", ""),
                        }
                    )
        return items

    # ------------------------------------------------------------ rules

    def _locate(
        self, conn: Connection, kind: JobKind, config_id: int, user: User, access: Access
    ) -> tuple[FileEntry, JobConfiguration]:
        entry, config = self.jobs.resolve_job(conn, ByConfiguration(config_id), user, access)
        if config.kind is not kind:
            # Another kind's id answers like a missing one: the URL names no such job.
            raise NotFound(f"Entity of type 'JobConfiguration' with id '{config_id}' not found.")
        return entry, config

    def _refuse_cycles(self, conn: Connection, config: JobConfiguration, user: User) -> None:
        cycle = find_cycle(upstream_graph(conn, self.store))
        if cycle and config.id in cycle:
            # Only the jobs the user may read are named; the others are counted.
            names = cycle_text(conn, self.store, cycle, user)
            raise InvalidDefinition(f"the jobs would read from each other in a cycle: {names}")
