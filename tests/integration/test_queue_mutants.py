"""Publishing at the end of a run (store/queue.py) as its mutation run showed untested."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest
import sqlalchemy as sa

from datamill.bootstrap import Node
from datamill.domain import runlog as rl
from datamill.domain.records import Execution
from datamill.domain.status import JobKind, JobStatus
from datamill.services.plans import sequential_trigger
from datamill.store import data as data_store
from datamill.store import executions as ex
from datamill.store import tables as t
from datamill.store.queue import NO_RETRIES, WORKER_LOST, Outcome
from datamill.store.runlog import read_log
from datamill.store.triggers import fire_data_driven
from tests.helpers import admin
from tests.helpers import config_id as _config_id
from tests.helpers import race_an_open_transaction as _race

CSV_IMPORT = {"source": {"kind": "csv", "path": "/tmp/x.csv"}}


def _run_and_publish(node: Node, path: str, content: bytes) -> Path:
    """Trigger the job at `path`, finish its run with one staged file; the data's folder."""
    node.jobs.trigger(path, admin(node))
    queue = node.store.queue
    execution = queue.claim_next_execution("w1")
    assert execution is not None
    staging = node.settings.staging_root / str(execution.id)
    staging.mkdir(parents=True)
    (staging / "data.parquet").write_bytes(content)
    outcome = Outcome(JobStatus.COMPLETED, sheets={"data": 1}, staging_dir=str(staging))
    assert queue.finish(execution, "w1", outcome)
    config_id = _config_id(node, path)
    with node.store.db.read() as conn:
        result = data_store.newest_data(conn, config_id)
    assert result is not None
    return Path(result.location)


def test_each_publish_gets_its_own_folder_under_the_data_root_replacing_any_leftover(
    node: Node,
) -> None:
    root = node.settings.resolved_data_root
    for name in ("a", "b"):
        node.jobs.define_job(f"/Data/ImportJobs/{name}.imp", JobKind.IMPORT, CSV_IMPORT, "admin")
    node.store.queue.register_worker("w1", "host", os.getpid())
    first = _run_and_publish(node, "/Data/ImportJobs/a.imp", b"first")
    assert first.parent == root and first.name.isdigit()
    # A folder left where the next data goes (a publish whose commit never happened).
    leftover = root / str(int(first.name) + 1)
    leftover.mkdir()
    (leftover / "stale.parquet").write_bytes(b"stale")
    second = _run_and_publish(node, "/Data/ImportJobs/b.imp", b"second")
    assert second == leftover
    assert sorted(p.name for p in second.iterdir()) == ["data.parquet"]
    assert (second / "data.parquet").read_bytes() == b"second"
    assert (first / "data.parquet").read_bytes() == b"first"


def test_a_publish_is_logged_with_its_data_and_a_run_without_sheets_publishes_nothing(
    node: Node,
) -> None:
    """The run log names the data a run published; an export (no sheets kept) publishes none."""
    node.jobs.define_job("/Data/ImportJobs/a.imp", JobKind.IMPORT, CSV_IMPORT, "admin")
    node.store.queue.register_worker("w1", "host", os.getpid())
    folder = _run_and_publish(node, "/Data/ImportJobs/a.imp", b"rows")
    with node.store.db.read() as conn:
        run = ex.newest_execution(conn, _config_id(node, "/Data/ImportJobs/a.imp"))
        assert run is not None
        events = [(e.event, e.detail) for e in read_log(conn, run.id)]
    assert (rl.PUBLISHED, {"data-id": int(folder.name), "sheets": {"data": 1}}) in events
    # A run that kept no sheet, whose worker staged to a folder all the same.
    node.jobs.define_job("/Data/ImportJobs/b.imp", JobKind.IMPORT, CSV_IMPORT, "admin")
    node.jobs.trigger("/Data/ImportJobs/b.imp", admin(node))
    claimed = node.store.queue.claim_next_execution("w1")
    assert claimed is not None
    staging = node.settings.staging_root / str(claimed.id)
    staging.mkdir(parents=True)
    outcome = Outcome(
        JobStatus.COMPLETED, success_count=3, failure_count=1, staging_dir=str(staging)
    )
    assert node.store.queue.finish(claimed, "w1", outcome)
    with node.store.db.read() as conn:
        assert data_store.newest_data(conn, _config_id(node, "/Data/ImportJobs/b.imp")) is None
        logged = [(e.event, e.detail) for e in read_log(conn, claimed.id)]
    assert logged == [(rl.FINISHED, {"status": "COMPLETED", "records": 3, "dropped": 1})]


