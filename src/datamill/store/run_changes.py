"""Noticing that runs changed: a mark per transaction, NOTIFY on PostgreSQL, callbacks after commit.

Waiting requests (services/waiting.py) must wake when any run changes state,
whoever changes it: the worker's claim, progress and finish, a stop, a plan
releasing or cancelling its members, reconciliation, housekeeping, and any
code added later. So the change is noticed where all of them meet, at the
engine: an UPDATE or DELETE of the executions table that touches the status,
the progress or the stop flag marks its transaction (judged on the SQL text,
not on SQLAlchemy's statement objects). On PostgreSQL the mark
sends one NOTIFY, which the database delivers to every node on commit (and
drops on rollback); after a commit through Database.write the in-process
callbacks run, so a waiter in the same process wakes without a round trip.
Heartbeats (which set heartbeat_at only) mark nothing.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

RUNS_CHANNEL = "datamill_runs"
_MARK = "datamill_runs_changed"
_NOTIFY = f"SELECT pg_notify('{RUNS_CHANNEL}', '')"
_UPDATE = "UPDATE executions SET "
_DELETE = "DELETE FROM executions "  # the space: not execution_inputs...
# Columns whose change a waiter must hear of (heartbeat_at is not one of them).
_WATCHED_COLUMNS = ("status", "progress", "stop_requested")


def changes_runs(sql: str) -> bool:
    """Whether a statement (its SQL text) may change a run's status, progress, stop flag, existence.

    Judged on the SQL the database receives, so it holds for Core, ORM and
    raw statements alike. A false alarm costs one needless re-read.
    """
    if sql.startswith(_DELETE) or sql == _DELETE.rstrip():
        return True
    if not sql.startswith(_UPDATE):
        return False
    # SQLAlchemy writes SET before WHERE; a column named in the WHERE only
    # (an assumption about the text) would at worst be a false alarm.
    assignments = sql.partition(" WHERE ")[0]
    return any(column in assignments for column in _WATCHED_COLUMNS)


def install(engine: Engine) -> None:
    """Mark (and on PostgreSQL announce) every transaction that changes a run."""
    notifies = engine.dialect.name == "postgresql"

    @event.listens_for(engine, "after_cursor_execute")
    def _after_cursor_execute(
        conn: Connection, _cursor: Any, sql: str, _params: Any, _context: Any, _many: bool
    ) -> None:
        # Two string prefix tests for almost every statement: the hot path's cost.
        if not sql.startswith(_UPDATE) and not sql.startswith(_DELETE.rstrip()):
            return
        if conn.info.get(_MARK) or not changes_runs(sql):
            return
        _mark(conn, notifies)

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        # conn.info outlives the transaction (it belongs to the pooled
        # connection): a mark left by a commit outside Database.write must
        # not stand for this transaction.
        conn.info.pop(_MARK, None)

    @event.listens_for(engine, "rollback")
    def _rollback(conn: Connection) -> None:
        conn.info.pop(_MARK, None)


def mark(conn: Connection) -> None:
    """Mark the transaction as one that changed a run, for a statement run past SQLAlchemy.

    store/precompiled.py runs statements on the driver's cursor, which the
    listener above never sees: it calls this for those whose SQL changes_runs.
    """
    if not conn.info.get(_MARK):
        _mark(conn, conn.dialect.name == "postgresql")


def _mark(conn: Connection, notifies: bool) -> None:
    conn.info[_MARK] = True
    if notifies:
        # Once per transaction; delivered on commit, dropped on rollback.
        conn.exec_driver_sql(_NOTIFY)


def committed_changes(conn: Connection) -> bool:
    """After a commit: whether the transaction changed a run (and forget that it did)."""
    return bool(conn.info.pop(_MARK, False))
