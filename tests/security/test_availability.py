"""One user cannot stop the server for others: schedules, housekeeping, bounds (F5, F6, F14).

eve saves what she likes into her own definitions; whatever it is, it is either
refused with a 400 naming the member, or it fails alone: other users'
schedules still fire, housekeeping still expires, lost workers are still
detected.
"""

from __future__ import annotations

import copy
import datetime as dt
import threading
import time
from typing import Any

import pytest
import sqlalchemy as sa

from datamill.domain.status import JobStatus, TriggerType
from datamill.store import data as data_store
from datamill.store import tables as t
from datamill.store.db import utcnow
from datamill.store.triggers import fire_due_schedules
from datamill.worker.worker import Worker
from tests.helpers import execution
from tests.security.conftest import Actors

C = t.job_configurations
E = t.executions


def _workbook(path: str, cron: str | None = None, **extra: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "path": path,
        "sheets": [{"kind": "sql", "name": "x", "sql": "SELECT 1 AS one", "keep": True}],
        **extra,
    }
    if cron is not None:
        document["triggering"] = {"mode": "SCHEDULED", "cron": cron}
    return document


def _create(actors: Actors, user: str, document: dict[str, Any]) -> int:
    response = actors.call(user, "POST", "/rest/workbook", document)
    assert response.status_code == 200, response.text
    return int(response.json()["configuration-id"])


def _set(actors: Actors, config_id: int, **values: Any) -> None:
    with actors.node.store.db.write() as conn:
        conn.execute(sa.update(C).where(C.c.id == config_id).values(**values))


def _config(actors: Actors, config_id: int) -> Any:
    with actors.node.store.db.read() as conn:
        return conn.execute(sa.select(C).where(C.c.id == config_id)).one()


def _runs(actors: Actors, config_id: int) -> list[Any]:
    with actors.node.store.db.read() as conn:
        return list(
            conn.execute(
                sa.select(E).where(E.c.job_configuration_id == config_id).order_by(E.c.id)
            ).all()
        )


def _until(condition: Any, timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout}s")
        time.sleep(0.05)


# ---------------------------------------------------------------- crons when saved


BAD_CRONS = [
    ("0 0 30 2 *", "no date within 5 years"),  # F14: was a 500
    ("0 0 31 4 *", "no date within 5 years"),
    ("0 0 1 1 1#5", "no date within 5 years"),
    ("0 0 1 1 * 0 2027", "exactly 5 fields"),  # F5: a year field
    ("0 0 1 1 * 2027", "exactly 5 fields"),
    ("* * * * * *", "exactly 5 fields"),  # a seconds field
    ("@reboot", "not supported"),
    ("@never", "not supported"),
    ("0 0 * * 5L", "not a valid cron"),
    ("0 0 LW * *", "not a valid cron"),
    ("*/0 * * * *", "not a valid cron"),
    ("0 0 * * 8", "not a valid cron"),
    ("H * * * *", "not a valid cron"),
    ("\u0663 * * * *", "holds only"),  # an Arabic-Indic digit
    ("0\x00 * * * *", "holds only"),
    ("0 0\t* * *", "holds only"),
    ("1," * 70 + "2 * * * *", "at most 128"),
    ("", "needs a 'cron'"),
]


@pytest.mark.parametrize(("cron", "reason"), BAD_CRONS)
def test_a_cron_without_a_next_date_or_odd_is_a_400_when_saved(
    actors: Actors, cron: str, reason: str
) -> None:
    response = actors.call("eve", "POST", "/rest/workbook", _workbook("/Users/eve/s.wbk", cron))
    assert response.status_code == 400, response.text
    assert "cron" in response.json()["reason"] and reason in response.json()["reason"]
    # The update route refuses it the same way.
    config_id = _create(actors, "eve", _workbook("/Users/eve/ok.wbk", "0 6 * * *"))
    update = actors.call(
        "eve", "PUT", f"/rest/workbook/{config_id}", _workbook("/Users/eve/ok.wbk", cron)
    )
    assert update.status_code == 400, update.text


