"""Job history pages by run number must equal plain OFFSET paging over ids, holes and all."""

from __future__ import annotations

import datetime as dt
import random
import threading
import time

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from datamill.bootstrap import Node
from datamill.domain.records import JobConfiguration
from datamill.domain.status import JobKind, JobStatus, TriggerType
from datamill.store import executions as ex
from datamill.store import jobs as job_store
from datamill.store import tables as t
from datamill.store.history import drop_history_before
from tests.helpers import admin, define

E, G, D = t.executions, t.execution_gaps, t.data
CSV = {"source": {"kind": "csv", "path": "/x.csv"}}
EPOCH = dt.datetime(2026, 1, 1)
LENGTHS = (1, 3, 10_000)


def _define(node: Node, path: str) -> JobConfiguration:
    _entry, config = node.jobs.define_job(path, JobKind.IMPORT, CSV, "admin")
    return config


def _offset_page(
    conn: sa.Connection, config_id: int, start: int, length: int
) -> list[tuple[int, JobStatus]]:
    """The reference: what the endpoint answered before run numbers existed."""
    rows = conn.execute(
        sa.select(E.c.id, E.c.status)
        .where(E.c.job_configuration_id == config_id)
        .order_by(E.c.id.desc())
        .offset(start)
        .limit(length)
    ).all()
    return [(r.id, JobStatus(r.status)) for r in rows]


def _check_gaps(conn: sa.Connection, config_id: int) -> None:
    """execution_gaps holds exactly the missing run numbers, merged, with true kept_before."""
    runs = sorted(
        conn.execute(sa.select(E.c.run_number).where(E.c.job_configuration_id == config_id))
        .scalars()
        .all()
    )
    ids_order = (
        conn.execute(
            sa.select(E.c.run_number).where(E.c.job_configuration_id == config_id).order_by(E.c.id)
        )
        .scalars()
        .all()
    )
    assert list(ids_order) == runs, "run numbers follow ids"
    gaps = conn.execute(
        sa.select(G.c.first_run, G.c.last_run, G.c.kept_before)
        .where(G.c.job_configuration_id == config_id)
        .order_by(G.c.first_run)
    ).all()
    missing = set(range(1, (runs[-1] if runs else 0) + 1)) - set(runs)
    recorded: set[int] = set()
    for index, gap in enumerate(gaps):
        assert gap.first_run <= gap.last_run
        if index:
            assert gap.first_run > gaps[index - 1].last_run + 1, "gaps are merged"
        recorded.update(range(gap.first_run, gap.last_run + 1))
        assert gap.kept_before == sum(1 for r in runs if r < gap.first_run)
    assert recorded == missing


def _compare_all_pages(node: Node, config_ids: list[int], rng: random.Random) -> int:
    compared = 0
    with node.store.db.read() as conn:
        for config_id in config_ids:
            _check_gaps(conn, config_id)
            total = len(_offset_page(conn, config_id, 0, 10**6))
            starts = {0, 1, 2, total - 1, total, total + 1, 10**12}
            starts |= {rng.randrange(total + 2) for _ in range(3)}
            for start in sorted(s for s in starts if s >= 0):
                for length in LENGTHS:
                    expected = _offset_page(conn, config_id, start, length)
                    assert ex.execution_history(conn, config_id, start, length) == expected, (
                        config_id,
                        start,
                        length,
                    )
                    compared += 1
    return compared


