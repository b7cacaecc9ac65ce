"""Starting runs again: which lost or passingly failed runs their job's policy lets retry.

A retried run keeps its execution id (clients poll one id): it goes back to
QUEUED with `retry_at`, the end of its job's retryDelay, which the claim
honours (store/queue.py). Only the crash and failure paths come here; a run
that never failed costs nothing more (docs/decisions.md, "Crashed runs finish anyway").
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from datamill.domain import runlog as rl
from datamill.domain.retry import RetryPolicy, attempts_text, policy_of
from datamill.domain.status import JobKind, JobStatus
from datamill.store import tables as t
from datamill.store.runlog import append

E = t.executions
C = t.job_configurations


@dataclasses.dataclass(frozen=True, slots=True)
class Verdict:
    """Whether one failed attempt of a run is retried, and if not, the reason to end with."""

    execution_id: int
    retry: bool
    policy: RetryPolicy
    attempts: int
    # The run's final error message when it is not retried.
    message: str


def lost_verdicts(
    conn: Connection, execution_ids: Sequence[int], default: RetryPolicy, lost_message: str
) -> list[Verdict]:
    """For runs whose worker was lost: retry each, or end it ERROR with `lost_message` and why."""
    if not execution_ids:
        return []
    rows = conn.execute(
        sa.select(
            E.c.id,
            E.c.attempts,
            E.c.stop_requested,
            E.c.started_at,
            C.c.kind,
            C.c.definition,
            C.c.updated_at,
        )
        .join(C, C.c.id == E.c.job_configuration_id)
        .where(E.c.id.in_(list(execution_ids)))
    ).all()
    verdicts = []
    for row in rows:
        policy = policy_of(dict(row.definition or {}), default)
        why_not = _why_not_retried(row, policy)
        verdicts.append(
            Verdict(
                row.id,
                why_not is None,
                policy,
                row.attempts,
                lost_message + (f"; {why_not}" if why_not else ""),
            )
        )
    # A run whose configuration cannot be read ends as before retries: never left RUNNING.
    found = {v.execution_id for v in verdicts}
    verdicts += [
        Verdict(i, False, default, 0, lost_message) for i in execution_ids if i not in found
    ]
    return verdicts


def _why_not_retried(row: Any, policy: RetryPolicy) -> str | None:
    """Why a lost run is not started again ('' when its job allows no retries); None when it is."""
    if row.stop_requested:
        return "not retried: a stop was asked for"
    if not policy.allows_another(row.attempts):
        return _exhausted(row.attempts, policy)
    return _unsure_sink_write(row)


def _exhausted(attempts: int, policy: RetryPolicy) -> str:
    """How a run out of retries says so; '' for a job that allows none (the message of old)."""
    if not policy.retries:
        return ""
    return f"given up {attempts_text(attempts)} (the job allows {policy.retries} retries)"


def _unsure_sink_write(row: Any) -> str | None:
    """Why Datamill cannot tell whether a lost export committed to its database, if it cannot.

    A database sink writes a marker row in its own transaction (engine/sinks.py),
    unless the job turned that off: then a lost attempt may or may not have
    committed, and a retry could write the rows twice.
    """
    if row.kind != JobKind.EXPORT.value:
        return None
    sink = (row.definition or {}).get("sink")
    if not isinstance(sink, dict) or sink.get("kind") != "database":
        return None
    table = sink.get("table", "?")
    if sink.get("marker") is False:
        return (
            f"not retried: it may have written to database table {table} and, without a"
            " marker (sink.marker is false), Datamill cannot tell whether that write committed"
        )
    if row.started_at is not None and row.updated_at > row.started_at:
        return (
            f"not retried: it may have written to database table {table}, and the job was"
            " saved again since the attempt started, so Datamill cannot tell how it wrote"
        )
    return None


def is_retried(conn: Connection, execution_id: int, default: RetryPolicy, message: str) -> Verdict:
    """For a run that failed passingly: whether its job's policy lets it run again."""
    row = conn.execute(
        sa.select(E.c.attempts, E.c.stop_requested, C.c.definition)
        .join(C, C.c.id == E.c.job_configuration_id)
        .where(E.c.id == execution_id)
    ).one()
    policy = policy_of(dict(row.definition or {}), default)
    if row.stop_requested:
        return Verdict(execution_id, False, policy, row.attempts, message)
    if not policy.allows_another(row.attempts):
        exhausted = _exhausted(row.attempts, policy)
        final = f"{message} ({exhausted})" if exhausted else message
        return Verdict(execution_id, False, policy, row.attempts, final)
    return Verdict(execution_id, True, policy, row.attempts, message)


def requeue(
    conn: Connection,
    verdict: Verdict,
    reason: str,
    now: dt.datetime,
    *,
    worker_id: str | None = None,
    events: Sequence[rl.PendingEvent] = (),
) -> bool:
    """Put a RUNNING run back to QUEUED until its retry delay has passed; log why.

    `worker_id`, when given, must still hold the run (a worker retrying its own
    failure). The next claim resolves and records its inputs afresh.
    """
    holds = [E.c.id == verdict.execution_id, E.c.status == JobStatus.RUNNING.value]
    if worker_id is not None:
        holds.append(E.c.worker_id == worker_id)
    retry_at = now + dt.timedelta(seconds=verdict.policy.delay_seconds)
    moved = conn.execute(
        sa.update(E)
        .where(*holds)
        .values(
            status=JobStatus.QUEUED.value,
            started_at=None,
            worker_id=None,
            heartbeat_at=None,
            progress=None,
            retry_at=retry_at,
        )
    ).rowcount
    if not moved:
        return False
    conn.execute(
        sa.delete(t.execution_inputs).where(
            t.execution_inputs.c.execution_id == verdict.execution_id
        )
    )
    scheduled = rl.pending(
        rl.RETRY_SCHEDULED,
        attempt=verdict.attempts,
        retries=verdict.policy.retries,
        delay=verdict.policy.delay_seconds,
        reason=reason,
    )
    append(conn, verdict.execution_id, [*events, scheduled])
    return True