GOOD_CRONS = [
    "0 6 * * 1-5",
    "@daily",
    "@HOURLY",
    "0 0 L * *",
    "0 0 1W * *",
    "0 0 * * 1#2",
    "0 0 29 2 *",  # once in four years is within the bound
    "30 2 * * *",  # skipped or doubled by DST, never an error
    "0-59 0-23 1-31 1-12 0-7",
    "0 0 1 jan mon",
]


@pytest.mark.parametrize("cron", GOOD_CRONS)
def test_odd_but_sound_crons_are_accepted_with_a_next_run(actors: Actors, cron: str) -> None:
    _create(actors, "eve", _workbook("/Users/eve/s.wbk", cron))
    state = actors.call("eve", "GET", "/api/job-execution/Users/eve/s.wbk/schedule").json()
    assert state["enabled"] is True and state["next-run"], state
    assert state["cron"] == cron and "reason" not in state


def test_the_schedule_route_obeys_read_permission(actors: Actors) -> None:
    _create(actors, "eve", _workbook("/Users/eve/s.wbk", "0 6 * * *"))
    hidden = actors.call("bob", "GET", "/api/job-execution/Users/eve/s.wbk/schedule")
    missing = actors.call("bob", "GET", "/api/job-execution/Users/eve/nothing.wbk/schedule")
    assert hidden.status_code == missing.status_code == 404
    assert hidden.json() == missing.json()
    _create(actors, "eve", _workbook("/Users/eve/m.wbk"))
    state = actors.call("eve", "GET", "/api/job-execution/Users/eve/m.wbk/schedule").json()
    assert state["mode"] == "MANUAL" and state["enabled"] is False and "reason" not in state


# ---------------------------------------------------------------- a bad schedule fails alone


def test_a_schedule_with_no_next_date_is_disabled_and_the_others_go_on(
    running: Actors, worker: Worker
) -> None:
    actors = running
    good = _create(actors, "bob", _workbook("/Users/bob/good.wbk", "* * * * *"))
    bad = _create(actors, "eve", _workbook("/Users/eve/bad.wbk", "0 6 * * *"))
    nullcron = _create(actors, "eve", _workbook("/Users/eve/null.wbk", "0 6 * * *"))
    never = _create(actors, "eve", _workbook("/Users/eve/never.wbk", "0 6 * * *"))
    past = utcnow() - dt.timedelta(minutes=5)
    # As stored before crons were checked when saved: a year field (F5), a
    # date that never comes (F14), no cron at all.
    _set(actors, bad, cron="0 0 1 1 * 0 2027", next_fire_at=past)
    _set(actors, never, cron="0 0 30 2 *", next_fire_at=past)
    _set(actors, nullcron, cron=None, next_fire_at=past)
    _set(actors, good, next_fire_at=past)

    def fired(config_id: int) -> bool:
        return any(r.trigger_type == TriggerType.SCHEDULER.value for r in _runs(actors, config_id))

    _until(lambda: fired(good) and fired(bad), what="both schedules fired")
    _until(lambda: _config(actors, bad).next_fire_at is None, what="the bad one disabled")
    assert _config(actors, nullcron).next_fire_at is None
    _until(lambda: _config(actors, never).next_fire_at is None, what="the never one disabled")
    never_state = actors.call("eve", "GET", "/api/job-execution/Users/eve/never.wbk/schedule")
    assert "no date within 5 years" in never_state.json()["reason"]
    assert _config(actors, good).next_fire_at > utcnow()
    # The bad one fired once, then stopped; the good one keeps firing.
    first = _runs(actors, good)[0].id
    _until(lambda: execution(actors.node, first).status.is_terminal, what="the first run ended")
    _set(actors, good, next_fire_at=utcnow() - dt.timedelta(seconds=1))
    _until(lambda: len(_runs(actors, good)) >= 2, what="the good schedule fired again")
    assert len(_runs(actors, bad)) == 1
    assert execution(actors.node, first).trigger_type is TriggerType.SCHEDULER

    state = actors.call("eve", "GET", "/api/job-execution/Users/eve/bad.wbk/schedule").json()
    assert state["enabled"] is False and state["next-run"] is None
    assert state["reason"].startswith("the schedule is disabled: ")
    assert "5 fields" in state["reason"]
    # Saving a sound cron again enables it.
    assert (
        actors.call(
            "eve", "PUT", f"/rest/workbook/{bad}", _workbook("/Users/eve/bad.wbk", "0 6 * * *")
        ).status_code
        == 200
    )
    again = actors.call("eve", "GET", "/api/job-execution/Users/eve/bad.wbk/schedule").json()
    assert again["enabled"] is True and "reason" not in again