def test_the_reconciling_worker_keeps_its_runs_even_when_its_row_is_gone(node: Node) -> None:
    """Another node may have dropped this worker's row; reconciling must not lose its own runs."""
    node.jobs.define_job("/Data/ImportJobs/a.imp", JobKind.IMPORT, CSV_IMPORT, "admin")
    node.jobs.trigger("/Data/ImportJobs/a.imp", admin(node))
    queue = node.store.queue
    queue.register_worker("w1", "host", os.getpid())
    claimed = queue.claim_next_execution("w1")
    assert claimed is not None
    queue.unregister_worker("w1")
    lost = queue.reconcile_lost_workers(
        dt.timedelta(hours=1),
        is_local_pid_alive=lambda _pid: True,
        hostname="host",
        alive_worker_id="w1",
    )
    assert lost == []
    with node.store.db.read() as conn:
        assert ex.get_execution(conn, claimed.id).status is JobStatus.RUNNING


def _plan_of_an_import_and_its_reader(node: Node) -> dict[str, int]:
    """A plan of a.imp and its DATA_DRIVEN reader b.wbk (waiting for a); member name -> run."""
    upstream, downstream = "/Data/ImportJobs/a.imp", "/Analytics/Workbooks/b.wbk"
    node.jobs.define_job(upstream, JobKind.IMPORT, CSV_IMPORT, "admin")
    sheets = [
        {"kind": "data", "name": "s0", "source": {"importJob": upstream}},
        {"kind": "sql", "name": "out", "keep": True, "sql": "SELECT * FROM s0"},
    ]
    node.jobs.define_job(
        downstream,
        JobKind.WORKBOOK,
        {"triggering": {"mode": "DATA_DRIVEN"}, "sheets": sheets},
        "admin",
    )
    plan = sequential_trigger(node.jobs, [upstream], admin(node), {})
    return {m.name: m.execution_id for m in plan if m.execution_id is not None}


def test_a_run_lost_with_its_worker_cancels_its_waiting_downstream(node: Node) -> None:
    """A sequential plan's member whose worker died ends in ERROR and its downstream is canceled."""
    plan = _plan_of_an_import_and_its_reader(node)
    queue = node.store.queue
    queue.register_worker("w1", "host", os.getpid())
    claimed = queue.claim_next_execution("w1")
    assert claimed is not None and claimed.id == plan["a.imp"]
    lost = queue.reconcile_lost_workers(
        dt.timedelta(hours=1), is_local_pid_alive=lambda _pid: False, hostname="host"
    )
    assert lost == [claimed.id]
    with node.store.db.read() as conn:
        ended = ex.get_execution(conn, claimed.id)
        waiting = ex.get_execution(conn, plan["b.wbk"])
    assert (ended.status, ended.progress) == (JobStatus.ERROR, None)
    assert waiting.status is JobStatus.CANCELED
    assert "a.imp" in (waiting.error_message or "") and "ERROR" in (waiting.error_message or "")


def _reconcile_dead_host(node: Node, staging_root: str | None = None) -> list[int]:
    """Reconcile as another node would: every worker registered on 'host' has died."""
    return node.store.queue.reconcile_lost_workers(
        dt.timedelta(hours=1),
        is_local_pid_alive=lambda _pid: False,
        hostname="host",
        staging_root=staging_root,
    )


SOURCES = ("/Data/ImportJobs/x.imp", "/Data/ImportJobs/y.imp")
READER = "/Analytics/Workbooks/d.wbk"