def test_pages_equal_offset_paging_through_runs_finishes_and_drops(node: Node) -> None:
    user = admin(node)
    rng = random.Random(20261128)
    paths = [f"/Data/ImportJobs/h{i}.imp" for i in range(3)]
    configs = {p: _define(node, p) for p in paths}
    clock = [0]  # minutes after EPOCH; finish times come from this fake clock

    def finish_some() -> None:
        with node.store.db.write() as conn:
            open_ids = (
                conn.execute(
                    sa.select(E.c.id).where(E.c.status == JobStatus.QUEUED.value).order_by(E.c.id)
                )
                .scalars()
                .all()
            )
            for execution_id in open_ids:
                if rng.random() < 0.8:
                    clock[0] += 1
                    status = rng.choice([JobStatus.COMPLETED, JobStatus.COMPLETED, JobStatus.ERROR])
                    conn.execute(
                        sa.update(E)
                        .where(E.c.id == execution_id)
                        .values(
                            status=status.value, finished_at=EPOCH + dt.timedelta(minutes=clock[0])
                        )
                    )
                    if status is JobStatus.COMPLETED and rng.random() < 0.4:
                        # Data whose files still exist keeps its execution: holes in the middle.
                        config_id = conn.execute(
                            sa.select(E.c.job_configuration_id).where(E.c.id == execution_id)
                        ).scalar_one()
                        conn.execute(
                            sa.insert(D).values(
                                job_configuration_id=config_id,
                                execution_id=execution_id,
                                created_at=EPOCH,
                                record_count=1,
                                sheets={"data": 1},
                                location=f"/kept/{execution_id}",
                                deleted=False,
                            )
                        )

    def forget_some_data() -> None:
        # Files removed later: old executions below existing gaps become droppable.
        with node.store.db.write() as conn:
            kept = conn.execute(sa.select(D.c.id).where(D.c.location != "")).scalars().all()
            for data_id in rng.sample(kept, min(len(kept), rng.randint(1, 2))):
                conn.execute(sa.update(D).where(D.c.id == data_id).values(location=""))

    compared = 0
    actions = ["trigger", "finish", "drop", "forget"]
    for step in range(45):
        action = rng.choices(actions, weights=[3, 2, 3, 1])[0]
        if action == "trigger" or step < 3:
            for _ in range(rng.randint(1, 6)):
                node.jobs.trigger(rng.choice(paths), user)
        elif action == "finish":
            finish_some()
        elif action == "forget":
            forget_some_data()
        else:
            # Half the time everything that may go goes; else an older cutoff.
            minutes = clock[0] + 1 if rng.random() < 0.5 else rng.randint(0, clock[0])
            cutoff = EPOCH + dt.timedelta(minutes=minutes)
            with node.store.db.write() as conn:
                drop_history_before(conn, cutoff)
        compared += _compare_all_pages(node, [c.id for c in configs.values()], rng)
    with node.store.db.read() as conn:
        holes = conn.execute(sa.select(sa.func.count()).select_from(G)).scalar_one()
        middle = conn.execute(
            sa.select(sa.func.count()).select_from(G).where(G.c.first_run > 1)
        ).scalar_one()
    assert holes and middle, "the run must have made holes, some of them in the middle"
    assert compared > 1000
    # The service call behind the endpoint answers the same.
    config = configs[paths[0]]
    with node.store.db.read() as conn:
        expected = _offset_page(conn, config.id, 3, 4)
    assert node.jobs.history(config.id, user, 3, 4) == expected


def test_dropping_runs_below_newer_gaps_shifts_those_gaps(node: Node) -> None:
    user = admin(node)
    config = _define(node, "/Data/ImportJobs/a.imp")
    ids = [node.jobs.trigger("/Data/ImportJobs/a.imp", user).id for _ in range(8)]
    with node.store.db.write() as conn:
        conn.execute(sa.update(E).values(status="COMPLETED", finished_at=EPOCH))
        for kept in (ids[2], ids[5]):
            conn.execute(
                sa.insert(D).values(
                    job_configuration_id=config.id,
                    execution_id=kept,
                    created_at=EPOCH,
                    record_count=1,
                    sheets={},
                    location=f"/kept/{kept}",
                    deleted=False,
                )
            )
        assert drop_history_before(conn, EPOCH + dt.timedelta(days=1)) == 5
        _check_gaps(conn, config.id)  # runs 3, 6 and 8 remain: gaps 1-2, 4-5, 7
        conn.execute(sa.update(D).where(D.c.execution_id == ids[2]).values(location=""))
        assert drop_history_before(conn, EPOCH + dt.timedelta(days=1)) == 1
        gaps = conn.execute(
            sa.select(G.c.first_run, G.c.last_run, G.c.kept_before).order_by(G.c.first_run)
        ).all()
        assert [tuple(g) for g in gaps] == [(1, 5, 0), (7, 7, 1)]
        for start in range(4):
            for length in (1, 2, 5):
                expected = _offset_page(conn, config.id, start, length)
                assert ex.execution_history(conn, config.id, start, length) == expected
        assert [i for i, _ in ex.execution_history(conn, config.id, 0, 5)] == [ids[7], ids[5]]


