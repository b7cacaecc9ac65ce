"""What a run dropped, as a reader sees it: the mutants of services/runs.py the suite let live.

docs/testing.md, "Surviving mutants", services/runs.py, names the mutants each test kills.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import sqlalchemy as sa

from datamill.domain import runlog as rl
from datamill.store import runlog
from datamill.store import tables as t
from datamill.store.executions import request_stop
from datamill.store.queue import WORKER_LOST
from tests.helpers import define, orders_import, totals_workbook, write_orders_csv
from tests.integration.test_retries import _lose, _reconcile
from tests.security.conftest import Actors
from tests.security.test_run_logs import BOBS, IMP, _define, _get, _import, _run, add_dora
from tests.security.test_run_logs import world as world  # bob's running world, carol


def _queued_import_run(actors: Actors, files_root: Path) -> int:
    """admin's import job IMP over a three-row file, triggered once over HTTP; the run's id."""
    define(actors.node, IMP, orders_import(write_orders_csv(files_root / "in", rows=3)))
    answer = actors.call("admin", "POST", f"/api/job-execution{IMP}/trigger").json()
    return int(answer["job-execution-id"])


def test_a_drop_without_a_sample_is_not_said_to_withhold_one(
    world: Actors, files_root: Path
) -> None:
    # Lines that are no JSON object are dropped with no sample (the engine quotes
    # none). dora may read the job but not data: she sees the same warning as
    # bob, with nothing said to be withheld, since nothing was.
    add_dora(world)
    lines = ['{"order_id": 1, "region": "north"}', "[1, 2]", '{"order_id": 2, "region": "south"}']
    (files_root / "users" / "bob" / "orders.jsonl").write_text("\n".join(lines) + "\n")
    definition = {
        "source": {"kind": "jsonl", "location": BOBS, "path": "orders.jsonl"},
        "schema": [{"name": "order_id", "type": "BIGINT"}, {"name": "region", "type": "VARCHAR"}],
        "errorMode": "DROP_RECORD",
    }
    execution_id = _run(world, _define(world, IMP, definition))
    reason = "the line is not a JSON object"
    expected = {"message": f"dropped 1 record(s): {reason}", "count": 1, "reason": reason}
    for user in ("bob", "dora"):
        details = _get(world, user, f"/rest/job-execution/job-details/{execution_id}").json()
        assert details["warnings"] == [expected], (user, details)


def test_a_claim_that_could_not_read_its_configuration_leaves_the_version_as_claimed_before(
    world: Actors, files_root: Path
) -> None:
    # The worker logs a claim without the configuration when it could not read
    # it (worker/runlog.py `claimed`): lineage names the version the run was
    # claimed with before, and is never a 500 for it.
    write_orders_csv(files_root / "users" / "bob", rows=3)
    execution_id = _run(world, _define(world, IMP, _import()))
    lineage = _get(world, "bob", f"/api/job-execution/{execution_id}/lineage").json()
    version = lineage["job-configuration"]
    assert len(version["sha256"]) == 64
    with world.node.store.db.write() as conn:
        runlog.append(conn, execution_id, [rl.pending(rl.CLAIMED, worker="w2", attempt=2)])
    again = _get(world, "bob", f"/api/job-execution/{execution_id}/lineage")
    assert (again.status_code, again.json()["job-configuration"]) == (200, version)


def test_a_plan_member_canceled_without_starting_says_why_in_its_details_and_trace(
    actors: Actors, files_root: Path
) -> None:
    # No worker: the plan's import stays QUEUED and is stopped; its workbook,
    # waiting for it, ends CANCELED without starting, by a path that writes no
    # log event (store/plans.py). Its failure is the stored reason (spec 4.6:
    # "its details say why"), not a 500 for want of a `stopped` event.
    source, workbook = "/Data/ImportJobs/plan.imp", "/Data/Workbooks/plan.wbk"
    define(actors.node, source, orders_import(write_orders_csv(files_root / "in", rows=3)))
    define(actors.node, workbook, totals_workbook(source) | {"triggering": {"mode": "DATA_DRIVEN"}})
    plan = actors.call(
        "admin", "POST", "/api/job-execution/sequential-trigger", {"fileIds": [source]}
    )
    assert plan.status_code == 200, plan.text
    upstream, waiting = (m["job-execution-id"] for m in plan.json()["execution-plan"])
    stopped = actors.call("admin", "POST", f"/api/job-execution{source}/stop")
    assert stopped.status_code == 200, stopped.text
    reason = (
        f"Canceled without starting: {source} (execution {upstream}) of the same "
        "sequential plan ended CANCELED."
    )
    details = actors.call("admin", "GET", f"/rest/job-execution/job-details/{waiting}")
    assert details.status_code == 200, details.text
    assert (details.json()["jobStatus"], details.json()["failure"]) == (
        "CANCELED",
        {"message": reason},
    )
    # The stopped import itself names who stopped it, from its own `stopped` event.
    first = actors.call("admin", "GET", f"/rest/job-execution/job-details/{upstream}").json()
    assert first["failure"] == {"message": "Canceled before it started.", "by": "admin"}
    # A second stop that lost the race on PostgreSQL (both read QUEUED, the
    # first canceled it) logs its request after the `stopped` event: the run
    # still names who canceled it, not who asked last.
    with actors.node.store.db.write() as conn:
        runlog.append(conn, upstream, [rl.pending(rl.STOP_REQUESTED, by="eve")])
    again = actors.call("admin", "GET", f"/rest/job-execution/job-details/{upstream}").json()
    assert again["failure"] == first["failure"]
    trace = actors.call("admin", "GET", f"/job/download-trace/{waiting}")
    assert trace.status_code == 200, trace.text
    assert trace.text.endswith(f"== Failure ==\n{reason}\n")
    # A run an older server ended without a log and without a stored reason:
    # `message` is still there, and empty (docs/observability.md: always `message`).
    with actors.node.store.db.write() as conn:
        conn.execute(
            sa.update(t.executions).where(t.executions.c.id == waiting).values(error_message=None)
        )
    bare = actors.call("admin", "GET", f"/rest/job-execution/job-details/{waiting}").json()
    assert bare["failure"] == {"message": ""}


def test_a_run_that_failed_after_a_stop_was_asked_for_names_no_stopper(
    actors: Actors, files_root: Path
) -> None:
    # admin asked to stop the run, but its worker died first: it ends ERROR,
    # not CANCELED, and its failure is the worker's loss. `by` belongs to a
    # stop (docs/observability.md), so an ERROR run names nobody.
    run_id = _queued_import_run(actors, files_root)
    _lose(actors.node, run_id, "gone")
    with actors.node.store.db.write() as conn:
        request_stop(conn, run_id, by="admin")
    _reconcile(actors.node)
    details = actors.call("admin", "GET", f"/rest/job-execution/job-details/{run_id}")
    assert details.status_code == 200, details.text
    assert (details.json()["jobStatus"], details.json()["failure"]) == (
        "ERROR",
        {"message": f"{WORKER_LOST}; not retried: a stop was asked for", "worker": "gone"},
    )


def test_the_queued_event_is_seq_0_and_tailing_past_its_millisecond_leaves_it_out(
    actors: Actors, files_root: Path
) -> None:
    # The queued event is read from the run itself (docs/observability.md: `seq`
    # 0). A client tailing by time gives the time it was shown, to the
    # millisecond: a run queued in the last microsecond of that millisecond is
    # not "after" it, so it is not sent again.
    run_id = _queued_import_run(actors, files_root)
    queued_at = dt.datetime(2026, 12, 1, 13, 55, 57, 123_999)
    with actors.node.store.db.write() as conn:
        conn.execute(
            sa.update(t.executions).where(t.executions.c.id == run_id).values(created_at=queued_at)
        )
    url = f"/api/job-execution/{run_id}/log"
    queued = {
        "seq": 0,
        "time": "2026-12-01T13:55:57.123Z",
        "event": "queued",
        "by": "admin",
        "trigger": "RESTAPI",
    }
    assert actors.call("admin", "GET", url).json() == [queued]
    assert actors.call("admin", "GET", f"{url}?since=2026-12-01T13:55:57.122Z").json() == [queued]
    assert actors.call("admin", "GET", f"{url}?since=2026-12-01T13:55:57.123Z").json() == []
    # Tailing by time leaves out the stored events up to that time too.
    claimed, started = (dt.datetime(2026, 12, 1, 13, 55, 58 + i) for i in range(2))
    with actors.node.store.db.write() as conn:
        runlog.append(
            conn,
            run_id,
            [
                rl.PendingEvent(claimed, rl.CLAIMED, {"worker": "w1"}),
                rl.PendingEvent(started, rl.STARTED, {}),
            ],
        )
    tail = actors.call("admin", "GET", f"{url}?since=2026-12-01T13:55:58.000Z").json()
    assert [(e["time"], e["event"]) for e in tail] == [("2026-12-01T13:55:59.000Z", "started")]
