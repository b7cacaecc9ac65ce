"""The sequential trigger (services/plans.py): what the mutation triage showed no test asserted.

admin owns the jobs and opens them to others with flags; eve (no group, no
ownership) triggers plans through the HTTP route; the PostgreSQL race at the
end calls the service as admin. docs/testing.md, "Surviving
mutants", services/plans.py, names the mutants each test kills.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from sqlalchemy.engine import Connection

from datamill.bootstrap import Node
from datamill.domain.status import JobKind, TriggerType
from datamill.services import plans
from datamill.store import executions as ex
from datamill.store.executions import active_executions
from tests.helpers import admin, pg_sessions, race_an_open_transaction
from tests.security.conftest import Actors

A = "/Data/ImportJobs/a.imp"
PLAN = "/api/job-execution/sequential-trigger"


def _workbook(source: str, mode: str) -> dict[str, Any]:
    return {
        "triggering": {"mode": mode},
        "sheets": [
            {"kind": "data", "name": "s", "source": {"importJob": source}}
            if source.endswith(".imp")
            else {"kind": "data", "name": "s", "source": {"workbook": source, "sheet": "out"}},
            {"kind": "sql", "name": "out", "keep": True, "sql": "SELECT * FROM s"},
        ],
    }


def _define(
    actors: Actors, path: str, kind: JobKind, definition: dict[str, Any], flags: str
) -> int:
    """admin's job; `flags` holds r and/or x for everyone else. Its configuration id."""
    node = actors.node
    entry, config = node.jobs.define_job(path, kind, definition, "admin")
    with node.store.db.write() as conn:
        node.store.files.set_others_flags(
            conn, entry.id, readable="r" in flags, writable=False, executable="x" in flags
        )
    return config.id


def _active(actors: Actors) -> list[tuple[int, str]]:
    with actors.node.store.db.read() as conn:
        return sorted((e.job_configuration_id, e.triggered_by) for e in active_executions(conn))


def test_a_plan_takes_only_data_driven_workbooks_eve_may_read_and_run(actors: Actors) -> None:
    wbk = JobKind.WORKBOOK
    a = _define(actors, A, JobKind.IMPORT, {"source": {"kind": "csv", "path": "/x.csv"}}, "rx")
    d1 = "/Analytics/Workbooks/d1.wbk"
    planned = _define(actors, d1, wbk, _workbook(A, "DATA_DRIVEN"), "rx")
    # Two steps down: the plan follows the chain.
    further = _define(
        actors, "/Analytics/Workbooks/d5.wbk", wbk, _workbook(d1, "DATA_DRIVEN"), "rx"
    )
    # Run but not read: left out (a plan names only what its caller may read).
    blind = "/Analytics/Workbooks/d2.wbk"
    _define(actors, blind, wbk, _workbook(A, "DATA_DRIVEN"), "x")
    # Downstream only of the left-out one: never reached, though eve may run it.
    _define(actors, "/Analytics/Workbooks/d4.wbk", wbk, _workbook(blind, "DATA_DRIVEN"), "rx")
    # Read but not run; a manual workbook; an export job: none of them planned.
    _define(actors, "/Analytics/Workbooks/d3.wbk", wbk, _workbook(A, "DATA_DRIVEN"), "r")
    _define(actors, "/Analytics/Workbooks/m.wbk", wbk, _workbook(A, "MANUAL"), "rx")
    export = {"source": {"importJob": A}, "sink": {"kind": "csv", "path": "/tmp/never.csv"}}
    _define(actors, "/Data/ExportJobs/e.exp", JobKind.EXPORT, export, "rx")

    # The same job twice (by path and by id) is one member.
    answer = actors.call("eve", "POST", PLAN, {"fileIds": [A, A, str(_file_id(actors, A))]})
    assert answer.status_code == 200, answer.text
    members = answer.json()["execution-plan"]
    assert [
        (m["job-configuration-name"], m["job-configuration-id"], m["trigger"]) for m in members
    ] == [
        ("a", a, True),
        ("d1", planned, True),
        ("d5", further, True),
    ]
    assert _active(actors) == [(a, "eve"), (planned, "eve"), (further, "eve")]


def _file_id(actors: Actors, path: str) -> int:
    with actors.node.store.db.read() as conn:
        entry = actors.node.store.files.find(conn, path)
    assert entry is not None
    return entry.id


def test_an_empty_plan_is_refused_by_name(actors: Actors) -> None:
    for body in ({"fileIds": []}, []):
        refused = actors.call("eve", "POST", PLAN, body)
        assert (refused.status_code, refused.json()) == (
            400,
            {"status": "failure", "reason": "fileIds must name at least one job"},
        )
    assert _active(actors) == []


def test_a_cycle_in_a_plan_is_named_member_by_member(actors: Actors) -> None:
    x, y = "/Analytics/Workbooks/x.wbk", "/Analytics/Workbooks/y.wbk"
    _define(actors, x, JobKind.WORKBOOK, _workbook(y, "DATA_DRIVEN"), "rx")
    _define(actors, y, JobKind.WORKBOOK, _workbook(x, "DATA_DRIVEN"), "rx")
    refused_as_cycle(actors, x, "x.wbk -> y.wbk -> x.wbk")