def _lost_on_another_host(actors: Actors, run_id: int) -> None:
    """Make `run_id` RUNNING on a worker of another host whose heartbeat stopped an hour ago."""
    store = actors.node.store
    store.queue.register_worker("gone", "elsewhere.invalid", 1)
    with store.db.write() as conn:
        conn.execute(
            sa.update(t.workers)
            .where(t.workers.c.id == "gone")
            .values(heartbeat_at=utcnow() - dt.timedelta(hours=1))
        )
        conn.execute(
            sa.update(E)
            .where(E.c.id == run_id)
            .values(status=JobStatus.RUNNING.value, worker_id="gone", finished_at=None)
        )


def test_lost_worker_detection_goes_on_past_a_bad_schedule(running: Actors, worker: Worker) -> None:
    actors = running
    bad = _create(actors, "eve", _workbook("/Users/eve/bad.wbk", "0 6 * * *"))
    _set(actors, bad, cron="0 0 1 1 * 0 2027", next_fire_at=utcnow() - dt.timedelta(minutes=1))
    _until(lambda: _config(actors, bad).next_fire_at is None, what="the bad one disabled")
    # retries 0: the lost run ends in ERROR at once instead of being started again.
    victim = _create(actors, "bob", _workbook("/Users/bob/v.wbk", retries=0))
    run_id = actors.call("bob", "POST", "/api/job-execution/Users/bob/v.wbk/trigger").json()[
        "job-execution-id"
    ]
    _until(lambda: execution(actors.node, run_id).status.is_terminal, what="bob's run ended")
    # A worker on another host went silent while it ran bob's job.
    _lost_on_another_host(actors, run_id)
    _until(
        lambda: execution(actors.node, run_id).status is JobStatus.ERROR,
        what="the lost run ended in ERROR",
    )
    assert victim


# ---------------------------------------------------------------- housekeeping fails alone


def _run_twice(actors: Actors, user: str, path: str) -> None:
    for _ in range(2):
        run_id = actors.call(user, "POST", f"/api/job-execution{path}/trigger").json()[
            "job-execution-id"
        ]
        _until(lambda run_id=run_id: execution(actors.node, run_id).status.is_terminal)
        assert execution(actors.node, run_id).status is JobStatus.COMPLETED


def _visible_data(actors: Actors, config_id: int) -> int:
    with actors.node.store.db.read() as conn:
        return int(
            conn.execute(
                sa.select(sa.func.count())
                .select_from(t.data)
                .where(t.data.c.job_configuration_id == config_id, t.data.c.deleted.is_(False))
            ).scalar_one()
        )


@pytest.mark.parametrize("stored", [2**63, 2**64 + 7, -5, "many", None, 10**40])
def test_a_huge_stored_keep_count_does_not_stop_housekeeping(
    running: Actors, worker: Worker, stored: Any
) -> None:
    actors = running
    bad = _create(actors, "eve", _workbook("/Users/eve/keep.wbk", minKeepCount=1))
    good = _create(actors, "bob", _workbook("/Users/bob/keep.wbk", minKeepCount=1))
    _run_twice(actors, "eve", "/Users/eve/keep.wbk")
    _run_twice(actors, "bob", "/Users/bob/keep.wbk")
    # As stored before the bound existed (F6): the definition cannot be saved now.
    with actors.node.store.db.write() as conn:
        definition = copy.deepcopy(
            conn.execute(sa.select(C.c.definition).where(C.c.id == bad)).scalar_one()
        )
        definition["minKeepCount"] = stored
        conn.execute(sa.update(C).where(C.c.id == bad).values(definition=definition))
    worker.housekeep()
    assert _visible_data(actors, good) == 1
    # A huge count keeps everything, a count below 1 keeps 1, a nonsensical one is skipped.
    assert _visible_data(actors, bad) == (1 if stored == -5 else 2)


# ---------------------------------------------------------------- bounds when saved


