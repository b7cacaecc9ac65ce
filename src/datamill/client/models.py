"""Typed views of the wire answers (shared/spec/job-api.md); each keeps the raw JSON too.

Members the server adds later are kept in `raw`, so a newer server never
breaks an older client.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from datamill.domain.status import JobKind, JobStatus

# Datameer's time format (spec §1): "Sep 28, 2018 6:44:56 PM", server-local time.
DATAMEER_TIME = "%b %d, %Y %I:%M:%S %p"
# The older /rest routes spell the warning status as Datameer's v1 API did (spec §5).
_V1_SPELLINGS = {"COMPLETED_WITH_Warnings": JobStatus.COMPLETED_WITH_WARNINGS}
# The route prefix of each kind's definitions (spec §6).
KIND_ROUTES = {
    JobKind.IMPORT: "import-job",
    JobKind.WORKBOOK: "workbook",
    JobKind.EXPORT: "export-job",
}


def job_status(value: Any) -> JobStatus | None:
    """A wire status as JobStatus; None for `_NONE` (never ran) or a missing one."""
    if value is None or value == "_NONE":
        return None
    return _V1_SPELLINGS.get(value) or JobStatus(value)


def datameer_time(value: Any) -> dt.datetime | None:
    """A Datameer time string as a naive datetime (server-local), or None."""
    if not isinstance(value, str) or not value:
        return None
    return dt.datetime.strptime(value, DATAMEER_TIME)


def _int(value: Any) -> int | None:
    return int(value) if value is not None else None


@dataclasses.dataclass(frozen=True)
class Status:
    """The newest execution of a job file (spec §4.1); `status` is None if it never ran."""

    status: JobStatus | None
    file_id: int | None
    execution_id: int | None
    start_time: dt.datetime | None
    stop_time: dt.datetime | None
    progress: int | None
    estimate: str | None
    raw: dict[str, Any]

    @classmethod
    def from_wire(cls, body: dict[str, Any]) -> Status:
        """Read a status answer."""
        progress = body.get("job-progress")
        return cls(
            status=job_status(body.get("job-status")),
            file_id=_int(body.get("file-id")),
            execution_id=_int(body.get("job-execution-id")),
            start_time=datameer_time(body.get("start-time")),
            stop_time=datameer_time(body.get("stop-time")),
            progress=int(progress) if progress not in (None, "") else None,
            estimate=body.get("estimate-time"),
            raw=body,
        )


@dataclasses.dataclass(frozen=True)
class Triggered:
    """A new execution (spec §4.5)."""

    execution_id: int
    user: str | None
    trigger_type: str | None
    raw: dict[str, Any]

    @classmethod
    def from_wire(cls, body: dict[str, Any]) -> Triggered:
        """Read a trigger answer."""
        return cls(
            execution_id=int(body["job-execution-id"]),
            user=body.get("job-execution-user"),
            trigger_type=body.get("job-execution-trigger"),
            raw=body,
        )


@dataclasses.dataclass(frozen=True)
class PlanMember:
    """One member of a sequential plan (spec §4.6); `execution_id` None if not run."""

    name: str
    configuration_id: int
    execution_id: int | None
    reason: str | None
    raw: dict[str, Any]

    @classmethod
    def from_wire(cls, body: dict[str, Any]) -> PlanMember:
        """Read one `execution-plan` element."""
        return cls(
            name=str(body.get("job-configuration-name")),
            configuration_id=int(body["job-configuration-id"]),
            execution_id=_int(body.get("job-execution-id")) if body.get("trigger") else None,
            reason=body.get("reason"),
            raw=body,
        )


@dataclasses.dataclass(frozen=True)
class Details:
    """One execution (spec §4.3), with Datamill's `failure` and `warnings` when served."""

    execution_id: int
    status: JobStatus
    configuration_id: int
    file_id: int
    file_uuid: str
    start_time: dt.datetime | None
    stop_time: dt.datetime | None
    success_count: int
    failure_count: int
    counters: dict[str, int]
    raw: dict[str, Any]

    @classmethod
    def from_wire(cls, execution_id: int, body: dict[str, Any]) -> Details:
        """Read a job-details answer."""
        status = job_status(body["jobStatus"])
        assert status is not None  # an execution always has a status
        file = body.get("file") or {}
        return cls(
            execution_id=execution_id,
            status=status,
            configuration_id=int(body["jobConfigurationId"]),
            file_id=int(file["id"]),
            file_uuid=str(file.get("uuid")),
            start_time=datameer_time(body.get("startTime")),
            stop_time=datameer_time(body.get("stopTime")),
            success_count=int(body.get("successCount") or 0),
            failure_count=int(body.get("failureCount") or 0),
            counters=dict(body.get("counters") or {}),
            raw=body,
        )

    @property
    def failure_reason(self) -> str | None:
        """Why the run failed or was stopped, if the server says (job details' `failure`)."""
        failure = self.raw.get("failure")
        if isinstance(failure, dict):
            message = failure.get("message")
            return str(message) if message is not None else None
        return None

    @property
    def warnings(self) -> list[dict[str, Any]]:
        """Why records were dropped, one item per reason (job details' `warnings`)."""
        warnings = self.raw.get("warnings")
        return list(warnings) if isinstance(warnings, list) else []