def refused_as_cycle(actors: Actors, member: str, cycle: str) -> None:
    """eve's plan of `member` is refused, naming `cycle`, and starts nothing."""
    refused = actors.call("eve", "POST", PLAN, {"fileIds": [member]})
    assert (refused.status_code, refused.json()) == (
        400,
        {"status": "failure", "reason": f"the jobs read from each other in a cycle: {cycle}"},
    )
    assert _active(actors) == []


def test_a_plan_reads_plus_as_a_space_unless_a_name_holds_the_plus(actors: Actors) -> None:
    # Datameer tells users to write spaces as '+' (JobService's reading); a plan's
    # duplicate check reads each reference the same way (_spelling 4-8: a 500).
    alone = {"sheets": [{"kind": "sql", "name": "out", "keep": True, "sql": "SELECT 1 AS n"}]}
    spaced = _define(actors, "/Analytics/Workbooks/my plan.wbk", JobKind.WORKBOOK, alone, "rx")
    plus = _define(actors, "/Analytics/Workbooks/q+1.wbk", JobKind.WORKBOOK, alone, "rx")
    references = ["/Analytics/Workbooks/my+plan.wbk", "Analytics/Workbooks/q+1.wbk"]
    answer = actors.call("eve", "POST", PLAN, {"fileIds": references})
    assert answer.status_code == 200, answer.text
    members = answer.json()["execution-plan"]
    assert sorted((m["job-configuration-name"], m["job-configuration-id"]) for m in members) == [
        ("my plan", spaced),
        ("q+1", plus),
    ]
    assert _active(actors) == sorted([(spaced, "eve"), (plus, "eve")])


def test_a_job_left_out_of_a_plan_does_not_end_the_walk_of_its_siblings(actors: Actors) -> None:
    # _with_data_driven_downstream 26 (`continue` to `break`): a manual workbook and an
    # export job read `a` too and come first (lower ids); the data-driven one after them
    # is still planned.
    wbk = JobKind.WORKBOOK
    a = _define(actors, A, JobKind.IMPORT, {"source": {"kind": "csv", "path": "/x.csv"}}, "rx")
    _define(actors, "/Analytics/Workbooks/m.wbk", wbk, _workbook(A, "MANUAL"), "rx")
    export = {"source": {"importJob": A}, "sink": {"kind": "csv", "path": "/tmp/never.csv"}}
    _define(actors, "/Data/ExportJobs/e.exp", JobKind.EXPORT, export, "rx")
    later = _define(actors, "/Analytics/Workbooks/d.wbk", wbk, _workbook(A, "DATA_DRIVEN"), "rx")
    answer = actors.call("eve", "POST", PLAN, {"fileIds": [A]})
    assert answer.status_code == 200, answer.text
    members = answer.json()["execution-plan"]
    assert [(m["job-configuration-name"], m["job-configuration-id"]) for m in members] == [
        ("a", a),
        ("d", later),
    ]
    assert _active(actors) == [(a, "eve"), (later, "eve")]


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_two_plans_taking_the_same_jobs_in_opposite_orders_both_run(node: Node) -> None:
    """A plan locks its jobs in id order before it creates their runs: no deadlock.

    Plan one is b, c, a and plan two a, b (independent jobs keep the given
    order). A single trigger of c holds c while plan one starts, and plan two
    starts once plan one waits for it. Taking the jobs in plan order instead,
    plan one would hold b and plan two a, and plan one, given c, would wait for
    a while plan two waits for b: PostgreSQL would end one plan with an error.
    """
    acting = admin(node)
    config = {}
    for name in "abc":
        path = f"/Data/ImportJobs/{name}.imp"
        source = {"source": {"kind": "csv", "path": f"/{name}.csv"}}
        config[name] = node.jobs.define_job(path, JobKind.IMPORT, source, "admin")[1]
    planned: list[list[str]] = []
    raised: list[Exception] = []

    def plan(names: str) -> None:
        references = [f"/Data/ImportJobs/{name}.imp" for name in names]
        try:
            members = plans.sequential_trigger(node.jobs, references, acting, {})
        except Exception as error:  # handed to the test thread, which asserts on it
            raised.append(error)
            return
        planned.append([m.name.removesuffix(".imp") for m in members])

    def two_plans() -> None:
        first = threading.Thread(target=plan, args=("bca",))
        first.start()
        for _ in range(3000):  # until plan one waits for the trigger of c
            if pg_sessions(node, "wait_event_type = 'Lock'") or not first.is_alive():
                break
            time.sleep(0.01)
        plan("ab")
        first.join(60)
        assert not first.is_alive()

    def trigger_c(conn: Connection) -> None:
        ex.create_execution(conn, config["c"], TriggerType.RESTAPI, "admin")

    # Committed once both plans wait: plan one for c, plan two for plan one.
    raised += race_an_open_transaction(node, trigger_c, two_plans, waiters=2)
    assert raised == []
    assert sorted(planned) == [["a", "b"], ["b", "c", "a"]]
    with node.store.db.read() as conn:
        runs = sorted((e.job_configuration_id, e.trigger_type) for e in active_executions(conn))
    seq, rest = TriggerType.SEQUENTIAL, TriggerType.RESTAPI
    a, b, c = (config[name].id for name in "abc")
    assert runs == sorted([(a, seq), (a, seq), (b, seq), (b, seq), (c, rest), (c, seq)])
