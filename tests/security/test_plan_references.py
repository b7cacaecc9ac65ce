"""A plan naming one job many times costs what naming it once costs (attack review).

On PostgreSQL a sequential trigger of 10,000 copies of one path took 43 s,
one file at a time, inside the plan's one transaction (a connection and a
thread held meanwhile; on SQLite the write lock every writer waits for).
Real app, real store on SQLite and PostgreSQL; no worker, runs stay QUEUED.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event

from tests.security.conftest import Actors

PATH = "/Analytics/Workbooks/planned.wbk"


@pytest.fixture
def statements(actors: Actors) -> Iterator[list[str]]:
    """Every SQL statement the node's store runs while the test runs."""
    seen: list[str] = []
    engine = actors.node.store.db.engine

    def count(_conn: Any, _cursor: Any, sql: str, *_rest: Any) -> None:
        seen.append(sql)

    event.listen(engine, "before_cursor_execute", count)
    yield seen
    event.remove(engine, "before_cursor_execute", count)


def _plan(actors: Actors, copies: int) -> list[dict[str, Any]]:
    return _plan_of(actors, [PATH] * copies)


def _plan_of(actors: Actors, references: list[str]) -> list[dict[str, Any]]:
    response = actors.call(
        "eve", "POST", "/api/job-execution/sequential-trigger", {"fileIds": references}
    )
    assert response.status_code == 200, response.text
    members: list[dict[str, Any]] = response.json()["execution-plan"]
    return members


def test_a_plan_naming_one_job_thousands_of_times_reads_as_much_as_naming_it_once(
    actors: Actors, statements: list[str]
) -> None:
    document = {
        "path": PATH,
        "sheets": [{"kind": "sql", "name": "out", "keep": True, "sql": "SELECT 1 AS n"}],
    }
    assert actors.call("eve", "POST", "/rest/workbook", document).status_code == 200
    _plan(actors, 1)  # sign-in and caches warmed
    statements.clear()
    once = _plan(actors, 1)
    for_one = len(statements)
    statements.clear()
    many = _plan(actors, 3_000)
    assert len(statements) == for_one
    # Nor do its spellings: doubled and missing slashes, its id, its uuid, '+' for nothing.
    with actors.node.store.db.read() as conn:
        entry = actors.node.store.files.find(conn, PATH)
    assert entry is not None
    spellings = [
        "/" * a + "Analytics" + "/" * b + "Workbooks" + "/" * c + "planned.wbk" + "/" * d
        for a in range(1, 11)
        for b in range(1, 11)
        for c in range(1, 11)
        for d in range(3)
    ] + [str(entry.id), "00" + str(entry.id), entry.uuid, entry.uuid.upper()]
    statements.clear()
    spelled = _plan_of(actors, spellings)
    # The id and the uuid are keys of their own: two statements each.
    assert len(statements) <= for_one + 2 * 2
    assert [m["job-configuration-name"] for m in spelled] == ["planned"]
    assert [m["job-configuration-name"] for m in once] == ["planned"]
    assert [m["job-configuration-name"] for m in many] == ["planned"]
    assert many[0]["job-execution-id"] != once[0]["job-execution-id"]