HUGE = [
    ({"minKeepCount": 2**63}, "minKeepCount"),
    ({"minKeepCount": 10**400}, "minKeepCount"),
    ({"minKeepCount": 1_000_001}, "minKeepCount"),
    ({"minKeepCount": 0}, "minKeepCount"),
    ({"description": "x" * 10_001}, "description"),
    ({"variables": {f"v{i}": {} for i in range(501)}}, "variables"),
    ({"variables": {"v": {"default": 2**63}}}, "variables.v.default"),
    ({"variables": {"v": {"default": -(2**63) - 1}}}, "variables.v.default"),
    ({"variables": {"v": {"default": "x" * 10_001}}}, "variables.v.default"),
    ({"variables": {"v" * 64: {}}}, "variable name"),
    (
        {"sheets": [{"kind": "sql", "name": "x", "sql": "SELECT 1" + " " * 200_000, "keep": True}]},
        "sql",
    ),
    (
        {
            "sheets": [
                {"kind": "sql", "name": f"s{i}", "sql": "SELECT 1 AS one", "keep": True}
                for i in range(501)
            ]
        },
        "sheets",
    ),
    (
        {
            "sheets": [
                {"kind": "data", "name": "d", "source": {"importJob": "/x" * 3000}, "keep": True}
            ]
        },
        "importJob",
    ),
]


@pytest.mark.parametrize(("extra", "member"), HUGE)
def test_numbers_and_lengths_past_their_bounds_are_a_400_naming_the_member(
    actors: Actors, extra: dict[str, Any], member: str
) -> None:
    document = {**_workbook("/Users/eve/big.wbk"), **extra}
    response = actors.call("eve", "POST", "/rest/workbook", document)
    assert response.status_code == 400, response.text[:500]
    assert member in response.json()["reason"]


IMPORT_HUGE = [
    ({"source": {"kind": "csv", "path": "/f/" + "a" * 5000}}, "source.csv.path"),
    ({"source": {"kind": "csv", "path": "/f/a.csv", "delimiter": ";;"}}, "delimiter"),
    ({"source": {"kind": "csv", "path": "/f/a.csv"}, "minKeepCount": 2**63}, "minKeepCount"),
    (
        {
            "source": {"kind": "csv", "path": "/f/a.csv"},
            "schema": [{"name": f"c{i}", "type": "BIGINT"} for i in range(5001)],
        },
        "schema",
    ),
    (
        {"source": {"kind": "database", "url": "sqlite:///" + "a" * 5000, "table": "t"}},
        "url",
    ),
]


@pytest.mark.parametrize(("extra", "member"), IMPORT_HUGE)
def test_import_job_bounds_are_a_400_naming_the_member(
    actors: Actors, extra: dict[str, Any], member: str
) -> None:
    response = actors.call("eve", "POST", "/rest/import-job", {"path": "/Users/eve/i.imp", **extra})
    assert response.status_code == 400, response.text[:500]
    assert member in response.json()["reason"]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("start=99999999999999999999", 400),
        ("start=2147483648", 400),
        ("start=2147483647", 200),
        ("length=10001", 400),
        ("length=1e400", 400),
        ("start=-0", 200),
    ],
)
def test_history_paging_is_bounded(actors: Actors, query: str, expected: int) -> None:
    config_id = _create(actors, "eve", _workbook("/Users/eve/h.wbk"))
    response = actors.call("eve", "GET", f"/rest/job-configuration/job-history/{config_id}?{query}")
    assert response.status_code == expected, response.text


