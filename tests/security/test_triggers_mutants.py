"""The read check of data-driven firing (store/triggers.py) that mutation testing found untested.

A DATA_DRIVEN workbook fires after a job it reads succeeds only if its owner
may read that job (A6). The store writes services/permissions.has_access once
more in SQL for this; a group grants READ only through its `readable` flag,
and only on the file it is set on.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from datamill.bootstrap import Node
from datamill.domain.records import User
from datamill.domain.status import JobStatus, TriggerType
from datamill.store import tables as t
from datamill.store import users as user_store
from datamill.store.backlog import upstreams_of
from datamill.store.db import utcnow
from datamill.store.triggers import (
    fire_data_driven,
    fire_due_schedules,
    schedule_state,
    set_next_fire,
)
from tests.helpers import (
    config_id as _config_id,
)
from tests.helpers import (
    execution,
    orders_import,
    totals_workbook,
    write_orders_csv,
)
from tests.helpers import race_an_open_transaction as _race
from tests.integration.test_queue_mutants import (
    READER,
    SOURCES,
    _define_two_sources_and_a_reader,
)
from tests.security.conftest import Actors
from tests.security.test_owners import (
    BOB_JOB,
    _bob_shares_a_job,
    _file,
    _others,
    _runs_of,
    _workbook,
)


def _grant(
    actors: Actors, file_id: int, *, readable: bool, writable: bool, group: str = "team"
) -> None:
    with actors.node.store.db.write() as conn:
        actors.node.store.files.set_group_flags(
            conn, file_id, group, readable=readable, writable=writable, executable=True
        )


def _user(actors: Actors, name: str) -> User:
    with actors.node.store.db.read() as conn:
        user = actors.node.store.users.get(conn, name)
    assert user is not None
    return user


def _fired(actors: Actors, config_id: int) -> list[int]:
    with actors.node.store.db.write() as conn:
        return fire_data_driven(conn, config_id)


def test_a_group_grants_read_for_firing_only_with_its_read_flag_on_that_job(
    actors: Actors, files_root: Path
) -> None:
    bob_file = _bob_shares_a_job(actors, files_root)
    other_file = _bob_shares_a_job(actors, files_root, "/Data/ImportJobs/other.imp")
    _workbook(actors, "eve", "/Users/eve/g.wbk", BOB_JOB, "DATA_DRIVEN")
    for file_id in (bob_file, other_file):
        _others(actors, "bob", file_id, readable=False)
    _, _, bob_config = _file(actors, BOB_JOB)
    assert bob_config is not None
    with actors.node.store.db.write() as conn:
        user_store.insert_group(conn, "team")
        user_store.replace_groups(conn, "eve", ["team"])
        user_store.insert_group(conn, "others")

    # Read for a group eve is not in: nothing fires.
    _grant(actors, bob_file, readable=True, writable=False, group="others")
    assert _fired(actors, bob_config) == []

    # Write and execute, but not read, for eve's group: nothing fires.
    _grant(actors, bob_file, readable=False, writable=True)
    assert _fired(actors, bob_config) == []
    # Read on another of bob's jobs is no read on this one.
    _grant(actors, other_file, readable=True, writable=False)
    assert _fired(actors, bob_config) == []
    # The control: read on the job that ran fires her workbook, as hers.
    _grant(actors, bob_file, readable=True, writable=False)
    fired = _fired(actors, bob_config)
    assert [execution(actors.node, run).triggered_by for run in fired] == ["eve"]


def test_a_fired_run_waits_for_the_owners_own_private_source_still_running(
    actors: Actors, files_root: Path
) -> None:
    node = actors.node
    source = write_orders_csv(files_root / "users" / "eve", rows=2)
    jobs = ("/Users/eve/first.imp", "/Users/eve/second.imp", "/Users/eve/unrelated.imp")
    for path in jobs:
        made = actors.call(
            "eve", "POST", "/rest/import-job", {"path": path, **orders_import(source)}
        )
        assert made.status_code == 200, made.text
    document = totals_workbook(jobs[0])
    document["sheets"].insert(0, {"kind": "data", "name": "more", "source": {"importJob": jobs[1]}})
    document["triggering"] = {"mode": "DATA_DRIVEN"}
    made = actors.call("eve", "POST", "/rest/workbook", {"path": "/Users/eve/w.wbk", **document})
    assert made.status_code == 200, made.text
    # Another workbook of hers reads a third job, which runs too: no source of w.wbk.
    other = {"path": "/Users/eve/other.wbk", **totals_workbook(jobs[2])}
    assert actors.call("eve", "POST", "/rest/workbook", other).status_code == 200
    node.jobs.trigger(jobs[2], _user(actors, "eve"))
    # Her second job ran before (an ended run is nothing to wait for) and is running again
    # (private: only she and ADMIN may read it); then the first succeeds.
    eve = _user(actors, "eve")
    node.jobs.stop_execution(node.jobs.trigger(jobs[1], eve).id, eve)
    running = node.jobs.trigger(jobs[1], eve).id
    _, _, first_config = _file(actors, jobs[0])
    assert first_config is not None
    # The workbook's run waits for the second job rather than read its old data now.
    assert _fired(actors, first_config) == []
    [(waiting, status, _)] = _runs_of(actors, int(made.json()["configuration-id"]))
    assert status == JobStatus.WAITING_FOR_OTHER_JOB.value
    with node.store.db.read() as conn:
        assert upstreams_of(conn, [waiting]) == {waiting: (running,)}
    # The first job succeeding again while that run waits adds no second run.
    assert _fired(actors, first_config) == []
    assert [run for run, _, _ in _runs_of(actors, int(made.json()["configuration-id"]))] == [
        waiting
    ]


def test_a_schedule_queues_no_second_run_while_its_run_waits_and_logs_when_it_ends(
    actors: Actors, caplog: pytest.LogCaptureFixture
) -> None:
    def scheduled(path: str) -> int:
        document = {
            "path": path,
            "sheets": [{"kind": "sql", "name": "x", "sql": "SELECT 1 AS one", "keep": True}],
            "triggering": {"mode": "SCHEDULED", "cron": "0 3 * * *"},
        }
        made = actors.call("bob", "POST", "/rest/workbook", document)
        assert made.status_code == 200, made.text
        return int(made.json()["configuration-id"])

    config_id, other_id = scheduled("/Users/bob/daily.wbk"), scheduled("/Users/bob/other.wbk")
    later = utcnow() + dt.timedelta(days=1)

    def due_now_and_fire(next_after: dt.datetime | None, config: int = config_id) -> list[int]:
        with actors.node.store.db.write() as conn:
            set_next_fire(conn, config, utcnow() - dt.timedelta(minutes=1))
            return fire_due_schedules(conn, utcnow(), lambda _cron, _now: next_after)

    # Waiting already (no worker): another job's scheduled run, and a manual run of this job.
    assert len(due_now_and_fire(later, other_id)) == 1
    manual = actors.call("bob", "POST", "/api/job-execution/Users/bob/daily.wbk/trigger")
    assert manual.status_code == 200, manual.text
    # Neither is a scheduled run of this job: the slot fires it.
    [queued] = due_now_and_fire(later)
    # The next slot comes while that run still waits: it would only repeat it.
    assert due_now_and_fire(later) == []
    assert [(run, status, kind) for run, status, kind in _runs_of(actors, config_id)] == [
        (manual.json()["job-execution-id"], JobStatus.QUEUED.value, TriggerType.RESTAPI.value),
        (queued, JobStatus.QUEUED.value, TriggerType.SCHEDULER.value),
    ]
    with actors.node.store.db.read() as conn:
        assert schedule_state(conn, config_id).next_fire_at == later
    # A cron without a further date disables the schedule, and the log says which.
    with caplog.at_level(logging.WARNING, logger="datamill.store.triggers"):
        assert due_now_and_fire(None) == []
    with actors.node.store.db.read() as conn:
        assert schedule_state(conn, config_id).next_fire_at is None
    assert [r.getMessage() for r in caplog.records if r.name == "datamill.store.triggers"] == [
        f"schedule of configuration {config_id} disabled: '0 3 * * *' has no next date"
    ]


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_two_sources_succeeding_at_once_queue_one_run_of_their_reader(node: Node) -> None:
    """PostgreSQL: x's success fires d; y's, before x's commit, waits for it and adds none.

    Without the lock on d's configuration, the second firing would not see the
    first's uncommitted run and would queue a second run of d.
    """
    _define_two_sources_and_a_reader(node)
    first: list[int] = []
    second: list[int] = []

    def fire(conn: Connection, source: str, into: list[int]) -> None:
        into.extend(fire_data_driven(conn, _config_id(node, source)))

    def fire_alone() -> None:
        with node.store.db.write() as conn:
            fire(conn, SOURCES[1], second)

    raised = _race(node, lambda conn: fire(conn, SOURCES[0], first), fire_alone)
    assert raised == [] and second == []
    with node.store.db.read() as conn:
        runs = conn.execute(
            sa.select(t.executions.c.id, t.executions.c.status).where(
                t.executions.c.job_configuration_id == _config_id(node, READER)
            )
        ).all()
    assert [tuple(run) for run in runs] == [(first[0], JobStatus.QUEUED.value)]