def _define_two_sources_and_a_reader(node: Node) -> None:
    """Imports x and y, and a DATA_DRIVEN workbook d reading both."""
    for path in SOURCES:
        node.jobs.define_job(path, JobKind.IMPORT, CSV_IMPORT, "admin")
    sheets = [
        {"kind": "data", "name": "s0", "source": {"importJob": SOURCES[0]}},
        {"kind": "data", "name": "s1", "source": {"importJob": SOURCES[1]}},
        {"kind": "sql", "name": "out", "keep": True, "sql": "SELECT * FROM s0, s1"},
    ]
    node.jobs.define_job(
        READER, JobKind.WORKBOOK, {"triggering": {"mode": "DATA_DRIVEN"}, "sheets": sheets}, "admin"
    )


def _status(node: Node, execution_id: int) -> JobStatus:
    with node.store.db.read() as conn:
        return ex.get_execution(conn, execution_id).status


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_a_run_that_finishes_while_it_is_declared_lost_stays_completed_and_cancels_nothing(
    node: Node,
) -> None:
    """PostgreSQL: the finish commits between reconciliation's look and its update.

    The worker's heartbeat is late (here: its host is "dead"), yet it finishes
    its run. Reconciliation saw the run RUNNING; once the finish commits, its
    update must not overwrite COMPLETED with ERROR, nor cancel the plan's
    downstream run (still waiting for y), nor log a loss the run never had.
    """
    _define_two_sources_and_a_reader(node)
    plan = sequential_trigger(node.jobs, list(SOURCES), admin(node), {})
    runs = {m.name: m.execution_id for m in plan}
    queue = node.store.queue
    queue.register_worker("w1", "host", os.getpid())
    claimed = queue.claim_next_execution("w1")
    assert claimed is not None and claimed.id == runs["x.imp"]
    lost: list[list[int]] = []
    raised = _race(
        node,
        lambda conn: queue._end(conn, claimed, "w1", Outcome(JobStatus.COMPLETED)),
        lambda: lost.append(_reconcile_dead_host(node)),
    )
    assert raised == []
    assert lost == [[]]
    assert _status(node, runs["x.imp"]) is JobStatus.COMPLETED
    assert _status(node, runs["d.wbk"]) is JobStatus.WAITING_FOR_OTHER_JOB
    with node.store.db.read() as conn:
        events = [(e.event, e.detail.get("status")) for e in read_log(conn, runs["x.imp"])]
    assert events == [(rl.FINISHED, JobStatus.COMPLETED.value)]


def _x_running_on_w1_beside_a_reader(node: Node) -> Execution:
    """x, y and their reader d defined; x triggered and claimed by worker w1 on 'host'."""
    _define_two_sources_and_a_reader(node)
    x_run = node.jobs.trigger(SOURCES[0], admin(node)).id
    node.store.queue.register_worker("w1", "host", os.getpid())
    claimed = node.store.queue.claim_next_execution("w1")
    assert claimed is not None and claimed.id == x_run
    return claimed


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_a_run_lost_while_its_reader_is_being_fired_cancels_that_reader(node: Node) -> None:
    """PostgreSQL: y succeeds and fires d, which waits for x; x's worker is lost meanwhile.

    Reconciliation ends x in ERROR only after the firing has committed (it
    takes the lock of x's downstream first), so it sees d waiting for x and
    cancels it; else d would wait for a run that has already ended, for ever.
    """
    claimed = _x_running_on_w1_beside_a_reader(node)
    x_run = claimed.id
    fired: list[int] = []
    raised = _race(
        node,
        lambda conn: fired.extend(fire_data_driven(conn, _config_id(node, SOURCES[1]))),
        lambda: _reconcile_dead_host(node),
    )
    assert raised == [] and fired == []  # d waited for x: nothing was startable
    assert _status(node, x_run) is JobStatus.ERROR
    with node.store.db.read() as conn:
        d_runs = conn.execute(
            sa.select(t.executions.c.status).where(
                t.executions.c.job_configuration_id == _config_id(node, READER)
            )
        ).scalars()
        assert list(d_runs) == [JobStatus.CANCELED.value]


