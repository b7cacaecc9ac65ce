"""The worker's side of executions: claim, heartbeat, progress, publish, reconcile."""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import os
import shutil
from collections.abc import Callable
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError, OperationalError

from datamill.domain import runlog as rl
from datamill.domain.records import Execution
from datamill.domain.retry import RetryPolicy
from datamill.domain.status import JobStatus
from datamill.engine.object_publish import publish
from datamill.engine.objects import ObjectStore, discard, is_uri
from datamill.store import precompiled
from datamill.store import tables as t
from datamill.store.db import Database, utcnow
from datamill.store.executions import execution_from_row, notify_other_nodes
from datamill.store.plans import lock_downstream, settle_dependents
from datamill.store.retries import Verdict, is_retried, lost_verdicts, requeue
from datamill.store.runlog import append, append_many
from datamill.store.triggers import fire_data_driven

E = t.executions
W = t.workers

P = TypeVar("P")

WORKER_LOST = "worker lost: the process running this execution stopped answering"
# Without a policy given, lost runs end in ERROR at once (the behaviour before retries).
NO_RETRIES = RetryPolicy(retries=0, delay_seconds=0)


@dataclasses.dataclass(frozen=True, slots=True)
class Outcome:
    """How a run ended, as the worker reports it to the store."""

    status: JobStatus
    success_count: int = 0
    failure_count: int = 0
    counters: dict[str, int] = dataclasses.field(default_factory=dict)
    error_message: str | None = None
    # Kept sheet -> record count; staged under staging_dir as <sheet>.parquet.
    sheets: dict[str, int] = dataclasses.field(default_factory=dict)
    staging_dir: str | None = None
    moves: tuple[tuple[str, str], ...] = ()
    bytes_read: int = 0
    # Events of the run not yet in its log, written with the outcome.
    log: tuple[rl.PendingEvent, ...] = ()
    # A passing failure (a database refused the connection): the job's retry policy applies.
    retryable: bool = False


# The claim statements' aliases of the executions table, made once per process:
# an alias builds a proxy of each of the table's columns at first use, and
# building them anew for every queue was most of a store's construction
# (11.7 -> 2.3 ms a queue). An alias is immutable; one named "running" means
# the same in every statement it appears in.
_RUNNING = sa.alias(E, "running")
_OLDER = sa.alias(E, "older")
_HELD = sa.alias(E, "held")
_BEFORE = sa.alias(E, "before")
_AFTER = sa.alias(E, "after")


def _next_startable(*among: sa.ColumnElement[bool]) -> sa.Select[Any]:
    """The oldest QUEUED execution whose configuration has no RUNNING one, and its user."""
    running = _RUNNING
    older = _OLDER
    return (
        sa.select(E.c.id, E.c.triggered_by)
        .where(
            E.c.status == JobStatus.QUEUED.value,
            # A run waiting for its next attempt starts once its retry delay is over.
            # A test of the row found, not another query: runs never retried cost nothing.
            sa.or_(E.c.retry_at.is_(None), E.c.retry_at <= sa.bindparam("now")),
            # Cheap tests before the subqueries: a fair-share search skips most rows here.
            *among,
            ~sa.exists().where(
                running.c.job_configuration_id == E.c.job_configuration_id,
                running.c.status == JobStatus.RUNNING.value,
            ),
            # Runs of one job start in the order they were queued, even when
            # another worker holds the older one locked (SKIP LOCKED).
            ~sa.exists().where(
                older.c.job_configuration_id == E.c.job_configuration_id,
                older.c.status == JobStatus.QUEUED.value,
                older.c.id < E.c.id,
            ),
        )
        .order_by(E.c.id)
        .limit(1)
    )


