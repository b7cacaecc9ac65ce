"""Noticing that runs changed: a mark per transaction, NOTIFY on PostgreSQL, callbacks after commit.

Waiting requests (services/waiting.py) must wake when any run changes state,
whoever changes it: the worker's claim, progress and finish, a stop, a plan
releasing or cancelling its members, reconciliation, housekeeping, and any
code added later. So the change is noticed where all of them meet, at the
engine: an UPDATE or DELETE of the executions table that touches the status,
the progress or the stop flag marks its transaction. On PostgreSQL the mark
sends one NOTIFY, which the database delivers to every node on commit (and
drops on rollback); after a commit through Database.write the in-process
callbacks run, so a waiter in the same process wakes without a round trip.
Heartbeats (which set heartbeat_at only) mark nothing.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

RUNS_CHANNEL = "datamill_runs"
_TABLE = "executions"
_WATCHED_COLUMNS = frozenset({"status", "progress", "stop_requested"})
_MARK = "datamill_runs_changed"
_NOTIFY = f"SELECT pg_notify('{RUNS_CHANNEL}', '')"


def changes_runs(statement: Any) -> bool:
    """Whether a statement may change a run's state (status, progress, stop flag, existence)."""
    if isinstance(statement, sa.Delete):
        return getattr(statement.table, "name", None) == _TABLE
    if not isinstance(statement, sa.Update) or getattr(statement.table, "name", None) != _TABLE:
        return False
    values = statement._values
    if values is None:
        # The SET clause comes from the parameters: assume it may.
        return True
    return any(getattr(key, "key", key) in _WATCHED_COLUMNS for key in values)


def install(engine: Engine) -> None:
    """Mark (and on PostgreSQL announce) every transaction that changes a run."""
    notifies = engine.dialect.name == "postgresql"

    @event.listens_for(engine, "after_execute")
    def _after_execute(
        conn: Connection, statement: Any, _multi: Any, _params: Any, _options: Any, _result: Any
    ) -> None:
        if conn.info.get(_MARK) or not changes_runs(statement):
            return
        conn.info[_MARK] = True
        if notifies:
            # Once per transaction; delivered on commit, dropped on rollback.
            conn.exec_driver_sql(_NOTIFY)

    @event.listens_for(engine, "rollback")
    def _rollback(conn: Connection) -> None:
        conn.info.pop(_MARK, None)


def committed_changes(conn: Connection) -> bool:
    """After a commit: whether the transaction changed a run (and forget that it did)."""
    return bool(conn.info.pop(_MARK, False))
