"""Immutable records read from the store."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from datamill.domain.status import JobKind, JobStatus, TriggerType


@dataclasses.dataclass(frozen=True, slots=True)
class FileEntry:
    """An entry of the virtual file tree: a folder or a job file."""

    id: int
    uuid: str
    path: str
    name: str
    parent_id: int | None
    is_folder: bool
    owner: str
    kind: JobKind | None
    created_at: dt.datetime
    # 'location' or 'connection' for those entries (kind is None then), else None.
    resource: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class JobConfiguration:
    """The runnable configuration that belongs to one job file."""

    id: int
    file_id: int
    kind: JobKind
    name: str
    definition: dict[str, Any]
    trigger_mode: str
    updated_at: dt.datetime


@dataclasses.dataclass(frozen=True, slots=True)
class Execution:
    """One run of a job configuration."""

    id: int
    job_configuration_id: int
    file_id: int
    status: JobStatus
    trigger_type: TriggerType
    triggered_by: str
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    progress: float | None
    success_count: int
    failure_count: int
    counters: dict[str, int]
    error_message: str | None
    worker_id: str | None
    heartbeat_at: dt.datetime | None
    variables: dict[str, Any]
    stop_requested: bool
    attempts: int


@dataclasses.dataclass(frozen=True, slots=True)
class DataResult:
    """One stored result of a successful run."""

    id: int
    job_configuration_id: int
    execution_id: int
    created_at: dt.datetime
    record_count: int
    sheets: dict[str, int]
    location: str
    deleted: bool


NO_PASSWORD = ""
"""The stored password hash of a user created without a password."""


@dataclasses.dataclass(frozen=True, slots=True)
class User:
    """A person or script that calls the API."""

    name: str
    password_hash: str  # NO_PASSWORD until one is set: such a user cannot log in
    roles: tuple[str, ...]
    groups: tuple[str, ...]
    email: str | None
    session_epoch: int = 0  # raised by a logout, voiding older session cookies

    @property
    def has_password(self) -> bool:
        """Whether a password was ever set; without one nobody can log in as this user."""
        return self.password_hash != NO_PASSWORD

    @property
    def is_admin(self) -> bool:
        """ADMIN sees and may do everything."""
        return "ADMIN" in self.roles
