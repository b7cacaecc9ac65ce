"""The Store contract, run against SQLite and PostgreSQL alike."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest

from datamill.bootstrap import Node
from datamill.domain.status import JobKind, JobStatus, TriggerType
from datamill.errors import AlreadyExists, InvalidDefinition
from datamill.store import data as data_store
from datamill.store import executions as ex
from datamill.store.queue import WORKER_LOST, Outcome

CSV_IMPORT = {"source": {"kind": "csv", "path": "/tmp/x.csv"}}


def _admin(node: Node):  # type: ignore[no-untyped-def]
    with node.store.db.read() as conn:
        return node.store.users.get(conn, "admin")


def test_four_id_sequences_are_independent(node: Node) -> None:
    entry, config = node.jobs.define_job(
        "/Data/ImportJobs/a.imp", JobKind.IMPORT, CSV_IMPORT, "admin"
    )
    execution = node.jobs.trigger(entry.path, _admin(node))
    # Folders take file ids too, so the first job's file id is past the default tree.
    assert config.id == 1
    assert entry.id > config.id
    assert execution.id == 1
    assert execution.file_id == entry.id
    assert execution.job_configuration_id == config.id


def test_a_file_is_found_by_id_uuid_and_path(node: Node) -> None:
    entry, _ = node.jobs.define_job("/Data/ImportJobs/b c.imp", JobKind.IMPORT, CSV_IMPORT, "admin")
    with node.store.db.read() as conn:
        for reference in (str(entry.id), entry.uuid, entry.path, "/Data//ImportJobs/b c.imp/"):
            found = node.store.files.find(conn, reference)
            assert found is not None and found.id == entry.id
        assert node.store.files.find(conn, "/Data/ImportJobs/nope.imp") is None
        assert node.store.files.find(conn, "99999999") is None


def test_duplicate_paths_are_refused(node: Node) -> None:
    node.jobs.define_job("/Data/ImportJobs/a.imp", JobKind.IMPORT, CSV_IMPORT, "admin")
    with pytest.raises(AlreadyExists, match="already exists"):
        node.jobs.define_job("/Data/ImportJobs/a.imp", JobKind.IMPORT, CSV_IMPORT, "admin")


def test_invalid_definitions_name_the_member(node: Node) -> None:
    with pytest.raises(InvalidDefinition, match=r"source\.csv\.delimiter"):
        node.jobs.define_job(
            "/Data/ImportJobs/a.imp",
            JobKind.IMPORT,
            {"source": {"kind": "csv", "path": "/x", "delimiter": ";;"}},
            "admin",
        )


def test_claims_take_the_oldest_and_never_two_of_one_configuration(node: Node) -> None:
    admin = _admin(node)
    a, _ = node.jobs.define_job("/Data/ImportJobs/a.imp", JobKind.IMPORT, CSV_IMPORT, "admin")
    b, _ = node.jobs.define_job("/Data/ImportJobs/b.imp", JobKind.IMPORT, CSV_IMPORT, "admin")
    first_a = node.jobs.trigger(a.path, admin)
    second_a = node.jobs.trigger(a.path, admin)
    first_b = node.jobs.trigger(b.path, admin)
    queue = node.store.queue
    queue.register_worker("w1", "host", os.getpid())
    claimed = [queue.claim_next_execution("w1") for _ in range(3)]
    assert [c.id if c else None for c in claimed] == [first_a.id, first_b.id, None]
    assert claimed[0] is not None and claimed[0].status is JobStatus.RUNNING
    assert queue.finish(claimed[0], "w1", Outcome(JobStatus.COMPLETED))
    nxt = queue.claim_next_execution("w1")
    assert nxt is not None and nxt.id == second_a.id


def test_finish_publishes_data_with_the_terminal_status(node: Node, tmp_path: Path) -> None:
    admin = _admin(node)
    a, config = node.jobs.define_job("/Data/ImportJobs/a.imp", JobKind.IMPORT, CSV_IMPORT, "admin")
    node.jobs.trigger(a.path, admin)
    queue = node.store.queue
    queue.register_worker("w1", "host", os.getpid())
    execution = queue.claim_next_execution("w1")
    assert execution is not None
    staging = node.settings.staging_root / str(execution.id)
    staging.mkdir(parents=True)
    (staging / "data.parquet").write_bytes(b"x")
    outcome = Outcome(
        JobStatus.COMPLETED,
        success_count=3,
        counters={"IMPORT_RECORDS": 3},
        sheets={"data": 3},
        staging_dir=str(staging),
    )
    assert queue.finish(execution, "w1", outcome)
    with node.store.db.read() as conn:
        done = ex.get_execution(conn, execution.id)
        result = data_store.newest_data(conn, config.id)
    assert done.status is JobStatus.COMPLETED and done.success_count == 3
    assert result is not None and result.record_count == 3
    assert Path(result.location, "data.parquet").read_bytes() == b"x"
    assert not staging.exists()


def test_a_worker_that_lost_its_claim_publishes_nothing(node: Node) -> None:
    admin = _admin(node)
    a, config = node.jobs.define_job("/Data/ImportJobs/a.imp", JobKind.IMPORT, CSV_IMPORT, "admin")
    node.jobs.trigger(a.path, admin)
    queue = node.store.queue
    queue.register_worker("w1", "host", os.getpid())
    execution = queue.claim_next_execution("w1")
    assert execution is not None
    lost = queue.reconcile_lost_workers(
        dt.timedelta(seconds=0), is_local_pid_alive=lambda _pid: False, hostname="host"
    )
    assert lost == [execution.id]
    staging = node.settings.staging_root / "late"
    staging.mkdir(parents=True)
    outcome = Outcome(JobStatus.COMPLETED, sheets={"data": 1}, staging_dir=str(staging))
    assert not queue.finish(execution, "w1", outcome)
    with node.store.db.read() as conn:
        after = ex.get_execution(conn, execution.id)
        assert data_store.newest_data(conn, config.id) is None
    assert after.status is JobStatus.ERROR
    assert after.error_message == WORKER_LOST


def test_stopping_a_queued_execution_cancels_it_at_once(node: Node) -> None:
    admin = _admin(node)
    a, _ = node.jobs.define_job("/Data/ImportJobs/a.imp", JobKind.IMPORT, CSV_IMPORT, "admin")
    queued = node.jobs.trigger(a.path, admin)
    stopped = node.jobs.stop(a.path, admin)
    assert stopped.id == queued.id
    assert stopped.status is JobStatus.CANCELED
    assert stopped.started_at is None and stopped.finished_at is not None
    assert queued.trigger_type is TriggerType.RESTAPI


def test_history_pages_newest_first(node: Node) -> None:
    admin = _admin(node)
    a, config = node.jobs.define_job("/Data/ImportJobs/a.imp", JobKind.IMPORT, CSV_IMPORT, "admin")
    ids = [node.jobs.trigger(a.path, admin).id for _ in range(5)]
    with node.store.db.read() as conn:
        first = ex.execution_history(conn, config.id, 0, 2)
        deep = ex.execution_history(conn, config.id, 4, 10)
    assert [i for i, _ in first] == ids[::-1][:2]
    assert [i for i, _ in deep] == [ids[0]]
    assert all(s is JobStatus.QUEUED for _, s in first)
