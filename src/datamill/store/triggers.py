"""Executions that Datamill creates by itself: data-driven runs and schedules."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from datamill.domain.schedule import cron_problem
from datamill.domain.status import ACTIVE_STATUSES, JobStatus, TriggerType
from datamill.store import precompiled
from datamill.store import tables as t
from datamill.store.executions import create_execution
from datamill.store.plans import add_dependencies, lock_configurations

C = t.job_configurations
E = t.executions
DEPS = t.job_dependencies

log = logging.getLogger(__name__)


def replace_dependencies(conn: Connection, edges: dict[int, list[int]]) -> None:
    """Store the whole dependency graph: configuration -> configurations it reads."""
    conn.execute(sa.delete(DEPS))
    rows = [
        {"job_configuration_id": config_id, "upstream_configuration_id": upstream}
        for config_id, upstreams in edges.items()
        for upstream in sorted(set(upstreams))
    ]
    if rows:
        conn.execute(sa.insert(DEPS), rows)


def _already_waiting(conn: Connection, config_id: int, trigger: TriggerType) -> bool:
    # A run of the same kind that has not started yet will read the newest
    # data anyway, so a second one would only repeat it.
    return (
        conn.execute(
            sa.select(E.c.id)
            .where(
                E.c.job_configuration_id == config_id,
                E.c.status.in_([JobStatus.QUEUED.value, JobStatus.WAITING_FOR_OTHER_JOB.value]),
                E.c.trigger_type == trigger.value,
            )
            .limit(1)
        ).first()
        is not None
    )


# fire_data_driven's first look, built once: it runs after every successful
# run, and building and caching the statement cost more than running it.
_DATA_DRIVEN_READERS = (
    sa.select(C.c.id, C.c.file_id, t.files.c.owner)
    .join(DEPS, DEPS.c.job_configuration_id == C.c.id)
    .join(t.files, t.files.c.id == C.c.file_id)
    .where(DEPS.c.upstream_configuration_id == sa.bindparam("upstream_config", type_=sa.Integer))
    .where(C.c.trigger_mode == "DATA_DRIVEN")
    .where(
        C.c.id.not_in(
            sa.select(E.c.job_configuration_id)
            .join(t.execution_dependencies, t.execution_dependencies.c.execution_id == E.c.id)
            .where(
                t.execution_dependencies.c.upstream_execution_id
                == sa.bindparam("ended", type_=sa.Integer)
            )
        )
    )
    .order_by(C.c.id)
)


def _may_read(user: Any, entry: sa.FromClause) -> sa.ColumnElement[bool]:
    """SQL for `services.permissions.has_access(user, entry, READ)`, for many rows at once.

    The store cannot call the services layer, and this is the hot path after
    every run, so the rule is written once more as one predicate.
    """
    # correlate_except: `user` may be a column of the enclosing query (files.owner).
    groups = (
        sa.select(t.user_groups.c.group_name)
        .where(t.user_groups.c.user_name == user)
        .correlate_except(t.user_groups)
    )
    return sa.or_(
        entry.c.owner == user,
        entry.c.others_readable.is_(True),
        sa.select(t.user_roles.c.user_name)
        .where(t.user_roles.c.user_name == user, t.user_roles.c.role_name == "ADMIN")
        .correlate_except(t.user_roles)
        .exists(),
        sa.select(t.file_group_permissions.c.file_id)
        .where(
            t.file_group_permissions.c.file_id == entry.c.id,
            t.file_group_permissions.c.readable.is_(True),
            t.file_group_permissions.c.group_name.in_(groups),
        )
        .correlate_except(t.file_group_permissions)
        .exists(),
    )


def _may_read_configuration(user: Any, config_id: Any) -> sa.ColumnElement[bool]:
    """Whether `user` may read the file of the configuration `config_id` (correlated SQL)."""
    up_config = C.alias("up_config")
    up_file = t.files.alias("up_file")
    return (
        sa.select(up_config.c.id)
        .join(up_file, up_file.c.id == up_config.c.file_id)
        .where(up_config.c.id == config_id, _may_read(user, up_file))
        .exists()
    )


def _active_upstream_runs(conn: Connection, config_id: int, owner: str) -> list[int]:
    """Unfinished executions of the jobs a configuration reads from and its owner may read.

    A run never waits on a job its owner cannot read: the wait would show when
    that job runs (A6).
    """
    upstream = sa.select(DEPS.c.upstream_configuration_id).where(
        DEPS.c.job_configuration_id == config_id,
        _may_read_configuration(owner, DEPS.c.upstream_configuration_id),
    )
    rows = conn.execute(
        sa.select(E.c.id).where(
            E.c.job_configuration_id.in_(upstream),
            E.c.status.in_([s.value for s in ACTIVE_STATUSES]),
        )
    ).all()
    return [r.id for r in rows]


def fire_data_driven(
    conn: Connection, upstream_config_id: int, ended_execution_id: int | None = None
) -> list[int]:
    """Start each DATA_DRIVEN workbook that reads a configuration that just succeeded.

    Workbooks whose runs wait on `ended_execution_id` in a sequential plan are
    released by that plan instead; the others (left out of the plan because its
    caller may not run them) fire here, as for any other run.

    The run belongs to the workbook's owner. If other sources of the workbook
    are still being refreshed, the run waits for them (WAITING_FOR_OTHER_JOB)
    and is released when they succeed; a workbook that already has a
    data-driven run waiting is not queued again. So several sources changing
    together make one run. Returns the runs that may start now.
    """
    rows = precompiled.run(
        conn,
        _DATA_DRIVEN_READERS,
        {"upstream_config": upstream_config_id, "ended": ended_execution_id or -1},
    ).all()
    if rows:
        # Only where the workbook's owner may read the job that ran (A6): else
        # its firing would show when that job runs, and its run could only fail.
        # A second query, so a job nothing reads (the common case) pays nothing.
        readable = set(
            conn.execute(
                sa.select(C.c.id)
                .join(t.files, t.files.c.id == C.c.file_id)
                .where(C.c.id.in_([row.id for row in rows]))
                .where(_may_read_configuration(t.files.c.owner, upstream_config_id))
            ).scalars()
        )
        rows = [row for row in rows if row.id in readable]
    lock_configurations(conn, [row.id for row in rows])
    startable = []
    for row in rows:
        if _already_waiting(conn, row.id, TriggerType.DATA_DRIVEN):
            continue
        waits_on = _active_upstream_runs(conn, row.id, row.owner)
        status = JobStatus.WAITING_FOR_OTHER_JOB if waits_on else JobStatus.QUEUED
        created = create_execution(conn, row, TriggerType.DATA_DRIVEN, row.owner, status=status)
        add_dependencies(conn, [(created, upstream) for upstream in waits_on])
        if not waits_on:
            startable.append(created)
    return startable


def fire_due_schedules(
    conn: Connection,
    now: dt.datetime,
    next_after: Callable[[str, dt.datetime], dt.datetime | None],
) -> list[int]:
    """Queue every SCHEDULED job whose slot has come; returns the new execution ids.

    However many slots passed while nothing ran (downtime), a job runs once
    and its next slot is counted from now. On PostgreSQL the rows are locked
    with SKIP LOCKED, so two schedulers never fire the same slot.

    Each schedule fails alone: one whose cron has no next slot fires this
    once and is then disabled (no next slot; `schedule_state` says why), and
    one that raises is logged, rolled back to its savepoint and skipped, so
    it can never stop the other schedules or the rest of the heartbeat.
    """
    query = (
        sa.select(C.c.id, C.c.file_id, C.c.cron, t.files.c.owner)
        .join(t.files, t.files.c.id == C.c.file_id)
        .where(C.c.trigger_mode == "SCHEDULED", C.c.next_fire_at <= now)
        .order_by(C.c.next_fire_at)
    )
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True, of=C)
    created = []
    for row in conn.execute(query).all():
        try:
            with conn.begin_nested():
                fired = _fire_one(conn, row, now, next_after)
        except Exception:
            log.exception("schedule of configuration %d failed; skipped this time", row.id)
            continue
        if fired is not None:
            created.append(fired)
    return created


def _fire_one(
    conn: Connection,
    row: Any,
    now: dt.datetime,
    next_after: Callable[[str, dt.datetime], dt.datetime | None],
) -> int | None:
    fired = None
    if not _already_waiting(conn, row.id, TriggerType.SCHEDULER):
        fired = create_execution(conn, row, TriggerType.SCHEDULER, row.owner)
    following = next_after(row.cron or "", now)
    if following is None:
        log.warning("schedule of configuration %d disabled: %r has no next date", row.id, row.cron)
    conn.execute(sa.update(C).where(C.c.id == row.id).values(next_fire_at=following))
    return fired


@dataclasses.dataclass(frozen=True, slots=True)
class ScheduleState:
    """How a configuration runs by itself, and when it runs next."""

    mode: str
    cron: str | None
    next_fire_at: dt.datetime | None

    @property
    def disabled_reason(self) -> str | None:
        """Why a SCHEDULED job no longer fires, or None when it does (or is not SCHEDULED)."""
        if self.mode != "SCHEDULED" or self.next_fire_at is not None:
            return None
        cron = self.cron or ""
        problem = cron_problem(cron)
        return "the schedule is disabled: " + (problem or f"{cron!r} has no further date")


def schedule_state(conn: Connection, config_id: int) -> ScheduleState:
    """The schedule of one configuration."""
    row = conn.execute(
        sa.select(C.c.trigger_mode, C.c.cron, C.c.next_fire_at).where(C.c.id == config_id)
    ).one()
    return ScheduleState(row.trigger_mode, row.cron, row.next_fire_at)


def set_next_fire(conn: Connection, config_id: int, when: dt.datetime | None) -> None:
    """Set (or clear) when a configuration fires next."""
    conn.execute(sa.update(C).where(C.c.id == config_id).values(next_fire_at=when))
