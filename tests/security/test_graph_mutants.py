"""The dependency graph (services/graph.py): what its mutation run showed no test asserted.

docs/testing.md, "Surviving mutants", services/graph.py, names the mutants each test kills.
"""

from __future__ import annotations

from typing import Any

from datamill.domain.status import JobKind
from tests.security.conftest import Actors
from tests.security.test_plans_mutants import _define, _workbook, refused_as_cycle

WBK = "/Analytics/Workbooks"


def test_a_job_that_reads_itself_is_a_cycle_of_one_in_a_plan(actors: Actors) -> None:
    # The artifact routes refuse such a definition; the plan's own check is the
    # defence for a graph that holds one anyway (defined below the routes, as
    # the cycles of test_plans_mutants.py are). A plan must not start it.
    own = f"{WBK}/own.wbk"
    _define(actors, own, JobKind.WORKBOOK, _workbook(own, "DATA_DRIVEN"), "rx")
    refused_as_cycle(actors, own, "own.wbk -> own.wbk")


def _reads_both(first: str, second: str) -> dict[str, Any]:
    source = {"kind": "data", "name": "a", "source": {"workbook": first, "sheet": "out"}}
    other = {"kind": "data", "name": "b", "source": {"workbook": second, "sheet": "out"}}
    sql = {
        "kind": "sql",
        "name": "out",
        "keep": True,
        "sql": "SELECT * FROM a UNION ALL SELECT * FROM b",
    }
    return {"sheets": [source, other, sql]}


def test_a_graph_with_a_billion_paths_is_checked_for_cycles_edge_by_edge(actors: Actors) -> None:
    # A ladder of 31 levels, two workbooks each reading both of the level below:
    # 2**30 paths from top to bottom. The cycle check of every definition walks
    # the whole graph; walking a finished job again per path would never end.
    node = actors.node
    below = ("/Data/ImportJobs/a.imp", "/Data/ImportJobs/b.imp")
    for path in below:
        node.jobs.define_job(
            path, JobKind.IMPORT, {"source": {"kind": "csv", "path": "/x.csv"}}, "admin"
        )
    for level in range(31):
        here = (f"{WBK}/l{level}a.wbk", f"{WBK}/l{level}b.wbk")
        for path in here:
            first = level == 0  # the first level reads an import job
            definition = _workbook(below[0], "DATA_DRIVEN") if first else _reads_both(*below)
            node.jobs.define_job(path, JobKind.WORKBOOK, definition, "admin")
        below = here
    top = {"path": f"{WBK}/top.wbk", **_reads_both(*below)}
    made = actors.call("admin", "POST", "/rest/workbook", top)
    assert made.status_code == 200, made.text
    # Closing a cycle through the bottom of the ladder is still found and named.
    store = node.store
    with store.db.read() as conn:
        entry = store.files.find(conn, f"{WBK}/l0a.wbk")
        assert entry is not None
        bottom = store.jobs.for_file(conn, entry.id)
    assert bottom is not None
    closing = {"path": f"{WBK}/l0a.wbk", **_workbook(f"{WBK}/top.wbk", "DATA_DRIVEN")}
    refused = actors.call("admin", "PUT", f"/rest/workbook/{bottom.id}", closing)
    assert refused.status_code == 400, refused.text
    reason = refused.json()["reason"]
    assert reason.startswith("the jobs would read from each other in a cycle: ")
    assert reason.count(" -> ") == 32 and f"{WBK}/top.wbk" in reason
