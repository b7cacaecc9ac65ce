"""Sequential plans in the store: dependency edges and releasing waiting members."""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from datamill.domain.status import JobStatus
from datamill.store import precompiled
from datamill.store import tables as t
from datamill.store.db import utcnow

E = t.executions
DEP = t.execution_dependencies
LOCK_SPACE = 7373


def add_dependencies(conn: Connection, edges: list[tuple[int, int]]) -> None:
    """Record (execution, upstream execution) edges."""
    if edges:
        conn.execute(
            sa.insert(DEP), [{"execution_id": e, "upstream_execution_id": u} for e, u in edges]
        )


def lock_configurations(conn: Connection, config_ids: Iterable[int]) -> None:
    """Serialise, until commit, decisions about these configurations' waiting runs.

    Two upstream runs ending at once each see the other still running; without
    this lock (PostgreSQL) both would leave their common dependent waiting
    forever. SQLite's BEGIN IMMEDIATE already serialises every writer.
    """
    if conn.dialect.name != "postgresql":
        return
    for config_id in sorted(set(config_ids)):
        conn.execute(
            sa.text("SELECT pg_advisory_xact_lock(:space, :id)"),
            {"space": LOCK_SPACE, "id": config_id},
        )


def lock_downstream(conn: Connection, execution_id: int) -> None:
    """Lock every configuration whose waiting runs this execution's end may decide.

    Taken before the execution's status changes, so of two upstream runs
    ending together the second sees everything the first decided.
    """
    if conn.dialect.name != "postgresql":
        return
    config_id = sa.select(E.c.job_configuration_id).where(E.c.id == execution_id)
    data_driven = sa.select(t.job_dependencies.c.job_configuration_id).where(
        t.job_dependencies.c.upstream_configuration_id.in_(config_id.scalar_subquery())
    )
    planned = (
        sa.select(E.c.job_configuration_id)
        .join(DEP, DEP.c.execution_id == E.c.id)
        .where(DEP.c.upstream_execution_id == execution_id)
    )
    lock_configurations(conn, conn.execute(sa.union(data_driven, planned)).scalars().all())


_DEPENDENTS = (
    sa.select(DEP.c.execution_id, E.c.job_configuration_id)
    .join(E, E.c.id == DEP.c.execution_id)
    .where(DEP.c.upstream_execution_id == sa.bindparam("upstream"))
    .order_by(DEP.c.execution_id)
)


def settle_dependents(conn: Connection, upstream_id: int, status: JobStatus) -> list[int]:
    """React to an ended plan member; returns the executions released to QUEUED.

    When it succeeded, each waiting dependent whose upstreams have all
    succeeded becomes QUEUED. When it failed or was canceled, every waiting
    dependent, transitively, ends CANCELED with the reason in its details.
    Called in the same transaction that ends the upstream, so a crash can
    never leave a member waiting forever.
    """
    released: list[int] = []
    pending = [(upstream_id, status)]
    while pending:
        current, current_status = pending.pop()
        # Plan edges never change once made, so reading them before the lock is
        # safe; the dependents' statuses are read after it.
        edges = precompiled.run(conn, _DEPENDENTS, {"upstream": current}).all()
        if not edges:
            continue
        lock_configurations(conn, [edge.job_configuration_id for edge in edges])
        for dependent in [edge.execution_id for edge in edges]:
            if current_status.is_success:
                if _all_upstreams_succeeded(conn, dependent) and _move(
                    conn, dependent, JobStatus.QUEUED, None
                ):
                    released.append(dependent)
            else:
                reason = _cancel_reason(conn, current, current_status)
                if _move(conn, dependent, JobStatus.CANCELED, reason):
                    pending.append((dependent, JobStatus.CANCELED))
    return released


def _all_upstreams_succeeded(conn: Connection, execution_id: int) -> bool:
    statuses = (
        conn.execute(
            sa.select(E.c.status)
            .join(DEP, DEP.c.upstream_execution_id == E.c.id)
            .where(DEP.c.execution_id == execution_id)
        )
        .scalars()
        .all()
    )
    return all(JobStatus(s).is_success for s in statuses)


def _move(conn: Connection, execution_id: int, status: JobStatus, reason: str | None) -> bool:
    values: dict[str, object] = {"status": status.value}
    if status is JobStatus.CANCELED:
        values.update(finished_at=utcnow(), error_message=reason)
    return bool(
        conn.execute(
            sa.update(E)
            .where(E.c.id == execution_id, E.c.status == JobStatus.WAITING_FOR_OTHER_JOB.value)
            .values(**values)
        ).rowcount
    )


def _cancel_reason(conn: Connection, upstream_id: int, status: JobStatus) -> str:
    name = conn.execute(
        sa.select(t.files.c.path).join(E, E.c.file_id == t.files.c.id).where(E.c.id == upstream_id)
    ).scalar()
    return (
        f"Canceled without starting: {name} (execution {upstream_id}) of the same "
        f"sequential plan ended {status.value}."
    )