def _with_share_facts(select: sa.Select[Any]) -> sa.Select[Any]:
    """Add, for the run found, whether its user holds slots and whether others wait.

    Computed for that one row only; both use the (status, triggered_by)
    index, so a user queuing alone costs two index probes, not a scan.
    """
    held = _HELD
    before = _BEFORE
    after = _AFTER
    holds = sa.exists().where(
        held.c.status == JobStatus.RUNNING.value, held.c.triggered_by == E.c.triggered_by
    )
    # "Another user" as two ranges, which an index can seek; != cannot.
    others_wait = sa.or_(
        sa.exists().where(
            before.c.status == JobStatus.QUEUED.value, before.c.triggered_by < E.c.triggered_by
        ),
        sa.exists().where(
            after.c.status == JobStatus.QUEUED.value, after.c.triggered_by > E.c.triggered_by
        ),
    )
    return select.add_columns(holds.label("holds"), others_wait.label("others_wait"))


@dataclasses.dataclass(frozen=True, slots=True)
class _Next:
    """The statements of one claim search, per backend."""

    sqlite: sa.Select[Any]
    postgres: sa.Select[Any]

    @classmethod
    def build(cls, select: sa.Select[Any]) -> _Next:
        return cls(select, select.with_for_update(skip_locked=True, of=E))


@dataclasses.dataclass(frozen=True, slots=True)
class _Claiming:
    """The statements of a claim: the searches, the per-user count, the start, the ownership."""

    next: _Next
    next_sharing: _Next
    # Slot shares: the oldest startable run of the given users, or of anyone else.
    next_among: _Next
    next_outside: _Next
    running_per_user: sa.Select[Any]
    start: sa.Update
    owned: sa.Select[Any]
    # The same test without the lock, outside any write transaction.
    still_owned: sa.Select[Any]


_USERS: sa.BindParameter[list[str]] = sa.bindparam("users", expanding=True)


def _claiming() -> _Claiming:
    """Build the claim statements (each queue does it once, in __init__).

    Once per queue, not per claim: building them (table aliases, RETURNING
    every column) cost more than running them on SQLite. Not at import
    either: a function run per queue is one mutation testing can mutate
    (mutmut switches mutants at call time, in processes forked after import;
    docs/testing.md).
    """
    return _Claiming(
        next=_Next.build(_next_startable()),
        next_sharing=_Next.build(_with_share_facts(_next_startable())),
        next_among=_Next.build(_next_startable(E.c.triggered_by.in_(_USERS))),
        next_outside=_Next.build(_next_startable(E.c.triggered_by.not_in(_USERS))),
        running_per_user=(
            sa.select(E.c.triggered_by, sa.func.count())
            .where(E.c.status == JobStatus.RUNNING.value)
            .group_by(E.c.triggered_by)
        ),
        start=(
            sa.update(E)
            .where(E.c.id == sa.bindparam("claimed_id"), E.c.status == JobStatus.QUEUED.value)
            .values(
                status=JobStatus.RUNNING.value,
                started_at=sa.bindparam("now"),
                worker_id=sa.bindparam("worker"),
                heartbeat_at=sa.bindparam("now"),
                progress=0.0,
                attempts=E.c.attempts + 1,
                retry_at=None,
            )
            .returning(*E.c)
        ),
        # Locked until the finish commits (PostgreSQL; SQLite's write
        # transactions exclude each other anyway): a reconciliation that
        # declares the worker lost meanwhile must not requeue the run between
        # this check and the end's UPDATE, which would then end a run that is
        # QUEUED again with no worker (seen under load with two workers).
        owned=_owned().with_for_update(),
        still_owned=_owned(),
    )


def _owned() -> sa.Select[Any]:
    # The attempt too: a worker declared lost comes back under the same id
    # and may claim the run's retry in another slot while a stalled slot
    # still holds the earlier attempt, which must not finish or publish it.
    return sa.select(E.c.id).where(
        E.c.id == sa.bindparam("owned_id"),
        E.c.status == JobStatus.RUNNING.value,
        E.c.worker_id == sa.bindparam("worker"),
        E.c.attempts == sa.bindparam("attempt"),
    )


def _ownership(execution: Execution, worker_id: str) -> dict[str, Any]:
    """The parameters of the ownership test: this run, this worker, this attempt."""
    return {"owned_id": execution.id, "worker": worker_id, "attempt": execution.attempts}


