"""Sequential plans in the store: ordering, release, cancellation, all-or-nothing."""

from __future__ import annotations

import os

import pytest

from datamill.bootstrap import Node
from datamill.domain.status import JobStatus, TriggerType
from datamill.errors import InvalidInput, NotFound
from datamill.services.plans import sequential_trigger
from datamill.store.executions import active_executions
from datamill.store.queue import Outcome
from tests.helpers import admin, define, execution, password_hash

A = "/Data/ImportJobs/a.imp"
B = "/Analytics/Workbooks/b.wbk"
C = "/Analytics/Workbooks/c.wbk"
D = "/Analytics/Workbooks/d.wbk"


def _workbook(*sources: tuple[str, str | None], mode: str = "DATA_DRIVEN") -> dict[str, object]:
    sheets: list[dict[str, object]] = []
    for index, (path, sheet) in enumerate(sources):
        source = {"importJob": path} if sheet is None else {"workbook": path, "sheet": sheet}
        sheets.append({"kind": "data", "name": f"s{index}", "source": source})
    sheets.append({"kind": "sql", "name": "out", "keep": True, "sql": "SELECT * FROM s0"})
    return {"triggering": {"mode": mode}, "sheets": sheets}


@pytest.fixture
def diamond(node: Node) -> None:
    """A feeds B and C, which both feed D; B, C, D are data-driven."""
    define(node, A, {"source": {"kind": "csv", "path": "/nowhere.csv"}})
    define(node, B, _workbook((A, None)))
    define(node, C, _workbook((A, None)))
    define(node, D, _workbook((B, "out"), (C, "out")))


def _finish(node: Node, execution_id: int, status: JobStatus) -> None:
    queue = node.store.queue
    queue.register_worker(f"w{execution_id}", "host", os.getpid())
    claimed = queue.claim_next_execution(f"w{execution_id}")
    assert claimed is not None and claimed.id == execution_id
    assert queue.finish(claimed, f"w{execution_id}", Outcome(status))


def test_a_diamond_is_planned_in_order_and_released_step_by_step(node: Node, diamond: None) -> None:
    plan = sequential_trigger(node.jobs, [A], admin(node), {"x": "1"})
    names = [m.name for m in plan]
    assert names[0] == "a.imp" and names[-1] == "d.wbk" and set(names[1:3]) == {"b.wbk", "c.wbk"}
    ids = {m.name: m.execution_id for m in plan}
    assert all(i is not None for i in ids.values())
    status = {n: execution(node, i).status for n, i in ids.items()}  # type: ignore[arg-type]
    assert status == {
        "a.imp": JobStatus.QUEUED,
        "b.wbk": JobStatus.WAITING_FOR_OTHER_JOB,
        "c.wbk": JobStatus.WAITING_FOR_OTHER_JOB,
        "d.wbk": JobStatus.WAITING_FOR_OTHER_JOB,
    }
    first = execution(node, ids["a.imp"])  # type: ignore[arg-type]
    assert first.trigger_type is TriggerType.SEQUENTIAL and first.variables == {"x": "1"}

    _finish(node, ids["a.imp"], JobStatus.COMPLETED)  # type: ignore[arg-type]
    assert execution(node, ids["b.wbk"]).status is JobStatus.QUEUED  # type: ignore[arg-type]
    assert execution(node, ids["c.wbk"]).status is JobStatus.QUEUED  # type: ignore[arg-type]
    _finish(node, ids["b.wbk"], JobStatus.COMPLETED_WITH_WARNINGS)  # type: ignore[arg-type]
    assert execution(node, ids["d.wbk"]).status is JobStatus.WAITING_FOR_OTHER_JOB  # type: ignore[arg-type]
    _finish(node, ids["c.wbk"], JobStatus.COMPLETED)  # type: ignore[arg-type]
    assert execution(node, ids["d.wbk"]).status is JobStatus.QUEUED  # type: ignore[arg-type]


def test_a_failure_cancels_exactly_its_downstream(node: Node, diamond: None) -> None:
    plan = {m.name: m.execution_id for m in sequential_trigger(node.jobs, [A], admin(node), {})}
    _finish(node, plan["a.imp"], JobStatus.COMPLETED)  # type: ignore[arg-type]
    _finish(node, plan["b.wbk"], JobStatus.ERROR)  # type: ignore[arg-type]
    canceled = execution(node, plan["d.wbk"])  # type: ignore[arg-type]
    assert canceled.status is JobStatus.CANCELED
    assert canceled.started_at is None
    assert "b.wbk" in (canceled.error_message or "") and "ERROR" in (canceled.error_message or "")
    assert execution(node, plan["c.wbk"]).status is JobStatus.QUEUED  # type: ignore[arg-type]


def test_stopping_a_waiting_member_cancels_its_downstream(node: Node, diamond: None) -> None:
    plan = {m.name: m.execution_id for m in sequential_trigger(node.jobs, [B], admin(node), {})}
    assert set(plan) == {"b.wbk", "d.wbk"}
    node.jobs.stop(B, admin(node))
    assert execution(node, plan["b.wbk"]).status is JobStatus.CANCELED  # type: ignore[arg-type]
    assert execution(node, plan["d.wbk"]).status is JobStatus.CANCELED  # type: ignore[arg-type]


def test_no_permission_on_a_downstream_member_triggers_nothing(node: Node, diamond: None) -> None:
    node.store.users.create("eve", password_hash("pw"), roles=("ANALYST",))
    with node.store.db.read() as conn:
        eve = node.store.users.get(conn, "eve")
    assert eve is not None
    with node.store.db.write() as conn:
        for path in (A, B, C):
            entry = node.store.files.find(conn, path)
            assert entry is not None
            node.store.files.set_others_flags(
                conn, entry.id, readable=True, writable=False, executable=True
            )
    # Eve may run A, B and C but cannot even see D, which is downstream. Her plan
    # leaves D out and never names it (issue #10, F10: others' workbooks never
    # block or leak through a plan); D still runs, as its owner, when its data changes.
    plan = sequential_trigger(node.jobs, [A], eve, {})
    assert sorted(m.name for m in plan) == ["a.imp", "b.wbk", "c.wbk"]
    ids = {m.name: m.execution_id for m in plan}
    for name in ("a.imp", "b.wbk", "c.wbk"):
        _finish(node, ids[name], JobStatus.COMPLETED)  # type: ignore[arg-type]
    with node.store.db.read() as conn:
        (run,) = active_executions(conn)
    assert (run.trigger_type, run.triggered_by) == (TriggerType.DATA_DRIVEN, "admin")
    assert run.status is JobStatus.QUEUED
    assert node.jobs.status(D, admin(node)).execution == run


def test_a_cycle_is_refused_and_names_its_members(node: Node) -> None:
    define(node, "/Analytics/Workbooks/x.wbk", _workbook(("/Analytics/Workbooks/y.wbk", "out")))
    define(node, "/Analytics/Workbooks/y.wbk", _workbook(("/Analytics/Workbooks/x.wbk", "out")))
    with pytest.raises(InvalidInput, match=r"cycle: .*x\.wbk.*y\.wbk"):
        sequential_trigger(node.jobs, ["/Analytics/Workbooks/x.wbk"], admin(node), {})


def test_unknown_files_trigger_nothing(node: Node, diamond: None) -> None:
    with pytest.raises(NotFound):
        sequential_trigger(node.jobs, [A, "/Data/ImportJobs/missing.imp"], admin(node), {})
    assert node.jobs.status(A, admin(node)).execution is None
