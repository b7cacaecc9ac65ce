"""Statements on the driver's cursor (store/precompiled.py) behave as through SQLAlchemy."""

from __future__ import annotations

import datetime as dt

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from datamill.bootstrap import Node
from datamill.domain.status import JobKind, JobStatus
from datamill.store import precompiled
from datamill.store import tables as t
from datamill.store.run_changes import RUNS_CHANNEL
from tests.helpers import admin

E = t.executions
WORKBOOK = {"sheets": [{"kind": "sql", "name": "out", "sql": "SELECT 1 AS one", "keep": True}]}

_SET = (
    sa.update(E)
    .where(E.c.id == sa.bindparam("run"))
    .values(
        status=sa.bindparam("status"),
        finished_at=sa.bindparam("at"),
        counters=sa.bindparam("counters"),
        progress=sa.bindparam("progress"),
        stop_requested=sa.bindparam("stop"),
    )
)
_GET = sa.select(
    E.c.id, E.c.status, E.c.finished_at, E.c.counters, E.c.progress, E.c.stop_requested
).where(E.c.id == sa.bindparam("run"))


def _queued(node: Node, runs: int = 1) -> list[int]:
    entry, _ = node.jobs.define_job(
        "/Analytics/Workbooks/p.wbk", JobKind.WORKBOOK, WORKBOOK, "admin"
    )
    return [node.jobs.trigger(entry.path, admin(node)).id for _ in range(runs)]


def test_values_written_and_read_on_the_cursor_are_those_sqlalchemy_writes_and_reads(
    node: Node,
) -> None:
    first, second = _queued(node, 2)
    at = dt.datetime(2026, 12, 2, 14, 15, 16, 123456)
    counters = {"rows": 3, "nested": {"a": [1, 2]}}
    values = {"status": "COMPLETED", "at": at, "counters": counters, "progress": 0.25}
    with node.store.db.write() as conn:
        precompiled.run(conn, _SET, {"run": first, **values, "stop": True})
        conn.execute(_SET, {"run": second, **values, "stop": True})
    with node.store.db.read() as conn:
        ours = [precompiled.run(conn, _GET, {"run": run}).first() for run in (first, second)]
        theirs = [conn.execute(_GET, {"run": run}).first() for run in (first, second)]
    expected = ("COMPLETED", at, counters, 0.25, True)
    # Dates, JSON, floats and booleans: each way round, the same values and types.
    for row in [*ours, *theirs]:
        assert row is not None
        assert (row.status, row.finished_at, row.counters, row.progress, row.stop_requested) == (
            expected
        )
        assert type(row.stop_requested) is bool and type(row.finished_at) is dt.datetime
    assert [tuple(row) for row in ours] == [tuple(row) for row in theirs if row is not None]


def test_a_second_running_run_of_one_job_is_refused_as_sqlalchemys_integrity_error(
    node: Node,
) -> None:
    # The claim race on PostgreSQL: the unique index refuses it, and the queue
    # catches SQLAlchemy's IntegrityError to retry, never the driver's own.
    first, second = _queued(node, 2)
    start = sa.update(E).where(E.c.id == sa.bindparam("run")).values(status="RUNNING")
    with pytest.raises(IntegrityError), node.store.db.write() as conn:
        precompiled.run(conn, start, {"run": first})
        precompiled.run(conn, start, {"run": second})
    with node.store.db.read() as conn:
        statuses = conn.execute(sa.select(E.c.status).order_by(E.c.id)).scalars().all()
    assert statuses == [JobStatus.QUEUED.value, JobStatus.QUEUED.value]


def test_a_run_changed_on_the_cursor_wakes_waiters_once_and_an_unchanged_one_does_not(
    node: Node,
) -> None:
    (run,) = _queued(node)
    woken: list[None] = []
    node.store.db.run_change_listeners.append(lambda: woken.append(None))
    heartbeat = sa.update(E).where(E.c.id == sa.bindparam("run")).values(heartbeat_at=sa.func.now())
    with node.store.db.write() as conn:
        precompiled.run(conn, heartbeat, {"run": run})
    assert woken == []
    stop = sa.update(E).where(E.c.id == sa.bindparam("run")).values(stop_requested=True)
    with node.store.db.write() as conn:
        precompiled.run(conn, stop, {"run": run})
        precompiled.run(conn, stop, {"run": run})
    assert woken == [None]


@pytest.mark.postgres
def test_on_postgresql_a_run_changed_on_the_cursor_notifies_other_nodes_once(
    node: Node, database_url: str
) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite has no other nodes to notify")
    (run,) = _queued(node)
    url = sa.make_url(database_url).set(drivername="postgresql")
    with psycopg.connect(url.render_as_string(hide_password=False), autocommit=True) as other:
        other.execute(f"LISTEN {RUNS_CHANNEL}")
        stop = sa.update(E).where(E.c.id == sa.bindparam("run")).values(stop_requested=True)
        with node.store.db.write() as conn:
            precompiled.run(conn, stop, {"run": run})
            precompiled.run(conn, stop, {"run": run})
        heard = list(other.notifies(timeout=3.0, stop_after=2))
    # One NOTIFY per transaction, delivered on commit, as through SQLAlchemy.
    assert [n.channel for n in heard] == [RUNS_CHANNEL]


def test_statements_with_in_lists_are_left_to_sqlalchemy(node: Node) -> None:
    listed = sa.select(E.c.id).where(E.c.id.in_(sa.bindparam("runs", expanding=True)))
    with node.store.db.read() as conn, pytest.raises(ValueError, match="IN lists"):
        precompiled.run(conn, listed, {"runs": [1]})