def test_deleting_a_job_forgets_its_gaps(node: Node) -> None:
    # On SQLite a new configuration may reuse a deleted one's id: stale gaps would shift its pages.
    user = admin(node)
    define(node, "/Data/ImportJobs/a.imp", CSV)
    ids = [node.jobs.trigger("/Data/ImportJobs/a.imp", user).id for _ in range(6)]
    with node.store.db.write() as conn:
        conn.execute(
            sa.update(E).where(E.c.id.in_(ids[:4])).values(status="COMPLETED", finished_at=EPOCH)
        )
        assert drop_history_before(conn, EPOCH + dt.timedelta(days=1)) == 4
        config_id = conn.execute(
            sa.select(E.c.job_configuration_id).where(E.c.id == ids[5])
        ).scalar_one()
        assert conn.execute(sa.select(sa.func.count()).select_from(G)).scalar_one() == 1
        job_store.delete_job(conn, node.store.jobs.get(conn, config_id))
        assert conn.execute(sa.select(sa.func.count()).select_from(G)).scalar_one() == 0
    define(node, "/Data/ImportJobs/b.imp", CSV)
    fresh = [node.jobs.trigger("/Data/ImportJobs/b.imp", user).id for _ in range(3)]
    with node.store.db.read() as conn:
        new_config = conn.execute(
            sa.select(E.c.job_configuration_id).where(E.c.id == fresh[0])
        ).scalar_one()
        assert conn.execute(
            sa.select(E.c.run_number).where(E.c.id.in_(fresh)).order_by(E.c.id)
        ).scalars().all() == [1, 2, 3]
        assert ex.execution_history(conn, new_config, 0, 10) == [
            (i, JobStatus.QUEUED) for i in fresh[::-1]
        ]
        assert ex.execution_history(conn, new_config, 2, 10) == [(fresh[0], JobStatus.QUEUED)]


def test_the_database_refuses_a_duplicate_run_number(node: Node) -> None:
    user = admin(node)
    define(node, "/Data/ImportJobs/a.imp", CSV)
    first = node.jobs.trigger("/Data/ImportJobs/a.imp", user)
    second = node.jobs.trigger("/Data/ImportJobs/a.imp", user)
    with pytest.raises(IntegrityError), node.store.db.write() as conn:
        conn.execute(sa.update(E).where(E.c.id == second.id).values(run_number=1))
    assert first.id < second.id


@pytest.mark.postgres
def test_concurrent_triggers_of_one_job_get_distinct_run_numbers(
    node: Node, database_url: str
) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite serialises writers with BEGIN IMMEDIATE")
    user = admin(node)
    config = _define(node, "/Data/ImportJobs/a.imp")

    # A second trigger waits for the first one's transaction, then numbers after it.
    done = threading.Event()
    with node.store.db.write() as conn:
        first = ex.create_execution(conn, config, TriggerType.RESTAPI, "admin")

        def other() -> None:
            with node.store.db.write() as other_conn:
                ex.create_execution(other_conn, config, TriggerType.RESTAPI, "admin")
            done.set()

        thread = threading.Thread(target=other)
        thread.start()
        time.sleep(0.3)
        assert not done.is_set(), "the second trigger must wait for the first to commit"
    thread.join(10)
    assert done.is_set()

    # Many at once, through the service.
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def hammer() -> None:
        try:
            barrier.wait()
            for _ in range(6):
                node.jobs.trigger("/Data/ImportJobs/a.imp", user)
        except BaseException as error:  # reported by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for each in threads:
        each.start()
    for each in threads:
        each.join(60)
    assert errors == []
    with node.store.db.read() as conn:
        runs = conn.execute(
            sa.select(E.c.id, E.c.run_number)
            .where(E.c.job_configuration_id == config.id)
            .order_by(E.c.id)
        ).all()
        assert [r.run_number for r in runs] == list(range(1, 2 + 8 * 6 + 1))
        assert runs[0].id == first
        ids = [r.id for r in runs]
        for start in (0, 1, 17, 49, 50, 51):
            assert [i for i, _ in ex.execution_history(conn, config.id, start, 5)] == ids[::-1][
                start : start + 5
            ]
