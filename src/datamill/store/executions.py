"""Executions: creating, reading and stopping runs (the worker's side is in queue.py)."""

from __future__ import annotations

from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from datamill.domain.records import Execution
from datamill.domain.status import ACTIVE_STATUSES, TERMINAL_STATUSES, JobStatus, TriggerType
from datamill.errors import NotFound
from datamill.store import tables as t
from datamill.store.db import utcnow
from datamill.store.plans import lock_downstream, settle_dependents

E = t.executions
WAKEUP_CHANNEL = "datamill_queue"


def execution_from_row(row: Any) -> Execution:
    """Build an Execution from an executions row."""
    return Execution(
        id=row.id,
        job_configuration_id=row.job_configuration_id,
        file_id=row.file_id,
        status=JobStatus(row.status),
        trigger_type=TriggerType(row.trigger_type),
        triggered_by=row.triggered_by,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        progress=row.progress,
        success_count=row.success_count,
        failure_count=row.failure_count,
        counters=dict(row.counters or {}),
        error_message=row.error_message,
        worker_id=row.worker_id,
        heartbeat_at=row.heartbeat_at,
        variables=dict(row.variables or {}),
        stop_requested=bool(row.stop_requested),
        attempts=row.attempts,
    )


class ConfigurationKey(Protocol):
    """What an execution needs of its configuration: both ids."""

    @property
    def id(self) -> int:
        """The configuration id."""
        ...

    @property
    def file_id(self) -> int:
        """The id of the job file."""
        ...


def create_execution(
    conn: Connection,
    config: ConfigurationKey,
    trigger_type: TriggerType,
    user: str,
    *,
    variables: dict[str, Any] | None = None,
    status: JobStatus = JobStatus.QUEUED,
) -> int:
    """Insert a new execution and return its id."""
    result = conn.execute(
        sa.insert(E)
        .values(
            job_configuration_id=config.id,
            file_id=config.file_id,
            status=status.value,
            trigger_type=trigger_type.value,
            triggered_by=user,
            created_at=utcnow(),
            success_count=0,
            failure_count=0,
            counters={},
            variables=variables or {},
            stop_requested=False,
            bytes_read=0,
            attempts=0,
        )
        .returning(E.c.id)
    )
    return int(result.scalar_one())


def notify_other_nodes(conn: Connection, payload: str) -> None:
    """Wake workers on other nodes (PostgreSQL NOTIFY, delivered on commit)."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_notify(:c, :p)"), {"c": WAKEUP_CHANNEL, "p": payload})


def get_execution(conn: Connection, execution_id: int) -> Execution:
    """The execution with this id, or NotFound."""
    row = conn.execute(sa.select(E).where(E.c.id == execution_id)).first()
    if row is None:
        raise NotFound(f"Entity of type 'JobExecution' with id '{execution_id}' not found.")
    return execution_from_row(row)


def newest_execution(conn: Connection, config_id: int) -> Execution | None:
    """The most recently created execution of a configuration."""
    row = conn.execute(
        sa.select(E).where(E.c.job_configuration_id == config_id).order_by(E.c.id.desc()).limit(1)
    ).first()
    return execution_from_row(row) if row is not None else None


def execution_history(
    conn: Connection, config_id: int, start: int, length: int
) -> list[tuple[int, JobStatus]]:
    """(id, status) of a configuration's executions, newest first, one page."""
    rows = conn.execute(
        sa.select(E.c.id, E.c.status)
        .where(E.c.job_configuration_id == config_id)
        .order_by(E.c.id.desc())
        .offset(start)
        .limit(length)
    ).all()
    return [(r.id, JobStatus(r.status)) for r in rows]


def active_executions(conn: Connection) -> list[Execution]:
    """Every QUEUED, WAITING_FOR_OTHER_JOB or RUNNING execution, oldest first."""
    rows = conn.execute(
        sa.select(E).where(E.c.status.in_([s.value for s in ACTIVE_STATUSES])).order_by(E.c.id)
    ).all()
    return [execution_from_row(r) for r in rows]


def active_execution_for_config(conn: Connection, config_id: int) -> Execution | None:
    """The newest active execution of a configuration: the one a stop acts on."""
    row = conn.execute(
        sa.select(E)
        .where(
            E.c.job_configuration_id == config_id,
            E.c.status.in_([s.value for s in ACTIVE_STATUSES]),
        )
        .order_by(
            # A running execution is the one the user sees and wants stopped first.
            sa.case((E.c.status == JobStatus.RUNNING.value, 0), else_=1),
            E.c.id.desc(),
        )
        .limit(1)
    ).first()
    return execution_from_row(row) if row is not None else None


def request_stop(conn: Connection, execution_id: int) -> JobStatus:
    """Cancel a waiting execution now, or flag a running one for its worker to stop.

    Returns the status after the request. The status checks in the WHERE
    clauses make this safe against a worker finishing the run concurrently.
    """
    now = utcnow()
    lock_downstream(conn, execution_id)
    canceled = conn.execute(
        sa.update(E)
        .where(
            E.c.id == execution_id,
            E.c.status.in_([JobStatus.QUEUED.value, JobStatus.WAITING_FOR_OTHER_JOB.value]),
        )
        .values(
            status=JobStatus.CANCELED.value,
            finished_at=now,
            stop_requested=True,
            error_message="Canceled before it started.",
        )
    )
    if canceled.rowcount:
        settle_dependents(conn, execution_id, JobStatus.CANCELED)
        return JobStatus.CANCELED
    conn.execute(
        sa.update(E)
        .where(E.c.id == execution_id, E.c.status == JobStatus.RUNNING.value)
        .values(stop_requested=True)
    )
    return get_execution(conn, execution_id).status


def mean_run_seconds(conn: Connection, config_id: int, last: int = 5) -> float | None:
    """Mean duration of the newest successful runs, for estimating remaining time."""
    rows = conn.execute(
        sa.select(E.c.started_at, E.c.finished_at)
        .where(
            E.c.job_configuration_id == config_id,
            E.c.status.in_([JobStatus.COMPLETED.value, JobStatus.COMPLETED_WITH_WARNINGS.value]),
            E.c.started_at.is_not(None),
        )
        .order_by(E.c.id.desc())
        .limit(last)
    ).all()
    durations = [(r.finished_at - r.started_at).total_seconds() for r in rows if r.finished_at]
    return sum(durations) / len(durations) if durations else None


def volume_report(conn: Connection, config_id: int) -> list[tuple[int, JobStatus, int]]:
    """(id, status, bytes read) of a configuration's ended executions, newest first."""
    rows = conn.execute(
        sa.select(E.c.id, E.c.status, E.c.bytes_read)
        .where(
            E.c.job_configuration_id == config_id,
            E.c.status.in_([s.value for s in TERMINAL_STATUSES]),
        )
        .order_by(E.c.id.desc())
    ).all()
    return [(r.id, JobStatus(r.status), int(r.bytes_read)) for r in rows]