@dataclasses.dataclass(frozen=True)
class HistoryItem:
    """One execution in a job's history (spec §4.2)."""

    execution_id: int
    status: JobStatus

    @classmethod
    def from_wire(cls, body: dict[str, Any]) -> HistoryItem:
        """Read one history element."""
        status = job_status(body["jobStatus"])
        assert status is not None
        return cls(execution_id=int(body["id"]), status=status)


@dataclasses.dataclass(frozen=True)
class RunningJob:
    """One active execution (spec §4.4); times in epoch milliseconds."""

    execution_id: int
    status: JobStatus
    file_id: int
    name: str
    configuration_id: int
    created_ms: int | None
    started_ms: int | None
    remaining_ms: int
    raw: dict[str, Any]

    @classmethod
    def from_wire(cls, body: dict[str, Any]) -> RunningJob:
        """Read one list-running element."""
        status = job_status(body["jobStatus"])
        assert status is not None
        return cls(
            execution_id=int(body["jobExecutionId"]),
            status=status,
            file_id=int(body["fileId"]),
            name=str(body.get("jobName")),
            configuration_id=int(body["dapJobConfigurationId"]),
            created_ms=_int(body.get("creationDate")),
            started_ms=_int(body.get("startTime")),
            remaining_ms=int(body.get("estimatedTime") or 0),
            raw=body,
        )


@dataclasses.dataclass(frozen=True)
class Entry:
    """A folder or job file of the file tree (`/api/filesystem`)."""

    id: int
    uuid: str
    name: str
    path: str
    type: str
    owner: str | None
    configuration_id: int | None
    raw: dict[str, Any]

    @classmethod
    def from_wire(cls, body: dict[str, Any]) -> Entry:
        """Read a folder or file element."""
        return cls(
            id=int(body["id"]),
            uuid=str(body.get("uuid")),
            name=str(body.get("name")),
            path=str(body.get("path")),
            type=str(body.get("type")),
            owner=body.get("owner"),
            configuration_id=_int(body.get("jobConfigurationId")),
            raw=body,
        )

    @property
    def is_folder(self) -> bool:
        """True for a folder."""
        return self.type == "folder"

    @property
    def kind(self) -> JobKind | None:
        """The job kind of a job file, else None."""
        try:
            return JobKind(self.type)
        except ValueError:
            return None


@dataclasses.dataclass(frozen=True)
class Folder:
    """A folder and the children the caller may read."""

    entry: Entry
    folders: list[Entry]
    files: list[Entry]

    @classmethod
    def from_wire(cls, body: dict[str, Any]) -> Folder:
        """Read a folder answer with its `_embedded` children."""
        embedded = body.get("_embedded") or {}
        return cls(
            entry=Entry.from_wire(body),
            folders=[Entry.from_wire(f) for f in embedded.get("folders", [])],
            files=[Entry.from_wire(f) for f in embedded.get("files", [])],
        )


@dataclasses.dataclass(frozen=True)
class Page:
    """One page of a user-management list."""

    max_results: int
    total: int
    elements: list[dict[str, Any]]

    @classmethod
    def from_wire(cls, body: dict[str, Any]) -> Page:
        """Read `{"maxResults", "total", "elements"}`."""
        return cls(int(body["maxResults"]), int(body["total"]), list(body["elements"]))