def _trigger_retried_import(node: Node, retries: int) -> int:
    """Trigger an import retried up to `retries` times, at once; its run's id."""
    node.jobs.define_job(
        "/Data/ImportJobs/a.imp",
        JobKind.IMPORT,
        {**CSV_IMPORT, "retries": retries, "retryDelay": 0},
        "admin",
    )
    return node.jobs.trigger("/Data/ImportJobs/a.imp", admin(node)).id


def test_a_worker_retries_only_a_run_it_still_holds_and_logs_why(node: Node) -> None:
    """retry_later: another worker's run is left alone; a retry logs the attempt's events first."""
    run = _trigger_retried_import(node, retries=2)
    queue = node.store.queue
    for worker in ("w1", "w2"):
        queue.register_worker(worker, "host", os.getpid())
    first = queue.claim_next_execution("w1")
    assert first is not None and first.id == run
    assert queue.hand_back(run, "w1")
    second = queue.claim_next_execution("w2")
    assert second is not None and second.id == run
    # w1's late failure report: not its run any more.
    assert queue.retry_later(first, "w1", "late", NO_RETRIES, [rl.pending(rl.READ, rows=1)]) is None
    with node.store.db.read() as conn:
        held = ex.get_execution(conn, run)
    assert (held.status, held.worker_id) == (JobStatus.RUNNING, "w2")
    # w2's passing failure: back to the queue, its events logged before the retry.
    verdict = queue.retry_later(second, "w2", "refused", NO_RETRIES, [rl.pending(rl.READ, rows=2)])
    assert verdict is not None and verdict.retry
    with node.store.db.read() as conn:
        queued = ex.get_execution(conn, run)
        events = [(e.event, e.detail) for e in read_log(conn, run)]
    assert (queued.status, queued.worker_id) == (JobStatus.QUEUED, None)
    tail = events[-2:]
    assert tail[0] == (rl.READ, {"rows": 2})
    assert tail[1][0] == rl.RETRY_SCHEDULED and tail[1][1]["reason"] == "refused"
    assert (rl.READ, {"rows": 1}) not in events
    # Its retry used up: the verdict says so, and the run is left to its worker to end.
    third = queue.claim_next_execution("w2")
    assert third is not None and third.id == run
    given_up = queue.retry_later(third, "w2", "refused again", NO_RETRIES)
    assert given_up is not None and not given_up.retry
    assert given_up.message.startswith("refused again (given up after")
    with node.store.db.read() as conn:
        assert ex.get_execution(conn, run).status is JobStatus.RUNNING


def test_a_lost_worker_ends_only_its_own_runs(node: Node) -> None:
    """Reconciliation ends the lost worker's run in ERROR, and leaves a live worker's running."""
    for name in ("a", "b"):
        node.jobs.define_job(f"/Data/ImportJobs/{name}.imp", JobKind.IMPORT, CSV_IMPORT, "admin")
    queue = node.store.queue
    queue.register_worker("w1", "host", os.getpid())  # on 'host', whose processes all died
    queue.register_worker("w2", "elsewhere", os.getpid())  # alive, heartbeat fresh
    claimed = {}
    for name, worker in (("a", "w1"), ("b", "w2")):
        node.jobs.trigger(f"/Data/ImportJobs/{name}.imp", admin(node))
        run = queue.claim_next_execution(worker)
        assert run is not None
        claimed[name] = run.id
    # What each run has staged so far: only the lost run's goes.
    staging = node.settings.staging_root
    for run_id in claimed.values():
        (staging / str(run_id)).mkdir(parents=True)
        (staging / str(run_id) / "part.parquet").write_bytes(b"staged")
    assert _reconcile_dead_host(node, str(staging)) == [claimed["a"]]
    with node.store.db.read() as conn:
        lost, alive = (ex.get_execution(conn, claimed[name]) for name in ("a", "b"))
        alive_log = [e.event for e in read_log(conn, claimed["b"])]
    assert (lost.status, lost.error_message) == (JobStatus.ERROR, WORKER_LOST)
    assert (alive.status, alive.worker_id, alive.error_message) == (JobStatus.RUNNING, "w2", None)
    assert rl.FAILED not in alive_log and rl.FINISHED not in alive_log
    assert sorted(p.name for p in staging.iterdir()) == [str(claimed["b"])]
    assert (staging / str(claimed["b"]) / "part.parquet").read_bytes() == b"staged"


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_a_reader_fired_while_its_source_fails_does_not_wait_for_that_source(node: Node) -> None:
    """PostgreSQL: x ends in ERROR, its transaction still open, while y's success fires d.

    The finish locks x's downstream before x ends, so the firing waits for it
    and then sees x ended: d is queued at once. Without that lock the firing
    saw x still RUNNING and made d wait for it, for ever (x had ended).
    """
    claimed = _x_running_on_w1_beside_a_reader(node)
    x_run, queue = claimed.id, node.store.queue
    failed = Outcome(JobStatus.ERROR, error_message="the source went away")
    fired: list[int] = []

    def fire() -> None:
        with node.store.db.write() as conn:
            fired.extend(fire_data_driven(conn, _config_id(node, SOURCES[1])))

    raised = _race(node, lambda conn: queue._end(conn, claimed, "w1", failed), fire)
    assert raised == []
    assert _status(node, x_run) is JobStatus.ERROR
    assert len(fired) == 1
    assert _status(node, fired[0]) is JobStatus.QUEUED


