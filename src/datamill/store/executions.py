"""Executions: creating, reading and stopping runs (the worker's side is in queue.py)."""

from __future__ import annotations

import datetime as dt
import functools
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from datamill.domain import runlog as rl
from datamill.domain.records import Execution
from datamill.domain.status import ACTIVE_STATUSES, TERMINAL_STATUSES, JobStatus, TriggerType
from datamill.errors import NotFound
from datamill.store import precompiled
from datamill.store import tables as t
from datamill.store.db import utcnow
from datamill.store.plans import lock_downstream, settle_dependents
from datamill.store.runlog import append

E = t.executions
G = t.execution_gaps
C = t.job_configurations
WAKEUP_CHANNEL = "datamill_queue"
# No configuration has this many runs (run numbers are 32-bit): any page
# starting further back is empty, and the arithmetic below stays in range.
MAX_START = 2**40


# The columns an Execution record is built from: retry_at is the queue's own
# (a run's next attempt), so a trigger neither returns it nor needs it.
RECORD_COLUMNS = tuple(c for c in E.c if c.name != "retry_at")


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
    """Insert a new execution and return its id.

    Its run number is the configuration's next one. On PostgreSQL the
    configuration row is locked (FOR NO KEY UPDATE, which does not block
    foreign-key checks) until commit, so concurrent triggers of one job take
    turns, and their run numbers follow their ids; SQLite's BEGIN IMMEDIATE
    already serialises writers. The unique index refuses duplicates anyway.
    """
    result = _insert_execution(
        conn, config, trigger_type, user, variables, status, _INSERT_RETURNING_ID
    )
    return int(result.scalar_one())


def queue_execution(
    conn: Connection,
    config: ConfigurationKey,
    trigger_type: TriggerType,
    user: str,
    *,
    variables: dict[str, Any] | None = None,
) -> Execution:
    """Insert a new QUEUED execution as create_execution does; the execution as stored.

    One statement where create_execution and get_execution took two: a
    trigger holds the SQLite write lock for less time.
    """
    result = _insert_execution(
        conn, config, trigger_type, user, variables, JobStatus.QUEUED, _INSERT_RETURNING_RECORD
    )
    return execution_from_row(result.one())


def _insert_execution(
    conn: Connection,
    config: ConfigurationKey,
    trigger_type: TriggerType,
    user: str,
    variables: dict[str, Any] | None,
    status: JobStatus,
    statement: sa.Insert,
) -> precompiled.Ran:
    if conn.dialect.name == "postgresql":
        precompiled.run(conn, _LOCK_CONFIGURATION, {"config_id": config.id})
    return precompiled.run(
        conn,
        statement,
        {
            "run_of": config.id,
            "new_file_id": config.file_id,
            "new_status": status.value,
            "new_trigger_type": trigger_type.value,
            "new_triggered_by": user,
            "new_created_at": utcnow(),
            "new_variables": variables or {},
        },
    )


def _insert(returning: tuple[sa.ColumnElement[Any], ...]) -> sa.Insert:
    """The insert of a new execution; built once, as building it cost more than running it."""
    return (
        sa.insert(E)
        .values(
            job_configuration_id=sa.bindparam("run_of", type_=sa.Integer),
            run_number=_NEXT_RUN_NUMBER,
            **{
                name: sa.bindparam(f"new_{name}", type_=E.c[name].type)
                for name in (
                    "file_id",
                    "status",
                    "trigger_type",
                    "triggered_by",
                    "created_at",
                    "variables",
                )
            },
            success_count=0,
            failure_count=0,
            counters={},
            stop_requested=False,
            bytes_read=0,
            attempts=0,
        )
        .returning(*returning)
    )


def lock_configurations_for_new_runs(conn: Connection, config_ids: list[int]) -> None:
    """Before creating runs of several configurations in one transaction: lock them in id order.

    create_execution locks each configuration's row on PostgreSQL; taking the
    rows in one global order keeps two such transactions from deadlocking.
    """
    if conn.dialect.name == "postgresql" and config_ids:
        conn.execute(
            sa.select(C.c.id)
            .where(C.c.id.in_(sorted(set(config_ids))))
            .order_by(C.c.id)
            .with_for_update(key_share=True)
        ).all()


