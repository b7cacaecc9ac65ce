"""The dependency graph (services/graph.py): what its mutation run showed no test asserted.

docs/testing.md, "Surviving mutants", services/graph.py, names the mutants each test kills.
"""

from __future__ import annotations

from typing import Any

from datamill.domain.status import JobKind
from datamill.services.graph import upstream_graph
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


FS = "/api/filesystem"


def test_a_folder_move_that_would_make_a_job_read_itself_is_refused(actors: Actors) -> None:
    # /Data/A/x.wbk reads /Data/B/x.wbk; once that job and its folder are gone,
    # renaming A to B would make the workbook read itself (a stored cycle the
    # definition routes refuse; data-driven jobs in one trigger each other).
    call, node = actors.call, actors.node
    for name in ("A", "B"):
        assert call("admin", "POST", f"{FS}/folders/Data", {"name": name}).status_code == 200
    source = "/Data/B/x.imp"
    _entry, imported = node.jobs.define_job(
        source, JobKind.IMPORT, {"source": {"kind": "csv", "path": "/x.csv"}}, "admin"
    )
    made = [
        call("admin", "POST", "/rest/workbook", {"path": path, **_workbook(reads, "DATA_DRIVEN")})
        for path, reads in (("/Data/B/x.wbk", source), ("/Data/A/x.wbk", "/Data/B/x.wbk"))
    ]
    assert [m.status_code for m in made] == [200, 200], [m.text for m in made]
    for url in (
        f"/rest/workbook/{made[0].json()['configuration-id']}",
        f"/rest/import-job/{imported.id}",
        f"{FS}/folders/Data/B",
    ):
        assert call("admin", "DELETE", url).status_code == 200, url
    refused = call("admin", "PUT", f"{FS}/folders/Data/A", {"name": "B"})
    assert (refused.status_code, refused.json()) == (
        409,
        {
            "status": "failure",
            "reason": "/Data/A cannot be moved: the jobs would read from each other in a cycle:"
            " /Data/B/x.wbk -> /Data/B/x.wbk",
        },
    )
    # Nothing moved: the folder keeps its name and the workbook reads nothing.
    assert call("admin", "GET", f"{FS}/folders/Data/A").json()["path"] == "/Data/A"
    with node.store.db.read() as conn:
        graph = upstream_graph(conn, node.store)
    assert graph == {made[1].json()["configuration-id"]: set()}


def test_a_cycle_stored_before_does_not_block_other_folder_moves(actors: Actors) -> None:
    # Only a cycle the move itself closes is refused: one already stored (from
    # before this check) must not stop every rename in the workspace.
    x, y = f"{WBK}/x.wbk", f"{WBK}/y.wbk"
    _define(actors, x, JobKind.WORKBOOK, _workbook(y, "DATA_DRIVEN"), "rx")
    _define(actors, y, JobKind.WORKBOOK, _workbook(x, "DATA_DRIVEN"), "rx")
    assert actors.call("admin", "POST", f"{FS}/folders/Data", {"name": "A"}).status_code == 200
    renamed = actors.call("admin", "PUT", f"{FS}/folders/Data/A", {"name": "B"})
    assert renamed.json()["path"] == "/Data/B", renamed.text