def test_a_run_retried_after_its_worker_was_lost_says_which_worker_in_its_log(node: Node) -> None:
    """A lost run that may be retried goes back to the queue; its log names the lost worker."""
    run = _trigger_retried_import(node, retries=1)
    queue = node.store.queue
    queue.register_worker("w1", "host", os.getpid())
    claimed = queue.claim_next_execution("w1")
    assert claimed is not None and claimed.id == run
    assert _reconcile_dead_host(node) == [run]
    with node.store.db.read() as conn:
        queued = ex.get_execution(conn, run)
        last = read_log(conn, run)[-1]
    assert (queued.status, queued.worker_id) == (JobStatus.QUEUED, None)
    assert last.event == rl.RETRY_SCHEDULED
    assert last.detail["reason"] == f"{WORKER_LOST} (w1)"


@pytest.mark.parametrize("ending", [JobStatus.COMPLETED, JobStatus.ERROR])
def test_a_plan_member_ended_by_its_worker_settles_the_next_and_keeps_its_progress(
    node: Node, ending: JobStatus
) -> None:
    """The finish releases the plan's next member or cancels it; progress is 1.0 on success only."""
    plan = _plan_of_an_import_and_its_reader(node)
    queue = node.store.queue
    claimed = queue.claim_next_execution("w1")
    assert claimed is not None and claimed.id == plan["a.imp"]
    queue.report_progress(claimed.id, 0.5)
    assert queue.finish(claimed, "w1", Outcome(ending))
    with node.store.db.read() as conn:
        ended = ex.get_execution(conn, claimed.id)
        following = ex.get_execution(conn, plan["b.wbk"])
        b_runs = conn.execute(
            sa.select(sa.func.count()).where(
                t.executions.c.job_configuration_id == following.job_configuration_id
            )
        ).scalar_one()
    assert b_runs == 1  # the plan's run; the reader is not fired a second time
    if ending is JobStatus.COMPLETED:
        assert (ended.status, ended.progress) == (JobStatus.COMPLETED, 1.0)
        assert following.status is JobStatus.QUEUED
    else:
        assert (ended.status, ended.progress) == (JobStatus.ERROR, None)
        assert following.status is JobStatus.CANCELED


def test_a_source_finished_by_its_worker_fires_its_data_driven_reader(node: Node) -> None:
    """Outside any plan: a successful import's finish queues a run of the workbook reading it."""
    node.jobs.define_job("/Data/ImportJobs/z.imp", JobKind.IMPORT, CSV_IMPORT, "admin")
    _define_two_sources_and_a_reader(node)  # x's configuration id is not its run's id
    x_run = node.jobs.trigger(SOURCES[0], admin(node)).id
    y_run = node.jobs.trigger(SOURCES[1], admin(node)).id
    queue = node.store.queue
    for run_id in (x_run, y_run):
        claimed = queue.claim_next_execution("w1")
        assert claimed is not None and claimed.id == run_id
        assert queue.finish(claimed, "w1", Outcome(JobStatus.COMPLETED))
    with node.store.db.read() as conn:
        d_runs = conn.execute(
            sa.select(t.executions.c.status, t.executions.c.triggered_by).where(
                t.executions.c.job_configuration_id == _config_id(node, READER)
            )
        ).all()
    # x fired d, which then waited for y (running); y's end released it.
    assert [tuple(row) for row in d_runs] == [(JobStatus.QUEUED.value, "admin")]


