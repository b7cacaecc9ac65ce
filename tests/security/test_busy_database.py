"""A server whose database connections are all in use answers 503, never 500.

Attack review on PostgreSQL: 45 concurrent sequential triggers of one user
(3,000 file references each) held every pooled connection of an API node;
ten of them, and anyone else's request, waited the pool's 30 s and got a 500
`internal error: TimeoutError`. Real app, real store on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack

import pytest
from sqlalchemy.pool import QueuePool

from tests.security.conftest import Actors


@pytest.fixture
def exhausted(actors: Actors) -> Iterator[ExitStack]:
    """Every connection the node's pool may open, held (as long-running requests would)."""
    engine = actors.node.store.db.engine
    pool = engine.pool
    assert isinstance(pool, QueuePool)
    waited = pool._timeout
    pool._timeout = 0.5  # how long a request waits for a free connection (30 s by default)
    with ExitStack() as held:
        for _ in range(pool.size() + pool._max_overflow):
            held.enter_context(engine.connect())
        assert pool.checkedout() == pool.size() + pool._max_overflow
        try:
            yield held
        finally:
            pool._timeout = waited


def test_requests_find_no_free_connection_get_a_503_and_are_served_once_one_is_free(
    actors: Actors, exhausted: ExitStack
) -> None:
    created = {
        "path": "/Analytics/Workbooks/busy.wbk",
        "sheets": [{"kind": "sql", "name": "out", "keep": True, "sql": "SELECT 1 AS n"}],
    }
    requests = [
        ("POST", "/rest/workbook", created),
        ("POST", "/api/job-execution/Analytics/Workbooks/busy.wbk/trigger", None),  # fast path
        ("GET", "/api/job-execution/list-running", None),
        ("GET", "/rest/job-execution/job-details/1", None),
    ]
    for method, url, body in requests:
        busy = actors.call("eve", method, url, body)
        assert busy.status_code == 503, (url, busy.text)
        assert busy.json() == {
            "status": "failure",
            "reason": "the server is busy: all of its database connections are in use;"
            " try again shortly",
        }
        assert busy.headers["Retry-After"] == "5"
    exhausted.close()
    made = actors.call("eve", "POST", "/rest/workbook", created)
    assert made.status_code == 200, made.text
    ran = actors.call("eve", "POST", "/api/job-execution/Analytics/Workbooks/busy.wbk/trigger")
    assert ran.status_code == 200 and ran.json()["status"] == "success"