# ---------------------------------------------------------------- a stalled database


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_a_stalled_database_does_not_freeze_the_event_loop(actors: Actors) -> None:
    _create(actors, "eve", _workbook("/Users/eve/st.wbk"))
    status = "/api/job-execution/Users/eve/st.wbk/status"
    assert actors.call("eve", "GET", status).json()["job-status"] == "_NONE"
    numeric = f"/api/job-execution/{_file_id(actors, '/Users/eve/st.wbk')}/status"
    assert actors.call("eve", "GET", numeric).status_code == 200  # credentials now cached
    order: list[str] = []
    engine = sa.create_engine(actors.node.settings.resolved_database_url)
    with engine.connect() as locker:
        transaction = locker.begin()
        # Every read of executions now waits: the fast path's query stalls.
        locker.execute(sa.text("LOCK TABLE executions IN ACCESS EXCLUSIVE MODE"))

        def stalled() -> None:
            response = actors.call("eve", "GET", numeric)
            order.append(f"status {response.status_code}")

        def waiting() -> int:
            # This test's database only: other xdist workers (scripts/test)
            # share the server and may be waiting on a lock of their own.
            return locker.execute(
                sa.text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND wait_event_type = 'Lock' AND query LIKE '%max(x.id)%'"
                )
            ).scalar_one()

        thread = threading.Thread(target=stalled)
        thread.start()
        # Until the status request's read waits on the lock (a fixed 0.3 s was
        # too short for a loaded machine: the read had not been sent yet).
        deadline = time.monotonic() + 60
        while waiting() == 0:
            assert time.monotonic() < deadline, "the status read never reached the database"
            time.sleep(0.02)
        # The event loop still serves others while the status read waits.
        assert actors.client.get("/health").status_code == 200
        order.append("health")
        # ... and it did so while the fast path's read was still waiting.
        assert waiting() == 1
        transaction.rollback()
    thread.join()
    engine.dispose()
    assert order == ["health", "status 200"]


def _file_id(actors: Actors, path: str) -> int:
    with actors.node.store.db.read() as conn:
        entry = actors.node.store.files.find(conn, path)
    assert entry is not None
    return entry.id


# ---------------------------------------------------------------- each periodic task alone


def test_a_failing_periodic_task_does_not_stop_the_others(
    running: Actors, worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    actors = running

    def broken(*_args: Any) -> Any:
        raise RuntimeError("a task that fails every time")

    # Schedules fail on every heartbeat: lost workers are still found.
    monkeypatch.setattr(worker, "fire_schedules", broken)
    # retries 0: the lost run ends in ERROR at once instead of being started again.
    _create(actors, "bob", _workbook("/Users/bob/v.wbk", retries=0))
    run_id = actors.call("bob", "POST", "/api/job-execution/Users/bob/v.wbk/trigger").json()[
        "job-execution-id"
    ]
    _until(lambda: execution(actors.node, run_id).status.is_terminal, what="bob's run ended")
    _lost_on_another_host(actors, run_id)
    _until(lambda: execution(actors.node, run_id).status is JobStatus.ERROR, what="reconciled")
    # One housekeeping task fails: expiry still happens.
    monkeypatch.setattr("datamill.worker.worker.remove_deleted_files", broken)
    keep = _create(actors, "bob", _workbook("/Users/bob/keep.wbk", minKeepCount=1))
    _run_twice(actors, "bob", "/Users/bob/keep.wbk")
    worker.housekeep()
    assert _visible_data(actors, keep) == 1


def test_the_store_clamps_a_keep_count_past_64_bits(actors: Actors) -> None:
    keep = _create(actors, "bob", _workbook("/Users/bob/keep.wbk"))
    with actors.node.store.db.write() as conn:
        for count in (2**63, 2**64, 10**40, 0, -(2**70)):
            data_store.expire_beyond_keep_count(conn, keep, count, utcnow())


def test_a_schedule_that_raises_is_skipped_and_the_others_fire(actors: Actors) -> None:
    good = _create(actors, "bob", _workbook("/Users/bob/good.wbk", "0 6 * * *"))
    bad = _create(actors, "eve", _workbook("/Users/eve/bad.wbk", "0 7 * * *"))
    past = utcnow() - dt.timedelta(minutes=5)
    _set(actors, bad, next_fire_at=past - dt.timedelta(minutes=1))  # fires first
    _set(actors, good, next_fire_at=past)
    later = utcnow() + dt.timedelta(hours=1)

    def next_after(cron: str, _now: dt.datetime) -> dt.datetime:
        if cron == "0 7 * * *":
            raise RuntimeError("a schedule that cannot be computed")
        return later

    with actors.node.store.db.write() as conn:
        created = fire_due_schedules(conn, utcnow(), next_after)
    assert [r.id for r in _runs(actors, good)] == created
    assert _runs(actors, bad) == []  # its savepoint rolled back, and it stays due
    assert _config(actors, good).next_fire_at == later
    assert _config(actors, bad).next_fire_at < utcnow()