def test_prepare_sees_the_claimed_run_inside_the_claims_transaction(node: Node) -> None:
    """`prepare` gets the claim's connection and run (the worker records the inputs there)."""
    node.jobs.define_job("/Data/ImportJobs/a.imp", JobKind.IMPORT, CSV_IMPORT, "admin")
    run = node.jobs.trigger("/Data/ImportJobs/a.imp", admin(node)).id
    claimed = node.store.queue.claim_and_prepare(
        "w1", lambda conn, execution: ex.get_execution(conn, execution.id).worker_id
    )
    assert claimed is not None
    assert (claimed[0].id, claimed[1]) == (run, "w1")


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_a_claim_passes_over_a_run_another_worker_is_claiming(node: Node) -> None:
    """PostgreSQL: while another worker's claim holds x's run, this worker starts y's at once.

    The claim's search skips rows other claims hold (SKIP LOCKED). Without
    that, this worker would pick x's run as well, wait for the other claim,
    and then start x's run itself: two workers on one run's claim, and y's
    run left waiting although a slot was free.
    """
    for path in SOURCES:
        node.jobs.define_job(path, JobKind.IMPORT, CSV_IMPORT, "admin")
    x_run, y_run = (node.jobs.trigger(path, admin(node)).id for path in SOURCES)
    queue = node.store.queue
    queue.register_worker("w2", "host", os.getpid())
    claimed: list[Execution | None] = []

    def hold_x(conn: sa.Connection) -> None:
        # What another worker's claim of x's run holds until it commits.
        locked = sa.select(t.executions.c.id).where(t.executions.c.id == x_run).with_for_update()
        assert conn.execute(locked).scalar_one() == x_run

    raised = _race(node, hold_x, lambda: claimed.append(queue.claim_next_execution("w2")))
    assert raised == []
    assert [c.id if c is not None else None for c in claimed] == [y_run]
    assert _status(node, x_run) is JobStatus.QUEUED


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_a_claim_that_meets_another_running_start_of_its_job_claims_the_next_job_instead(
    node: Node,
) -> None:
    """PostgreSQL: a claim whose start collides on "one RUNNING per job" tries again.

    The database's unique index (one RUNNING execution per configuration) is
    the last line behind the claim's search: another transaction can make a
    run of x RUNNING that this claim's snapshot does not see (here: x's
    failed run set RUNNING again, uncommitted). This claim then picks x's
    queued run, its start waits on the index and fails once the other commits.
    Giving up there would leave y's run waiting with a slot free; the claim
    searches again and starts y's run.
    """
    for path in SOURCES:
        node.jobs.define_job(path, JobKind.IMPORT, CSV_IMPORT, "admin")
    queue = node.store.queue
    queue.register_worker("w1", "host", os.getpid())
    node.jobs.trigger(SOURCES[0], admin(node))
    first = queue.claim_next_execution("w1")
    assert first is not None
    assert queue.finish(first, "w1", Outcome(JobStatus.ERROR, error_message="boom"))
    x_run, y_run = (node.jobs.trigger(path, admin(node)).id for path in SOURCES)
    claimed: list[Execution | None] = []

    def start_x_elsewhere(conn: sa.Connection) -> None:
        executions = t.executions
        conn.execute(
            sa.update(executions)
            .where(executions.c.id == first.id)
            .values(status=JobStatus.RUNNING.value)
        )

    raised = _race(
        node, start_x_elsewhere, lambda: claimed.append(queue.claim_next_execution("w1"))
    )
    assert raised == []
    assert [c.id if c is not None else None for c in claimed] == [y_run]
    assert _status(node, x_run) is JobStatus.QUEUED