def _next_run_number(config_id: sa.ColumnElement[int]) -> sa.ColumnElement[int]:
    """1 + the highest run number the configuration ever had, deleted or not."""
    newest = _or_zero(
        sa.select(sa.func.max(E.c.run_number))
        .where(E.c.job_configuration_id == config_id)
        .scalar_subquery()
    )
    # Gaps never overlap: the one that starts highest also ends highest.
    deleted = _or_zero(
        sa.select(G.c.last_run)
        .where(G.c.job_configuration_id == config_id)
        .order_by(G.c.first_run.desc())
        .limit(1)
        .scalar_subquery()
    )
    return _greater(newest, deleted) + 1


def _or_zero(value: sa.ColumnElement[int]) -> sa.ColumnElement[int]:
    return sa.func.coalesce(value, 0)


def _greater(a: sa.ColumnElement[int], b: sa.ColumnElement[int]) -> sa.ColumnElement[int]:
    return sa.case((a >= b, a), else_=b)


# Built once: building them costs more than running them.
_NEXT_RUN_NUMBER = _next_run_number(sa.bindparam("run_of", type_=sa.Integer))
_LOCK_CONFIGURATION = (
    sa.select(C.c.id)
    .where(C.c.id == sa.bindparam("config_id", type_=sa.Integer))
    .with_for_update(key_share=True)
)
_INSERT_RETURNING_ID = _insert((E.c.id,))
# The columns an Execution is built from (not retry_at: an old schema's test runs this).
_INSERT_RETURNING_RECORD = _insert(RECORD_COLUMNS)


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


def _history_page() -> sa.Select[tuple[int, str]]:
    """The statement behind execution_history, built once (building costs more than running)."""
    config_id = sa.bindparam("config_id", type_=sa.Integer)
    mine = G.c.job_configuration_id == config_id
    newest = sa.select(sa.func.max(E.c.run_number)).where(E.c.job_configuration_id == config_id)
    deleted = (
        sa.select(G.c.last_run - G.c.kept_before)
        .where(mine)
        .order_by(G.c.first_run.desc())
        .limit(1)
    )
    offset = sa.bindparam("start", type_=sa.BigInteger)
    # OFFSET 0 keeps PostgreSQL from pulling this subquery up, which would copy
    # its two lookups into each use of r and double the planning time.
    rank = (
        sa.select(
            (
                _or_zero(newest.scalar_subquery())
                - _or_zero(deleted.scalar_subquery())
                - 1
                - offset
            ).label("r")
        )
        .offset(0)
        .subquery("page_rank")
    )
    deleted_below = (
        sa.select(G.c.last_run - G.c.kept_before)
        .where(mine, G.c.kept_before <= rank.c.r)
        .order_by(G.c.kept_before.desc())
        .limit(1)
        .scalar_subquery()
    )
    first_run = sa.select(rank.c.r + 1 + _or_zero(deleted_below)).scalar_subquery()
    return (
        sa.select(E.c.id, E.c.status)
        .where(E.c.job_configuration_id == config_id, E.c.run_number <= first_run)
        .order_by(E.c.run_number.desc())
        .limit(sa.bindparam("length", type_=sa.Integer))
    )


_HISTORY_PAGE = _history_page()


