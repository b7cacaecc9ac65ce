"""Job statuses, trigger types and the transitions an execution may take."""

from __future__ import annotations

import enum


class JobStatus(enum.StrEnum):
    """Status of one execution, as the wire contract spells it."""

    QUEUED = "QUEUED"
    WAITING_FOR_OTHER_JOB = "WAITING_FOR_OTHER_JOB"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    COMPLETED_WITH_WARNINGS = "COMPLETED_WITH_WARNINGS"
    ERROR = "ERROR"
    CANCELED = "CANCELED"

    @property
    def is_terminal(self) -> bool:
        """True once the execution can never change again."""
        return self in TERMINAL_STATUSES

    @property
    def is_success(self) -> bool:
        """True for the statuses that publish data and release downstream jobs."""
        return self in (JobStatus.COMPLETED, JobStatus.COMPLETED_WITH_WARNINGS)


TERMINAL_STATUSES = frozenset(
    {
        JobStatus.COMPLETED,
        JobStatus.COMPLETED_WITH_WARNINGS,
        JobStatus.ERROR,
        JobStatus.CANCELED,
    }
)
ACTIVE_STATUSES = frozenset({JobStatus.QUEUED, JobStatus.WAITING_FOR_OTHER_JOB, JobStatus.RUNNING})

# RUNNING -> QUEUED is the hand-back of a gracefully stopping worker: the run
# never published anything, so it may start over elsewhere.
ALLOWED_TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.WAITING_FOR_OTHER_JOB: frozenset({JobStatus.QUEUED, JobStatus.CANCELED}),
    JobStatus.QUEUED: frozenset({JobStatus.RUNNING, JobStatus.CANCELED, JobStatus.ERROR}),
    JobStatus.RUNNING: frozenset(
        {
            JobStatus.COMPLETED,
            JobStatus.COMPLETED_WITH_WARNINGS,
            JobStatus.ERROR,
            JobStatus.CANCELED,
            JobStatus.QUEUED,
        }
    ),
}


def can_transition(current: JobStatus, new: JobStatus) -> bool:
    """Whether an execution in `current` may move to `new`."""
    return new in ALLOWED_TRANSITIONS.get(current, frozenset())


class TriggerType(enum.StrEnum):
    """Why an execution was created."""

    RESTAPI = "RESTAPI"
    SCHEDULER = "SCHEDULER"
    DATA_DRIVEN = "DATA_DRIVEN"
    SEQUENTIAL = "SEQUENTIAL"
    USER = "USER"


class JobKind(enum.StrEnum):
    """The three runnable file kinds and their file extensions."""

    IMPORT = "import"
    WORKBOOK = "workbook"
    EXPORT = "export"

    @property
    def extension(self) -> str:
        """The file name extension of this kind."""
        return {"import": ".imp", "workbook": ".wbk", "export": ".exp"}[self.value]

    @property
    def default_folder(self) -> str:
        """Where files of this kind live by default."""
        return {
            "import": "/Data/ImportJobs",
            "workbook": "/Analytics/Workbooks",
            "export": "/Data/ExportJobs",
        }[self.value]

    @property
    def counter_prefix(self) -> str:
        """The prefix of this kind's counters in job details."""
        return {"import": "IMPORT", "workbook": "WORKBOOK", "export": "EXPORT"}[self.value]

    @property
    def counter_names(self) -> tuple[str, ...]:
        """The counters job details show for this kind (spec §4.3), in its order."""
        return COUNTER_NAMES[self]


COUNTER_NAMES: dict[JobKind, tuple[str, ...]] = {
    JobKind.IMPORT: (
        "IMPORT_RECORDS",
        "IMPORT_BYTES",
        "IMPORT_DROPPED_RECORDS",
        "IMPORT_PREVIEW_RECORDS",
        "IMPORT_OUTPUT_BYTES",
        "IMPORT_DROPPED_SPLITS",
        "IMPORT_OUTPUT_PARTITIONS",
    ),
    JobKind.EXPORT: ("EXPORT_RECORDS", "EXPORT_DROPPED_RECORDS", "EXPORT_BYTES"),
    JobKind.WORKBOOK: (
        "WORKBOOK_RECORDS",
        "WORKBOOK_DROPPED_RECORDS",
        "WORKBOOK_OUTPUT_BYTES",
        "WORKBOOK_SHEETS",
    ),
}