_END = (
    sa.update(E)
    .where(E.c.id == sa.bindparam("ended_id"))
    .values(
        {
            name: sa.bindparam(name, type_=E.c[name].type)
            for name in (
                "status",
                "finished_at",
                "progress",
                "success_count",
                "failure_count",
                "counters",
                "error_message",
                "bytes_read",
            )
        }
    )
)
_NEW_DATA = (
    sa.insert(t.data)
    .values(
        {
            name: sa.bindparam(name, type_=t.data.c[name].type)
            for name in (
                "job_configuration_id",
                "execution_id",
                "created_at",
                "record_count",
                "sheets",
            )
        }
        | {"location": "", "deleted": False}
    )
    .returning(t.data.c.id)
)
_PLACE_DATA = (
    sa.update(t.data)
    .where(t.data.c.id == sa.bindparam("data_id"))
    .values(location=sa.bindparam("location"))
)


class ExecutionQueue:
    """Atomic hand-over of executions between the store and workers."""

    def __init__(
        self, db: Database, data_root: str, *, max_running: int = 0, fair_shares: bool = True
    ) -> None:
        self._db = db
        self._data_root = data_root
        # How to reach the object store of s3a:// sinks (set from the settings at start-up).
        self.object_store: ObjectStore | None = None
        # Across all workers; 0 means only each worker's own concurrency limits.
        self._max_running = max_running
        # A free slot goes to the waiting user who holds the fewest (see _fairer).
        self._fair_shares = fair_shares
        # Execution id -> {staged path: where a failed finish attempt moved it}.
        self._moved: dict[int, dict[str, str]] = {}
        self._sql = _claiming()

    # ------------------------------------------------------------ workers

    def register_worker(self, worker_id: str, hostname: str, pid: int) -> None:
        """Announce a worker; reconciliation looks at its heartbeat."""
        now = utcnow()
        with self._db.write() as conn:
            conn.execute(
                sa.insert(W).values(
                    id=worker_id, hostname=hostname, pid=pid, started_at=now, heartbeat_at=now
                )
            )

    def unregister_worker(self, worker_id: str) -> None:
        """Forget a worker that shut down cleanly."""
        with self._db.write() as conn:
            conn.execute(sa.delete(W).where(W.c.id == worker_id))

    def heartbeat(self, worker_id: str) -> dict[int, bool]:
        """Prove the worker is alive; returns its RUNNING executions -> stop requested."""
        with self._db.write() as conn:
            # Taken once the write lock is held: a heartbeat that waited for the
            # lock must not record the time it started waiting.
            now = utcnow()
            alive = conn.execute(
                sa.update(W).where(W.c.id == worker_id).values(heartbeat_at=now)
            ).rowcount
            if not alive:
                # Declared lost by someone else; come back as the same worker.
                conn.execute(
                    sa.insert(W).values(
                        id=worker_id,
                        hostname=os.uname().nodename,
                        pid=os.getpid(),
                        started_at=now,
                        heartbeat_at=now,
                    )
                )
            conn.execute(
                sa.update(E)
                .where(E.c.worker_id == worker_id, E.c.status == JobStatus.RUNNING.value)
                .values(heartbeat_at=now)
            )
            rows = conn.execute(
                sa.select(E.c.id, E.c.stop_requested).where(
                    E.c.worker_id == worker_id, E.c.status == JobStatus.RUNNING.value
                )
            ).all()
        return {r.id: bool(r.stop_requested) for r in rows}

    # ------------------------------------------------------------ claiming

    def claim_next_execution(self, worker_id: str) -> Execution | None:
        """Move the oldest startable QUEUED execution to RUNNING for this worker.

        Startable means no other execution of the same configuration is
        RUNNING. SQLite serialises claims with BEGIN IMMEDIATE; PostgreSQL
        skips rows other workers hold, and the unique index on running
        executions turns a same-configuration race into a retry, not a double run.
        """
        claimed = self.claim_and_prepare(worker_id, lambda _conn, _execution: None)
        return claimed[0] if claimed is not None else None

    def claim_and_prepare(
        self, worker_id: str, prepare: Callable[[Connection, Execution], P]
    ) -> tuple[Execution, P] | None:
        """Claim as claim_next_execution does, and call `prepare` in the same transaction.

        One transaction instead of two per run; if `prepare` raises, the claim
        is undone with it and the execution stays QUEUED.
        """
        for _ in range(8):
            try:
                with self._db.write() as conn:
                    execution = self._claim(conn, worker_id)
                    if execution is None:
                        return None
                    return execution, prepare(conn, execution)
            except IntegrityError:
                continue
        return None

    def _claim(self, conn: Connection, worker_id: str) -> Execution | None:
        if self._max_running and not self._below_global_limit(conn):
            return None
        now = utcnow()
        at = {"now": now}
        if not self._fair_shares:
            row = precompiled.run(conn, self._statement(self._sql.next), at).first()
        else:
            row = precompiled.run(conn, self._statement(self._sql.next_sharing), at).first()
            # A user holding no slot, or nobody else waiting: the oldest run is fair.
            if row is not None and row.holds and row.others_wait:
                row = self._fairer(conn, row.triggered_by, now) or row
        if row is None:
            return None
        updated = precompiled.run(
            conn, self._sql.start, {"claimed_id": row.id, "now": now, "worker": worker_id}
        ).first()
        return execution_from_row(updated) if updated is not None else None

    def _statement(self, search: _Next) -> sa.Select[Any]:
        return search.sqlite if self._db.is_sqlite else search.postgres

    def _fairer(self, conn: Connection, user: str, now: dt.datetime) -> sa.Row[Any] | None:
        """The oldest startable run of the waiting user holding the fewest slots, if not `user`.

        Max-min fair and work-conserving: a user whose runs hold more slots
        than another waiting user's does not get the next free one, and a
        user nobody else waits beside gets every slot. Users holding no slot
        come first; the oldest run wins among equals. Runs count for the
        user who triggered them (the job's owner for schedules and
        data-driven runs).
        """
        counted = conn.execute(self._sql.running_per_user).all()
        held: dict[str, int] = {u: int(n) for u, n in counted}
        mine = held.get(user, 0)
        if mine == 0:
            return None
        found = conn.execute(
            self._statement(self._sql.next_outside), {"users": list(held), "now": now}
        ).first()
        if found is not None:
            return found
        for level in sorted({n for n in held.values() if n < mine}):
            users = [u for u, n in held.items() if n == level]
            found = conn.execute(
                self._statement(self._sql.next_among), {"users": users, "now": now}
            ).first()
            if found is not None:
                return found
        return None

    def _below_global_limit(self, conn: Connection) -> bool:
        if not self._db.is_sqlite:
            # Claims with a global limit take turns, or two workers could both
            # see one free place and both take it.
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(727272)"))
        count = conn.execute(
            sa.select(sa.func.count()).select_from(E).where(E.c.status == JobStatus.RUNNING.value)
        ).scalar_one()
        return int(count) < self._max_running

    # ------------------------------------------------------------ while running

    def report_progress(
        self, execution_id: int, fraction: float, events: list[rl.PendingEvent] | None = None
    ) -> None:
        """Record how far a running execution has got (0.0 to 1.0), and its latest events."""
        with self._db.write() as conn:
            conn.execute(
                sa.update(E)
                .where(E.c.id == execution_id, E.c.status == JobStatus.RUNNING.value)
                .values(progress=max(0.0, min(1.0, fraction)))
            )
            append(conn, execution_id, events or [])

    def log_events(self, execution_id: int, events: list[rl.PendingEvent]) -> None:
        """Write a running execution's latest events (when no progress write carries them)."""
        with self._db.write() as conn:
            append(conn, execution_id, events)

    # ------------------------------------------------------------ ending

    def finish(self, execution: Execution, worker_id: str, outcome: Outcome) -> bool:
        """End a running execution and publish its data in the same transaction.

        Returns False, publishing nothing, when the execution is no longer this
        worker's to finish (it was declared lost meanwhile). Staged files are
        moved into place inside the transaction: if the commit fails, the
        moved folder is unreachable (no data row names it) and housekeeping
        removes it.
        """
        self._publish_objects_first(execution, worker_id, outcome)
        with self._db.write() as conn:
            ended = self._end(conn, execution, worker_id, outcome)
        self._moved.pop(execution.id, None)
        return ended

    def finish_and_claim(
        self,
        execution: Execution,
        worker_id: str,
        outcome: Outcome,
        prepare: Callable[[Connection, Execution], P],
    ) -> tuple[bool, tuple[Execution, P] | None]:
        """`finish`, then claim and prepare the next run as `claim_and_prepare` does, in ONE commit.

        A slot that ends a run and then claims its next one needs one write
        transaction, not two: half the commits, the writer lock taken once.
        The next run is claimed only after this one has ended in the same
        transaction, so it may be the same job's next run. Returns what
        `finish` returns and the claimed run (None when nothing was startable
        or this run was no longer ours). If the claim fails (a claim race on
        PostgreSQL, `prepare` raising), the whole transaction rolls back and
        the run is finished alone, so a claim can never cost a run its end;
        the slot then claims as usual.
        """
        self._publish_objects_first(execution, worker_id, outcome)
        try:
            with self._db.write() as conn:
                ended = self._end(conn, execution, worker_id, outcome)
                claimed: tuple[Execution, P] | None = None
                if ended:
                    following = self._claim(conn, worker_id)
                    if following is not None:
                        claimed = following, prepare(conn, following)
        except IntegrityError:
            return self.finish(execution, worker_id, outcome), None
        self._moved.pop(execution.id, None)
        return ended, claimed

    def _publish_objects_first(
        self, execution: Execution, worker_id: str, outcome: Outcome
    ) -> None:
        """Copy an export's uploaded objects to their sink keys before the finishing transaction.

        The copy takes as long as the object is large (server-side part
        copies); inside the transaction it held the database's writer lock,
        and on SQLite every other write of the server (triggers, other runs'
        ends) waited for it (attack review: 9 s for an unrelated save while a
        copy hung). The object appears whole or not at all, and only while
        the run is still this attempt's: `publish` aborts any stale
        attempt's pending upload to the same key, then checks ownership,
        then completes (engine/object_publish.py), so a worker that stalled
        and lost the run never lands its object on top of its retry's. A run
        declared lost after that last check has published all the same (it
        is retried, writing the sink again, or ends in ERROR with its object
        visible: docs/scale-out.md). A failed copy raises OSError, as a
        failed move in the transaction does: the run ends in ERROR, and its
        upload is deleted.
        """
        uploads = [(staged, final) for staged, final in outcome.moves if is_uri(final)]
        if not uploads or self.object_store is None:
            return
        if not self._still_owned(execution, worker_id):
            return  # not ours: the transaction finds so and discards the uploads
        moved = self._moved.setdefault(execution.id, {})
        ours = functools.partial(self._still_owned, execution, worker_id)
        for staged, final in uploads:
            if moved.get(staged) != final:
                # Copied, then the hidden upload deleted: once the run reads
                # COMPLETED, nothing of it is left but the published object.
                # Checked once more right before the object appears, after any
                # stale attempt's pending upload was aborted (the fence,
                # engine/object_publish.py): lost since, nothing is published.
                if not publish(self.object_store, staged, final, ours):
                    return
                moved[staged] = final  # the transaction's move finds it done

    def _still_owned(self, execution: Execution, worker_id: str) -> bool:
        """Whether the run is still this worker's attempt (a read, outside any write)."""
        with self._db.read() as conn:
            found = precompiled.run(conn, self._sql.still_owned, _ownership(execution, worker_id))
            return found.first() is not None

    def _end(
        self, conn: Connection, execution: Execution, worker_id: str, outcome: Outcome
    ) -> bool:
        """The statements of `finish`, in the caller's transaction; False if the run is not ours."""
        now = utcnow()
        owned = precompiled.run(conn, self._sql.owned, _ownership(execution, worker_id)).first()
        if owned is None:
            self._moved.pop(execution.id, None)
            # Never published: this attempt's hidden uploads go (another attempt has its own).
            discard(self.object_store, outcome.moves)
            return False
        lock_downstream(conn, execution.id)
        log = list(outcome.log)
        if outcome.status.is_success and outcome.sheets and outcome.staging_dir:
            data_id = self._publish_data(conn, execution, outcome, now)
            log.append(rl.pending(rl.PUBLISHED, **{"data-id": data_id}, sheets=outcome.sheets))
        log.append(
            rl.pending(
                rl.FINISHED,
                status=outcome.status.value,
                records=outcome.success_count,
                dropped=outcome.failure_count,
            )
        )
        append(conn, execution.id, log)
        for staged, final in outcome.moves:
            self._move(execution.id, staged, final)
        precompiled.run(
            conn,
            _END,
            {
                "ended_id": execution.id,
                "status": outcome.status.value,
                "finished_at": now,
                "progress": 1.0 if outcome.status.is_success else None,
                "success_count": outcome.success_count,
                "failure_count": outcome.failure_count,
                "counters": outcome.counters,
                "error_message": outcome.error_message,
                "bytes_read": outcome.bytes_read,
            },
        )
        released = settle_dependents(conn, execution.id, outcome.status)
        # Plan members are released by their plan, the rest by data-driven triggers.
        if outcome.status.is_success:
            released += fire_data_driven(conn, execution.job_configuration_id, execution.id)
        if released:
            notify_other_nodes(conn, "work")
        return True

    def _publish_data(
        self, conn: Connection, execution: Execution, outcome: Outcome, now: dt.datetime
    ) -> int:
        result = precompiled.run(
            conn,
            _NEW_DATA,
            {
                "job_configuration_id": execution.job_configuration_id,
                "execution_id": execution.id,
                "created_at": now,
                "record_count": sum(outcome.sheets.values()),
                "sheets": outcome.sheets,
            },
        )
        data_id = int(result.scalar_one())
        location = os.path.join(self._data_root, str(data_id))
        assert outcome.staging_dir is not None
        # A folder here can only be the leftover of a publish whose commit
        # never happened (the process died): no data row names it.
        shutil.rmtree(location, ignore_errors=True)
        self._move(execution.id, outcome.staging_dir, location)
        precompiled.run(conn, _PLACE_DATA, {"data_id": data_id, "location": location})
        return data_id

    def _move(self, execution_id: int, source: str, target: str) -> None:
        """Move a staged file or folder into place, remembering where it went.

        If the transaction around the move fails (say, the database connection
        is lost before the commit) and the finish is retried, the staged
        source is already gone; the retry takes it from where it went.
        """
        moved = self._moved.setdefault(execution_id, {})
        current = moved.get(source, source)
        if current == target:
            return
        if is_uri(target):
            # An object-store sink: the run uploaded a hidden object, made visible here.
            # Failures are OSErrors: the worker ends the run in ERROR, as for a local move.
            if self.object_store is None:
                raise OSError("no object store is configured on this server")
            publish(self.object_store, current, target)
        else:
            os.replace(current, target)
        moved[source] = target

    def retry_later(
        self,
        execution: Execution,
        worker_id: str,
        message: str,
        default: RetryPolicy,
        events: list[rl.PendingEvent] | None = None,
    ) -> Verdict | None:
        """After a passing failure: put this worker's run back to the queue if its policy allows.

        Returns the verdict (not retried: end the run with its message), or None
        when the run is no longer this worker's.
        """
        with self._db.write() as conn:
            verdict = is_retried(conn, execution.id, default, message)
            if not verdict.retry:
                return verdict
            now = utcnow()
            if not requeue(conn, verdict, message, now, worker_id=worker_id, events=events or ()):
                return None
            notify_other_nodes(conn, "work")
        self._moved.pop(execution.id, None)
        return verdict

    def hand_back(
        self,
        execution_id: int,
        worker_id: str,
        reason: str = "shutdown",
        events: list[rl.PendingEvent] | None = None,
    ) -> bool:
        """Return a running execution to the queue (graceful shutdown).

        Its log gets the `events` not yet written and the hand-back with `reason`.
        """
        with self._db.write() as conn:
            handed = conn.execute(
                sa.update(E)
                .where(
                    E.c.id == execution_id,
                    E.c.status == JobStatus.RUNNING.value,
                    E.c.worker_id == worker_id,
                )
                .values(
                    status=JobStatus.QUEUED.value,
                    started_at=None,
                    worker_id=None,
                    heartbeat_at=None,
                    progress=None,
                )
            ).rowcount
            if handed:
                # The next claim resolves and records its inputs afresh. Only a run
                # this worker still held: another worker's claim keeps its inputs
                # (housekeeping keeps the data they name).
                conn.execute(
                    sa.delete(t.execution_inputs).where(
                        t.execution_inputs.c.execution_id == execution_id
                    )
                )
                event = rl.pending(rl.HANDED_BACK, worker=worker_id, reason=reason)
                append(conn, execution_id, [*(events or []), event])
            return bool(handed)

    # ------------------------------------------------------------ reconciliation

    def reconcile_lost_workers(
        self,
        lost_after: dt.timedelta,
        *,
        is_local_pid_alive: Callable[[int], bool],
        hostname: str,
        staging_root: str | None = None,
        alive_worker_id: str | None = None,
        retry_policy: RetryPolicy = NO_RETRIES,
    ) -> list[int]:
        """Retry or end in ERROR every RUNNING execution whose worker is gone; return their ids.

        A worker is gone when its heartbeat is older than `lost_after`, or, on
        this host, at once when its process no longer exists, so a restarted
        server does not leave runs RUNNING for the whole timeout. A lost run
        goes back to the queue while its job's retries (else `retry_policy`)
        allow and Datamill can tell it would not write twice (store/retries.py).
        """
        with self._db.write() as conn:
            now = utcnow()
            workers = conn.execute(sa.select(W)).all()
            # The worker reconciling is alive by definition, however late its
            # last heartbeat got through under load.
            gone = [
                w.id
                for w in workers
                if w.id != alive_worker_id
                and (
                    w.heartbeat_at < now - lost_after
                    or (w.hostname == hostname and not is_local_pid_alive(w.pid))
                )
            ]
            known = {w.id for w in workers} - set(gone)
            if alive_worker_id is not None:
                known.add(alive_worker_id)
            orphaned = conn.execute(
                sa.select(E.c.id, E.c.worker_id).where(E.c.status == JobStatus.RUNNING.value)
            ).all()
            lost = [r.id for r in orphaned if r.worker_id not in known]
            worker_of = {r.id: r.worker_id for r in orphaned}
            verdicts = lost_verdicts(conn, lost, retry_policy, WORKER_LOST)
            # On PostgreSQL the lost worker's finish may commit after the look above:
            # only a run still RUNNING at its update is retried or ended (and logged,
            # and its downstream settled), never a run that has just COMPLETED.
            retried = []
            for verdict in verdicts:
                reason = f"{WORKER_LOST} ({worker_of[verdict.execution_id]})"
                if verdict.retry and requeue(conn, verdict, reason, now):
                    retried.append(verdict)
            failing = [v for v in verdicts if not v.retry]
            for verdict in failing:
                lock_downstream(conn, verdict.execution_id)
            ended = []
            for verdict in failing:
                still_running = conn.execute(
                    sa.update(E)
                    .where(E.c.id == verdict.execution_id, E.c.status == JobStatus.RUNNING.value)
                    .values(
                        status=JobStatus.ERROR.value,
                        finished_at=now,
                        progress=None,
                        error_message=verdict.message,
                    )
                ).rowcount
                if still_running:
                    settle_dependents(conn, verdict.execution_id, JobStatus.ERROR)
                    ended.append(verdict)
            append_many(
                conn,
                (
                    (v.execution_id, e)
                    for v in ended
                    for e in (
                        rl.pending(rl.FAILED, message=v.message, worker=worker_of[v.execution_id]),
                        rl.pending(rl.FINISHED, status=JobStatus.ERROR.value),
                    )
                ),
            )
            if retried:
                notify_other_nodes(conn, "work")
            if gone:
                conn.execute(sa.delete(W).where(W.c.id.in_(gone)))
        settled = {v.execution_id for v in [*retried, *ended]}
        lost = [execution_id for execution_id in lost if execution_id in settled]
        if staging_root:
            for execution_id in lost:
                shutil.rmtree(os.path.join(staging_root, str(execution_id)), ignore_errors=True)
        return lost


def is_retryable(error: BaseException) -> bool:
    """Whether a store error is a passing one (lock contention, lost connection)."""
    return isinstance(error, OperationalError)
