"""The run log in the store: bounded per run, deleted with the run, written by every ending."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import sqlalchemy as sa

from datamill.bootstrap import Node
from datamill.domain import runlog as rl
from datamill.domain.records import JobConfiguration
from datamill.domain.status import JobKind, JobStatus, TriggerType
from datamill.engine.base import PathRoots, RunRequest
from datamill.settings import Settings
from datamill.store import executions as ex
from datamill.store import jobs as job_store
from datamill.store import tables as t
from datamill.store.history import drop_history_before
from datamill.store.queue import WORKER_LOST, Outcome
from datamill.store.runlog import append, read_log
from datamill.worker.runlog import RunLog, folder_names
from datamill.worker.worker import Worker
from tests.helpers import wait_terminal

CSV = {"source": {"kind": "csv", "path": "/x.csv"}}


def _run(node: Node, path: str = "/Data/ImportJobs/log.imp") -> int:
    with node.store.db.write() as conn:
        entry = node.store.files.find(conn, path)
    if entry is None:
        entry, _ = node.jobs.define_job(path, JobKind.IMPORT, CSV, "admin")
    with node.store.db.write() as conn:
        config = node.store.jobs.for_file(conn, entry.id)
        assert config is not None
        return ex.create_execution(conn, config, TriggerType.RESTAPI, "admin")


def _numbered(count: int, start: int = 0) -> list[rl.PendingEvent]:
    return [rl.pending(rl.SHEET, sheet=f"s{i}") for i in range(start, start + count)]


def test_a_long_log_keeps_its_head_and_tail_and_counts_what_it_left_out(node: Node) -> None:
    execution_id = _run(node)
    total = 1000
    with node.store.db.write() as conn:
        # In small writes, as a long run's progress writes would make them.
        for start in range(0, total, 7):
            append(conn, execution_id, _numbered(min(7, total - start), start))
    with node.store.db.read() as conn:
        log = read_log(conn, execution_id)
    assert len(log) == rl.MAX_EVENTS
    sheets = [e.detail.get("sheet") for e in log]
    assert sheets[: rl.HEAD] == [f"s{i}" for i in range(rl.HEAD)]
    assert sheets[rl.HEAD + 1 :] == [f"s{i}" for i in range(total - rl.TAIL, total)]
    marker = log[rl.HEAD]
    assert marker.event == rl.TRUNCATED
    assert marker.detail["omitted"] == total - rl.MAX_EVENTS + 1
    assert marker.detail["message"].startswith(f"{total - rl.MAX_EVENTS + 1} event(s) left out")


def test_one_huge_write_is_bounded_too(node: Node) -> None:
    execution_id = _run(node)
    with node.store.db.write() as conn:
        append(conn, execution_id, _numbered(5000))
        append(conn, execution_id, _numbered(3, 5000))
    with node.store.db.read() as conn:
        log = read_log(conn, execution_id)
    assert len(log) == rl.MAX_EVENTS
    assert log[rl.HEAD].detail["omitted"] == 5003 - rl.MAX_EVENTS + 1
    assert log[-1].detail["sheet"] == "s5002"


def test_long_text_and_long_lists_are_cut_in_the_middle() -> None:
    event = rl.pending(rl.DROPPED, reason="x" * 10_000, sample=list(range(500)))
    reason = event.detail["reason"]
    assert len(reason) < rl.MAX_TEXT + 60
    assert "characters left out" in reason
    assert event.detail["sample"] == list(range(rl.MAX_ITEMS))


def test_logs_go_with_dropped_history_and_with_a_deleted_job(node: Node) -> None:
    old, newest = _run(node), _run(node)
    other = _run(node, "/Data/ImportJobs/other.imp")
    with node.store.db.write() as conn:
        for execution_id in (old, newest, other):
            ex.request_stop(conn, execution_id, by="admin")
        conn.execute(
            sa.update(t.executions)
            .where(t.executions.c.id.in_([old, newest]))
            .values(finished_at=dt.datetime(2020, 1, 1))
        )
        assert drop_history_before(conn, dt.datetime(2021, 1, 1)) == 1
    with node.store.db.read() as conn:
        left = {r.execution_id for r in conn.execute(sa.select(t.run_log.c.execution_id))}
    assert left == {newest, other}
    with node.store.db.write() as conn:
        entry = node.store.files.find(conn, "/Data/ImportJobs/log.imp")
        assert entry is not None
        config = node.store.jobs.for_file(conn, entry.id)
        assert config is not None
        job_store.delete_job(conn, config)
    with node.store.db.read() as conn:
        left = {r.execution_id for r in conn.execute(sa.select(t.run_log.c.execution_id))}
    assert left == {other}


def test_hand_backs_and_lost_workers_are_logged(node: Node) -> None:
    queue = node.store.queue
    execution_id = _run(node)
    queue.register_worker("w1", "elsewhere", os.getpid())
    assert queue.claim_next_execution("w1") is not None
    assert queue.hand_back(execution_id, "w1", "the worker shut down")
    assert queue.claim_next_execution("w1") is not None
    lost = queue.reconcile_lost_workers(
        dt.timedelta(seconds=-1), is_local_pid_alive=lambda _pid: True, hostname="here"
    )
    assert lost == [execution_id]
    with node.store.db.read() as conn:
        log = read_log(conn, execution_id)
        status = ex.get_execution(conn, execution_id).status
    assert status is JobStatus.ERROR
    assert [(e.event, e.detail) for e in log] == [
        (rl.HANDED_BACK, {"worker": "w1", "reason": "the worker shut down"}),
        (rl.FAILED, {"message": WORKER_LOST, "worker": "w1"}),
        (rl.FINISHED, {"status": "ERROR"}),
    ]


def test_a_run_handed_back_and_claimed_again_is_logged_as_retried(node: Node) -> None:
    queue = node.store.queue
    execution_id = _run(node)
    queue.register_worker("w1", "elsewhere", os.getpid())
    assert queue.claim_next_execution("w1") is not None
    assert queue.hand_back(execution_id, "w1", "the worker shut down")
    worker = Worker(node.store, node.settings, node.wakeup)
    worker.start()
    try:
        ended = wait_terminal(node, execution_id)
    finally:
        worker.shutdown(grace_seconds=1.0)
    with node.store.db.read() as conn:
        log = read_log(conn, execution_id)
    names = [e.event for e in log]
    assert names[:3] == [rl.HANDED_BACK, rl.RETRIED, rl.CLAIMED]
    assert log[1].detail == {"attempt": 2}
    assert log[2].detail["attempt"] == 2 and log[2].detail["worker"] == worker.id
    # /x.csv is outside every source root: the run fails, and says why.
    assert ended.status is JobStatus.ERROR
    assert names[-2:] == [rl.FAILED, rl.FINISHED]
    assert log[-2].detail["message"] == ended.error_message


def test_the_log_names_folders_as_the_definition_does(node: Node) -> None:
    settings = node.settings
    folder = os.path.join(settings.resolved_source_roots[0], "users", "bob")
    definition = {"source": {"kind": "csv", "location": "/Users/bob/files.loc", "path": "a.csv"}}
    config = JobConfiguration(
        1, 2, JobKind.IMPORT, "a.imp", definition, "MANUAL", dt.datetime(2026, 1, 1)
    )
    request = RunRequest(
        execution_id=3,
        kind=JobKind.IMPORT,
        definition={"source": {"kind": "csv", "path": os.path.join(folder, "a.csv")}},
        inputs={},
        variables={},
        staging_dir=str(settings.staging_root / "3"),
        roots=PathRoots((folder,), ()),
    )
    run_log = RunLog(folder_names(config, request, settings))
    run_log.add(rl.pending(rl.READ, source=os.path.join(folder, "a.csv")))
    run_log.add(rl.pending(rl.FAILED_AT, source=os.path.join(folder, "a.csv")))
    failed = Outcome(
        JobStatus.ERROR,
        error_message=f"cannot write {settings.staging_root}/3/x and read "
        f"{settings.resolved_data_root}/7/data.parquet in {settings.temp_root}",
    )
    events = run_log.ending(failed).log
    assert [(e.event, e.detail) for e in events] == [
        (rl.READ, {"source": "/Users/bob/files.loc/a.csv"}),
        (
            rl.FAILED,
            {
                "source": "/Users/bob/files.loc/a.csv",
                "message": "cannot write <staging>/3/x and read <data>/7/data.parquet in <temp>",
            },
        ),
    ]


def test_the_log_names_a_symlinked_server_folder_by_its_name(tmp_path: Path) -> None:
    # The operator's spill folder is a link to another disk: a message naming
    # the folder it leads to still shows neither path.
    elsewhere = tmp_path / "spill-disk"
    elsewhere.mkdir()
    home = tmp_path / "home"
    home.mkdir()
    (home / "tmp").symlink_to(elsewhere)
    settings = Settings(home=home)
    config = JobConfiguration(
        1, 2, JobKind.WORKBOOK, "a.wbk", {"sheets": []}, "MANUAL", dt.datetime(2026, 1, 1)
    )
    request = RunRequest(
        execution_id=3,
        kind=JobKind.WORKBOOK,
        definition={"sheets": []},
        inputs={},
        variables={},
        staging_dir=str(settings.staging_root / "3"),
        roots=PathRoots((), ()),
    )
    for _ in range(2):  # the second run as the first
        run_log = RunLog(folder_names(config, request, settings))
        failed = Outcome(
            JobStatus.ERROR, error_message=f"no room in {elsewhere}/x and {home}/tmp/y"
        )
        assert (
            run_log.ending(failed).log[-1].detail["message"] == "no room in <temp>/x and <temp>/y"
        )
