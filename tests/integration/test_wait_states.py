"""What a waiting request learns of its runs (services/waiting.py `read_states`).

One re-read serves every waiter: it must learn the state of every watched run,
however many (a sequential trigger or an event stream may name hundreds), and
cost one query per 500 runs, not one per run, since it runs at every change.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa

from datamill.bootstrap import Node
from datamill.domain.status import JobKind, JobStatus, TriggerType
from datamill.services.waiting import read_states, readable_runs
from datamill.store import executions as ex
from tests.helpers import admin, password_hash

CSV = {"source": {"kind": "csv", "path": "/x.csv"}}


def test_a_wait_on_many_runs_learns_each_ones_state_and_readability_in_one_query_per_500(
    node: Node,
) -> None:
    entry, _ = node.jobs.define_job("/Data/ImportJobs/many.imp", JobKind.IMPORT, CSV, "admin")
    with node.store.db.write() as conn:
        config = node.store.jobs.for_file(conn, entry.id)
        assert config is not None
        queued = [
            ex.create_execution(conn, config, TriggerType.RESTAPI, "admin") for _ in range(1001)
        ]
    ended = queued[::7]
    with node.store.db.write() as conn:
        conn.execute(
            sa.text("UPDATE executions SET status = :s, progress = 1.0 WHERE id = :i"),
            [{"s": JobStatus.COMPLETED.value, "i": i} for i in ended],
        )
    # The same runs asked for twice, and one that does not exist (deleted meanwhile).
    asked = [*queued, *queued[:10], max(queued) + 1000]
    with _queries(node) as statements:
        states = read_states(node.store.db, asked)
    assert sorted(states) == sorted(queued)
    assert {i for i, s in states.items() if s.status is JobStatus.COMPLETED} == set(ended)
    assert {states[i].progress for i in ended} == {1.0}
    assert all(s.status is JobStatus.QUEUED for i, s in states.items() if i not in ended)
    assert len([s for s in statements if "executions" in s]) == 3
    # Which of them the waiter may learn of (a keyed replay with wait): all for
    # the job's owner, in one query per 500 as well; none for a user who may not read it.
    with _queries(node) as statements:
        assert readable_runs(node.jobs, asked, admin(node)) == set(queued)
    assert len([s for s in statements if "executions" in s]) == 3
    eve = node.store.users.create("eve", password_hash("pw"))
    assert readable_runs(node.jobs, asked, eve) == set()


@contextlib.contextmanager
def _queries(node: Node) -> Iterator[list[str]]:
    """The SQL statements the block sends to the metadata database."""
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(args[2])

    sa.event.listen(node.store.db.engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        sa.event.remove(node.store.db.engine, "before_cursor_execute", count)