def execution_history(
    conn: Connection, config_id: int, start: int, length: int
) -> list[tuple[int, JobStatus]]:
    """(id, status) of a configuration's executions, newest first, one page.

    Exactly ORDER BY id DESC OFFSET start LIMIT length, in four index lookups
    whatever `start` and the number of executions. Run numbers 1..M were
    handed out in id order, and the newest run of a job is never deleted
    (drop_history_before keeps it), so M is the highest existing one. The
    deleted runs form the ranges in execution_gaps: with the newest gap
    [first, last], D = last - kept_before of 1..M are gone, M - D runs exist,
    and the page starts at the run of rank r = M - D - 1 - start (0 = the
    oldest). That run is r + 1 plus the runs deleted below it: with the gap
    of highest kept_before <= r, last - kept_before again. A negative rank
    (start past the end) gives a bound below run 1, so no rows. One
    statement, so PostgreSQL answers from a single snapshot.
    """
    if length <= 0 or start >= MAX_START:
        return []
    rows = conn.execute(
        _HISTORY_PAGE, {"config_id": config_id, "start": start, "length": length}
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


CANCELED_BEFORE_START = "Canceled before it started."
CANCELED_BEFORE_RETRY = "Canceled while waiting for its next attempt."


def request_stop(conn: Connection, execution_id: int, by: str | None = None) -> JobStatus:
    """Cancel a waiting execution now, or flag a running one for its worker to stop.

    Returns the status after the request. The status checks in the WHERE
    clauses make this safe against a worker finishing the run concurrently.
    `by` (who asked) goes to the run's log.
    """
    now = utcnow()
    asked = rl.pending(rl.STOP_REQUESTED, by=by)
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
            # A run whose worker died waits QUEUED for its next attempt (store/retries.py).
            error_message=sa.case(
                (E.c.attempts > 0, CANCELED_BEFORE_RETRY), else_=CANCELED_BEFORE_START
            ),
        )
        .returning(E.c.error_message)
    )
    message = canceled.scalar()
    if message is not None:
        settle_dependents(conn, execution_id, JobStatus.CANCELED)
        ended = [
            rl.pending(rl.STOPPED, message=message, by=by),
            rl.pending(rl.FINISHED, status=JobStatus.CANCELED.value),
        ]
        append(conn, execution_id, [asked, *ended])
        return JobStatus.CANCELED
    append(conn, execution_id, [asked])
    conn.execute(
        sa.update(E)
        .where(E.c.id == execution_id, E.c.status == JobStatus.RUNNING.value)
        .values(stop_requested=True)
    )
    return get_execution(conn, execution_id).status


# How many of the newest successful runs the remaining-time estimate averages.
ESTIMATE_RUNS = 5


def mean_run_seconds(conn: Connection, config_id: int, last: int = ESTIMATE_RUNS) -> float | None:
    """Mean duration of the newest successful runs, for estimating remaining time."""
    return mean_run_seconds_many(conn, [config_id], last).get(config_id)


def mean_run_seconds_many(
    conn: Connection, config_ids: list[int], last: int = ESTIMATE_RUNS
) -> dict[int, float | None]:
    """mean_run_seconds of several configurations, in one statement."""
    wanted = sorted(set(config_ids))
    if not wanted:
        return {}
    params: dict[str, Any] = {f"config_{i}": c for i, c in enumerate(wanted)} | {"last": last}
    rows = conn.execute(_newest_successes(len(wanted)), params).all()
    runs: dict[int, list[tuple[dt.datetime, dt.datetime | None]]] = {c: [] for c in wanted}
    for row in rows:
        runs[row.job_configuration_id].append((row.started_at, row.finished_at))
    return {c: mean_seconds(times) for c, times in runs.items()}


def mean_seconds(runs: list[tuple[dt.datetime, dt.datetime | None]]) -> float | None:
    """The mean duration of (started_at, finished_at) pairs that ended; None without any."""
    durations = [(end - start).total_seconds() for start, end in runs if end is not None]
    return sum(durations) / len(durations) if durations else None


@functools.lru_cache(maxsize=64)
def _newest_successes(count: int) -> sa.CompoundSelect[Any]:
    """The last successful runs of `count` configurations (bound as config_0, ...).

    Built once per count: building it costs more than running it. Each part is
    its own subquery, since SQLite allows no LIMIT inside a UNION's arms.
    """
    parts = [
        sa.select(E.c.job_configuration_id, E.c.started_at, E.c.finished_at)
        .where(
            E.c.job_configuration_id == sa.bindparam(f"config_{index}", type_=sa.Integer),
            E.c.status.in_([JobStatus.COMPLETED.value, JobStatus.COMPLETED_WITH_WARNINGS.value]),
            E.c.started_at.is_not(None),
        )
        .order_by(E.c.id.desc())
        .limit(sa.bindparam("last", type_=sa.Integer))
        .subquery()
        for index in range(count)
    ]
    return sa.union_all(*(sa.select(part) for part in parts))


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


def bytes_imported_since(conn: Connection, since: dt.datetime) -> int:
    """Bytes read by the runs that published data and ended at or after `since` (UTC)."""
    total = conn.execute(
        sa.select(sa.func.coalesce(sa.func.sum(E.c.bytes_read), 0)).where(
            E.c.status.in_([s.value for s in JobStatus if s.is_success]),
            E.c.finished_at >= since,
        )
    ).scalar_one()
    return int(total)
