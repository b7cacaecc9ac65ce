"""Defining, triggering, inspecting and stopping jobs."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import pydantic
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from datamill.domain.definitions import JobDefinition, definition_model
from datamill.domain.estimate import remaining_seconds
from datamill.domain.records import Execution, FileEntry, JobConfiguration, User
from datamill.domain.status import JobKind, JobStatus, TriggerType
from datamill.errors import Conflict, InvalidDefinition, InvalidInput, NotFound, StopTimeout
from datamill.services.permissions import Access, require_access
from datamill.services.wakeup import CHANNEL, Wakeup
from datamill.store import executions as ex
from datamill.store.db import utcnow
from datamill.store.store import Store


def parse_definition(kind: JobKind, raw: dict[str, Any]) -> JobDefinition:
    """Validate a JSON definition; errors name the member and the problem."""
    try:
        return definition_model(kind).model_validate(raw)
    except pydantic.ValidationError as error:
        problems = []
        for item in error.errors():
            where = "".join(
                f"[{part}]" if isinstance(part, int) else f".{part}" for part in item["loc"]
            ).lstrip(".")
            message = item["msg"].removeprefix("Value error, ")
            problems.append(f"{where}: {message}" if where else message)
        raise InvalidDefinition("; ".join(problems)) from None


@dataclasses.dataclass(frozen=True, slots=True)
class StatusView:
    """What the status endpoint shows about a job file."""

    file: FileEntry
    execution: Execution | None
    remaining_seconds: float | None


class JobService:
    """The job use cases, shared by the API, the CLI and the demo set-up."""

    def __init__(self, store: Store, wakeup: Wakeup, *, stop_wait_seconds: float = 30.0) -> None:
        self.store = store
        self.wakeup = wakeup
        self.stop_wait_seconds = stop_wait_seconds

    # ------------------------------------------------------------ defining

    def define_job(
        self, path: str, kind: JobKind, raw: dict[str, Any], owner: str
    ) -> tuple[FileEntry, JobConfiguration]:
        """Create a job file with a validated definition."""
        definition = parse_definition(kind, raw)
        return self.store.jobs.create(path, kind, definition, owner)

    # ------------------------------------------------------------ resolving

    def resolve_file(
        self, conn: Connection, reference: str, user: User, access: Access
    ) -> FileEntry:
        """The file a reference names, if the user may see it and holds `access`."""
        entry = self.store.files.find(conn, reference)
        if entry is None and "+" in reference:
            # Datameer tells users to write spaces as '+'; a real '+' in a name wins.
            entry = self.store.files.find(conn, reference.replace("+", " "))
        if entry is None:
            raise NotFound()
        require_access(conn, user, entry, access)
        return entry

    def resolve_job(
        self, conn: Connection, reference: str, user: User, access: Access
    ) -> tuple[FileEntry, JobConfiguration]:
        """The job file and configuration a reference names."""
        entry = self.resolve_file(conn, reference, user, access)
        config = self.store.jobs.for_file(conn, entry.id)
        if config is None:
            raise InvalidInput(f"{entry.path} is not a job (import job, workbook or export job)")
        return entry, config

    # ------------------------------------------------------------ triggering

    def trigger(
        self,
        reference: str,
        user: User,
        *,
        trigger_type: TriggerType = TriggerType.RESTAPI,
        variables: dict[str, Any] | None = None,
    ) -> Execution:
        """Queue a new execution; it is visible as QUEUED when this returns."""
        with self.store.db.write() as conn:
            _entry, config = self.resolve_job(conn, reference, user, Access.EXECUTE)
            execution_id = ex.create_execution(
                conn, config, trigger_type, user.name, variables=variables
            )
            self._notify_other_nodes(conn, "work")
            execution = ex.get_execution(conn, execution_id)
        self.wakeup.notify_work()
        return execution

    def _notify_other_nodes(self, conn: Connection, payload: str) -> None:
        # Delivered on commit, so a woken worker always finds the new row.
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_notify(:c, :p)"), {"c": CHANNEL, "p": payload})

    # ------------------------------------------------------------ inspecting

    def status(self, reference: str, user: User) -> StatusView:
        """The newest execution of a job file, with an estimate if it runs."""
        with self.store.db.read() as conn:
            entry, config = self.resolve_job(conn, reference, user, Access.READ)
            execution = ex.newest_execution(conn, config.id)
            remaining = None
            if execution is not None and execution.status is JobStatus.RUNNING:
                remaining = self._remaining(conn, execution)
        return StatusView(entry, execution, remaining)

    def _remaining(self, conn: Connection, execution: Execution) -> float | None:
        if execution.started_at is None:
            return None
        elapsed = (utcnow() - execution.started_at).total_seconds()
        mean = ex.mean_run_seconds(conn, execution.job_configuration_id)
        return remaining_seconds(elapsed, execution.progress, mean)

    def execution(self, execution_id: int, user: User) -> tuple[Execution, FileEntry]:
        """One execution, if the user may read its job file."""
        with self.store.db.read() as conn:
            execution = ex.get_execution(conn, execution_id)
            entry = self.store.files.get(conn, execution.file_id)
            require_access(conn, user, entry, Access.READ)
        return execution, entry

    # ------------------------------------------------------------ stopping

    def stop(self, reference: str, user: User) -> Execution:
        """Stop the job's active execution; return once it is no longer running."""
        with self.store.db.write() as conn:
            _entry, config = self.resolve_job(conn, reference, user, Access.EXECUTE)
            active = ex.active_execution_for_config(conn, config.id)
            if active is None:
                raise Conflict("There is no queued or running execution of this job to stop.")
            status = ex.request_stop(conn, active.id)
            if status is JobStatus.RUNNING:
                self._notify_other_nodes(conn, "stop")
        if status is JobStatus.RUNNING:
            self.wakeup.notify_stop()
        return self.wait_until_not_running(active.id)

    def wait_until_not_running(self, execution_id: int) -> Execution:
        """Poll until the execution has left RUNNING, within the configured bound."""
        deadline = time.monotonic() + self.stop_wait_seconds
        delay = 0.005
        while True:
            with self.store.db.read() as conn:
                execution = ex.get_execution(conn, execution_id)
            if execution.status is not JobStatus.RUNNING:
                return execution
            if time.monotonic() >= deadline:
                raise StopTimeout(
                    f"Execution {execution_id} was asked to stop but is still running after "
                    f"{self.stop_wait_seconds:g}s; it will end CANCELED when its worker stops it."
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.1)
