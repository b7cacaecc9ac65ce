"""What waiting requests learn from the server's one watcher of runs (services/waiting.py).

No Worker runs here: the runs are claimed, moved and ended through the store
as a worker would (`claim_next_execution`, `report_progress`, `finish` under a
registered worker id), so every change a waiter sees is one the test made.
The watcher re-reads at every change; the tests wait for that re-read
(`RunWatch.reads`), never for a length of time.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import threading
from collections.abc import Callable

import anyio.to_thread
import pytest
import sqlalchemy as sa
from starlette.concurrency import run_in_threadpool

from datamill.bootstrap import Node, open_node
from datamill.domain.records import Execution
from datamill.domain.status import JobKind, JobStatus
from datamill.errors import NotFound
from datamill.services.waiting import (
    GONE,
    WAIT_THREADS,
    RunState,
    RunWatch,
    Watcher,
    status_of_run,
)
from datamill.store.db import Database
from datamill.store.queue import Outcome
from datamill.worker.housekeeping import drop_old_history
from tests.helpers import admin, password_hash

CSV = {"source": {"kind": "csv", "path": "/x.csv"}}
WORKER = "w1"


def _runs(node: Node, name: str, count: int) -> list[int]:
    """One queued run of each of `count` new jobs (a job runs one run at a time)."""
    user = admin(node)
    runs = []
    for number in range(count):
        entry, _ = node.jobs.define_job(
            f"/Data/ImportJobs/{name}{number}.imp", JobKind.IMPORT, CSV, "admin"
        )
        runs.append(node.jobs.trigger(str(entry.id), user).id)
    return runs


def _claim(node: Node) -> Execution:
    claimed = node.store.queue.claim_next_execution(WORKER)
    assert claimed is not None
    return claimed


async def _until(condition: Callable[[], bool], what: str) -> None:
    """Until `condition` holds (bounded: a broken watch fails the test, not hangs it)."""
    for _ in range(3000):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never: {what}")


async def _read_after(watch: RunWatch, reads: int) -> None:
    """Until the watcher has re-read the runs more than `reads` times (once per change)."""
    await _until(lambda: watch.reads > reads, f"a re-read after {reads} reads")


async def _until_state(waiter: Watcher, run: int, state: RunState) -> None:
    """Until the waiter knows this state of the run (bounded: a broken watch fails, not hangs)."""
    for _ in range(2000):
        if waiter.states.get(run) == state:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"the waiter never learned {state} of run {run}: {waiter.states}")


async def _in_thread(func: Callable[..., object], *args: object) -> None:
    # Store writes block: made on a thread, as the worker (another thread) makes them.
    await asyncio.to_thread(func, *args)


def test_a_waiter_learns_a_running_runs_progress_as_soon_as_it_is_reported(
    node: Node, caplog: pytest.LogCaptureFixture
) -> None:
    # An events stream shows progress only when its watcher wakes it: a change
    # of progress alone must wake the waiters of that run, and no one else.
    node.store.queue.register_worker(WORKER, "host", 1)
    first, second = _runs(node, "progress", 2)
    running = _claim(node)
    assert running.id == first

    async def scenario() -> None:
        watch = RunWatch(node.store.db, recheck_seconds=3600)
        try:
            async with (
                watch.watching([first, first]) as waiter,
                watch.watching([second]) as other,
            ):
                await _read_after(watch, 0)
                if node.store.db.is_sqlite:
                    # One re-read for both (on PostgreSQL the listener's start adds one).
                    assert watch.reads == 1
                assert waiter.ids == (first,)
                assert waiter.states == {first: RunState(JobStatus.RUNNING, running.progress)}
                assert other.states == {second: RunState(JobStatus.QUEUED, None)}
                assert watch.waiting == 2
                waiter.changed.clear()
                await _in_thread(node.store.queue.report_progress, first, 0.5)
                # Then the other run ends: once its waiter knows, every re-read
                # since has seen the progress too.
                await _in_thread(_cancel_elsewhere, node, second)
                await _until_state(other, second, RunState(JobStatus.CANCELED, None))
                assert waiter.changed.is_set()
                assert waiter.states == {first: RunState(JobStatus.RUNNING, 0.5)}
                # A change of the first run alone does not wake the other's waiter.
                other.changed.clear()
                await _in_thread(node.store.queue.report_progress, first, 0.75)
                await _until_state(waiter, first, RunState(JobStatus.RUNNING, 0.75))
                assert not other.changed.is_set()
            assert watch.waiting == 0
        finally:
            watch.close()

    asyncio.run(scenario())
    _nothing_logged(caplog)


def test_a_wait_ends_when_its_last_run_ends_with_every_runs_final_state(node: Node) -> None:
    node.store.queue.register_worker(WORKER, "host", 1)
    first, second = _runs(node, "ending", 2)
    running = [_claim(node), _claim(node)]
    assert sorted(r.id for r in running) == [first, second]
    missing = max(first, second) + 100

    async def scenario() -> None:
        watch = RunWatch(node.store.db, recheck_seconds=3600)
        try:
            # A run that does not exist has ended for a waiter: answered at once.
            assert await watch.until_ended([missing], 3600) == {missing: GONE}
            wait = asyncio.ensure_future(watch.until_ended([first, second], 3600))
            await _read_after(watch, watch.reads)
            assert not wait.done()
            reads = watch.reads
            outcome = Outcome(JobStatus.COMPLETED, success_count=1)
            await _in_thread(node.store.queue.finish, running[0], WORKER, outcome)
            await _read_after(watch, reads)
            await asyncio.sleep(0)
            assert not wait.done()  # one of its two runs is still running
            await _in_thread(node.store.queue.finish, running[1], WORKER, outcome)
            states = await wait
            assert {i: s.status for i, s in states.items()} == {
                first: JobStatus.COMPLETED,
                second: JobStatus.COMPLETED,
            }
            assert watch.waiting == 0
            # A wait that runs out answers with what it knows: the run still queued.
            (queued,) = _runs(node, "queued", 1)
            assert await watch.until_ended([queued], 0.05) == {
                queued: RunState(JobStatus.QUEUED, None)
            }
        finally:
            watch.close()

    asyncio.run(scenario())


def test_a_waiter_learns_of_a_change_made_by_another_node_also_after_a_restart(
    node: Node, caplog: pytest.LogCaptureFixture
) -> None:
    # A worker in another process commits without this process's callbacks:
    # PostgreSQL relays its NOTIFY, SQLite's data_version shows its commit.
    # The server's app may be stopped (the watch closed) and started again on
    # a new event loop (a test client started again): it must still hear them.
    other = open_node(node.settings)
    watch = RunWatch(node.store.db, recheck_seconds=0.05)

    async def scenario(run: int) -> None:
        reads = watch.reads
        async with watch.watching([run]) as waiter:
            await _read_after(watch, reads)
            assert waiter.states == {run: RunState(JobStatus.QUEUED, None)}
            await _in_thread(_cancel_elsewhere, other, run)
            await _until_state(waiter, run, RunState(JobStatus.CANCELED, None))

    try:
        for name in ("before", "after"):
            (run,) = _runs(node, name, 1)
            try:
                asyncio.run(scenario(run))
            finally:
                watch.close()
    finally:
        other.store.close()
    _nothing_logged(caplog)


def test_a_run_changed_after_the_servers_loop_closed_under_an_open_stream_is_changed(
    node: Node,
) -> None:
    # The app's event loop may end while a stream still watches (a shutdown):
    # the worker or a stop that changes the run afterwards must not fail for it.
    (run,) = _runs(node, "orphaned", 1)
    watch = RunWatch(node.store.db, recheck_seconds=3600)
    loop = asyncio.new_event_loop()
    stream = watch.watching([run])
    loop.run_until_complete(stream.__aenter__())
    loop.close()
    assert watch.waiting == 1
    _cancel_elsewhere(node, run)
    with node.store.db.read() as conn:
        status = conn.execute(
            sa.text("SELECT status FROM executions WHERE id = :i"), {"i": run}
        ).scalar_one()
    assert status == JobStatus.CANCELED.value
    listener = watch._listener
    watch.close()
    # The stream's task died pending with its loop, in a reference cycle (it
    # holds the watch, the watch holds it), which the node's database holds
    # (its change callbacks) and on PostgreSQL the closed listener's thread
    # until it ends: destroyed here, so its "Task was destroyed" lands in this
    # test's log, not in whichever later test's the garbage collector picks.
    node.store.db.run_change_listeners.remove(watch._changed_elsewhere)
    if listener is not None:
        listener.join(30)
        assert not listener.is_alive()
    del stream, watch, listener
    gc.collect()


def test_a_waiter_learns_its_runs_once_the_database_answers_again(
    node: Node, caplog: pytest.LogCaptureFixture
) -> None:
    # A re-read that fails (the database away for a moment) is logged and
    # tried again: the waiting request still learns of the change, not never.
    (run,) = _runs(node, "outage", 1)

    async def scenario() -> None:
        watch = RunWatch(node.store.db, recheck_seconds=3600)
        try:
            async with watch.watching([run]) as waiter:
                await _read_after(watch, 0)
                await _in_thread(_rename_runs, node, "executions", "executions_away")
                try:
                    watch._changed_elsewhere()  # as a NOTIFY would
                    for _ in range(2000):
                        if "reading the watched runs failed" in caplog.text:
                            break
                        await asyncio.sleep(0.01)
                finally:
                    await _in_thread(_rename_runs, node, "executions_away", "executions")
                await _in_thread(_cancel_elsewhere, node, run)
                await _until_state(waiter, run, RunState(JobStatus.CANCELED, None))
        finally:
            watch.close()

    with caplog.at_level(logging.ERROR, logger="datamill.services.waiting"):
        asyncio.run(scenario())
    assert [r.getMessage() for r in caplog.records] == [
        "reading the watched runs failed; trying again"
    ]


def test_the_status_a_wait_answers_is_the_waited_runs_as_its_caller_may_see_it_then(
    node: Node,
) -> None:
    # A status request with `wait` answers, once its run ended or the wait ran
    # out, with that run (not whichever is newest), checked again for the caller.
    node.store.queue.register_worker(WORKER, "host", 1)
    user = admin(node)
    entry, _ = node.jobs.define_job("/Data/ImportJobs/status.imp", JobKind.IMPORT, CSV, "admin")
    job = str(entry.id)
    first = node.jobs.trigger(job, user).id
    running = _claim(node)
    second = node.jobs.trigger(job, user).id
    node.store.queue.report_progress(first, 0.5)

    view = status_of_run(node.jobs, job, user, first)
    assert view.file.id == entry.id
    assert view.execution is not None and view.execution.id == first
    assert view.execution.status is JobStatus.RUNNING
    # A running run carries its estimate (half done: about as long again).
    assert view.remaining_seconds is not None and view.remaining_seconds >= 0
    view = status_of_run(node.jobs, job, user, second)
    assert view.execution is not None and view.execution.id == second
    assert (view.execution.status, view.remaining_seconds) == (JobStatus.QUEUED, None)

    node.store.queue.finish(running, WORKER, Outcome(JobStatus.COMPLETED, success_count=1))
    view = status_of_run(node.jobs, job, user, first)
    assert view.execution is not None and view.execution.id == first
    assert (view.execution.status, view.remaining_seconds) == (JobStatus.COMPLETED, None)

    # The run dropped with old history meanwhile (housekeeping): the job's newest run it is.
    assert drop_old_history(node.store, 0) == 1
    view = status_of_run(node.jobs, job, user, first)
    assert view.file.id == entry.id
    assert view.execution is not None and view.execution.id == second

    # A caller who may not read the job (or lost the right meanwhile): a missing job.
    eve = node.store.users.create("eve", password_hash("pw"))
    with pytest.raises(NotFound):
        status_of_run(node.jobs, job, eve, second)
    # Once every user may read it, she learns the run, though it is not hers.
    with node.store.db.write() as conn:
        node.store.files.set_others_flags(
            conn, entry.id, readable=True, writable=False, executable=False
        )
    view = status_of_run(node.jobs, job, eve, second)
    assert view.execution is not None and view.execution.id == second


def test_waits_share_their_few_threads_fairly_and_answers_once_per_wake_up(
    node: Node, caplog: pytest.LogCaptureFixture
) -> None:
    # Waits do their thread work on WAIT_THREADS (4) threads of their own, one
    # user's at most WAIT_THREADS_PER_USER (1) at once; an answer asked for by
    # many waiters woken together is computed once, and afresh after a re-read.
    (run,) = _runs(node, "shared", 1)
    gate = threading.Event()
    lock = threading.Lock()
    running: list[str] = []
    most: dict[str, int] = {}

    def work(user: str) -> str:
        with lock:
            running.append(user)
            most["all"] = max(most.get("all", 0), len(running))
            most[user] = max(most.get(user, 0), running.count(user))
        try:
            assert gate.wait(30), "the test never let the work end"
            return user.upper()
        finally:
            with lock:
                running.remove(user)

    computed: list[int] = []

    def answer(number: int) -> int:
        computed.append(number)
        return number * 2

    async def scenario() -> None:
        watch = RunWatch(node.store.db, recheck_seconds=3600)
        try:
            users = ["eve", "eve", "eve", "ann", "bob", "cy", "dan", "fay"]
            done = asyncio.gather(*(watch.in_thread(work, u, user=u) for u in users))
            for _ in range(2000):
                if len(running) == 4:
                    break
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.2)  # room for a fifth to start, were it allowed
            assert len(running) == 4 and running.count("eve") <= 1
            gate.set()
            assert await done == [u.upper() for u in users]
            assert (most["all"], most["eve"]) == (4, 1)
            assert watch._turns == {}  # nothing kept of a user's turn once her work is done

            async with watch.watching([run]):
                await _read_after(watch, 0)
                asks = [watch.shared(("double", 21), answer, 21, user="eve") for _ in range(5)]
                assert await asyncio.gather(*asks) == [42] * 5
                assert (computed, watch.answers_built) == ([21], 1)
                reads = watch.reads
                await _in_thread(_cancel_elsewhere, node, run)
                await _read_after(watch, reads)
                assert await watch.shared(("double", 21), answer, 21, user="eve") == 42
                assert (computed, watch.answers_built) == ([21, 21], 2)
        finally:
            watch.close()

    asyncio.run(scenario())
    _nothing_logged(caplog)


def test_a_quiet_wait_costs_no_re_read_yet_hears_each_commit_of_a_worker_elsewhere(
    node: Node, caplog: pytest.LogCaptureFixture
) -> None:
    # A worker in another process claims the run, reports progress and ends
    # it, each in a commit of its own: the waiter learns each. Between them a
    # quiet wait costs nothing. On SQLite a look at the change counter that
    # finds no commit re-reads nothing (only the first look, which learns the
    # counter, does) and the looks go on while anyone waits; on PostgreSQL,
    # where NOTIFY tells of every change, the counter is never looked at,
    # however often the watch is told to (0: at every turn of its loop).
    node.store.queue.register_worker(WORKER, "host", 1)
    (run,) = _runs(node, "quiet", 1)
    other = open_node(node.settings)
    sqlite = node.store.db.is_sqlite
    watch = _ObservedWatch(node.store.db, recheck_seconds=0.01 if sqlite else 0)

    async def scenario() -> None:
        async with watch.watching([run]) as waiter:
            await _read_after(watch, 0)
            if sqlite:
                await _looks_after(watch, 1)
                reads = watch.reads
                await _looks_after(watch, 4)
                assert watch.reads == reads  # three looks found no commit: no re-read
            claimed = await asyncio.to_thread(other.store.queue.claim_next_execution, WORKER)
            assert claimed is not None and claimed.id == run
            await _until_state(waiter, run, RunState(JobStatus.RUNNING, claimed.progress))
            await _in_thread(other.store.queue.report_progress, run, 0.5)
            await _until_state(waiter, run, RunState(JobStatus.RUNNING, 0.5))
            outcome = Outcome(JobStatus.COMPLETED, success_count=1)
            await _in_thread(other.store.queue.finish, claimed, WORKER, outcome)
            await _until_state(waiter, run, RunState(JobStatus.COMPLETED, 1.0))
        if not sqlite:
            assert watch.looks == 0

    try:
        asyncio.run(scenario())
    finally:
        watch.close()
        other.store.close()
    _nothing_logged(caplog)


def test_a_waiter_leaving_while_the_runs_are_re_read_does_not_stop_the_others_wake_ups(
    node: Node, caplog: pytest.LogCaptureFixture
) -> None:
    # A client that goes away (a wait ending, a stream closed) while the watch
    # re-reads must not end the watch: the runs it read for the leaver are
    # simply nobody's now, and the waiters that stay still learn their changes.
    node.store.queue.register_worker(WORKER, "host", 1)
    first, second = _runs(node, "leaving", 2)
    assert _claim(node).id == first
    watch = _ObservedWatch(node.store.db, recheck_seconds=3600)

    async def scenario() -> None:
        async with watch.watching([first]) as waiter:
            leaver = watch.watching([second])
            await leaver.__aenter__()
            await _read_after(watch, 0)
            watch.reads_open.clear()
            watch.reading.clear()
            await _in_thread(node.store.queue.report_progress, first, 0.25)
            await _until(watch.reading.is_set, "a re-read started by the change")
            await leaver.__aexit__(None, None, None)
            watch.reads_open.set()
            await _until_state(waiter, first, RunState(JobStatus.RUNNING, 0.25))
            await _in_thread(node.store.queue.report_progress, first, 0.5)
            await _until_state(waiter, first, RunState(JobStatus.RUNNING, 0.5))
        assert watch.waiting == 0

    try:
        asyncio.run(scenario())
    finally:
        watch.reads_open.set()
        watch.close()
    _nothing_logged(caplog)


def test_a_status_wait_of_no_seconds_gets_its_answer_before_the_watch_read_anything(
    node: Node,
) -> None:
    # `?wait=0` on a run that has not ended (api/waiting.py `waited_status`):
    # the wait is over before the watch's first re-read on this event loop (a
    # server just started, or started again), and the answer is asked of
    # `shared` at once. It must be the run's status, not a 500.
    user = admin(node)
    entry, _ = node.jobs.define_job("/Data/ImportJobs/nowait.imp", JobKind.IMPORT, CSV, "admin")
    job = str(entry.id)
    run = node.jobs.trigger(job, user).id
    watch = RunWatch(node.store.db, recheck_seconds=3600)

    async def scenario() -> None:
        assert await watch.until_ended([run], 0) == {}  # over before anything was read
        key = ("status", user, job, run)
        view = await watch.shared(key, status_of_run, node.jobs, job, user, run, user="admin")
        assert view.execution is not None and view.execution.id == run
        assert view.execution.status is JobStatus.QUEUED

    try:
        asyncio.run(scenario())
    finally:
        watch.close()


def test_a_waiter_on_a_server_started_again_learns_a_commit_made_before_its_first_look(
    node: Node, caplog: pytest.LogCaptureFixture
) -> None:
    # SQLite's change counter counts per connection: a connection opened anew
    # (the server's app started again, or after a failure) starts its own
    # count, which says nothing against the count the closed one had reached.
    # A commit of another process between the new start's first read and its
    # first look at the counter must still wake the waiter, not be taken for
    # "no change" because both counts happened to be 1.
    watch = _counter_watch(node)
    (run,) = _runs(node, "restart", 1)
    other = open_node(node.settings)

    async def started_again() -> None:
        watch.looks_open.clear()
        looks = watch.looks
        async with watch.watching([run]) as waiter:
            await _read_after(watch, watch.reads)
            assert waiter.states == {run: RunState(JobStatus.QUEUED, None)}
            await _in_thread(_cancel_elsewhere, other, run)
            watch.looks_open.set()
            await _looks_after(watch, looks)
            await _until_state(waiter, run, RunState(JobStatus.CANCELED, None))

    try:
        asyncio.run(_until_looked(watch, run))
        watch.close()
        asyncio.run(started_again())
    finally:
        watch.looks_open.set()
        watch.close()
        other.store.close()
    _nothing_logged(caplog)


def test_a_change_counter_that_fails_is_logged_once_and_its_look_re_reads_the_runs(
    node: Node, caplog: pytest.LogCaptureFixture
) -> None:
    # The connection the watch looks at SQLite's change counter with fails
    # (a disk error, a closed handle): the failing look says so once in the
    # log, counts as a change (the runs are re-read at once: a commit it could
    # not see may have come), and the next look goes on with a new connection,
    # which hears another process's later commits.
    watch = _counter_watch(node)
    (run,) = _runs(node, "counter", 1)
    other = open_node(node.settings)

    async def scenario() -> None:
        async with watch.watching([run]) as waiter:
            await _looks_after(watch, 1)  # the counter looked at: its connection open
            # Looks come one at a time: the one after next has not started yet.
            failing = watch.broken_look = watch.looks + 2
            await _looks_after(watch, failing)  # it was made, and what it caused
            before, after = watch.reads_at_look[failing - 1 : failing + 1]
            assert after == before + 1  # the failing look re-read the runs
            await _in_thread(_cancel_elsewhere, other, run)
            await _until_state(waiter, run, RunState(JobStatus.CANCELED, None))

    try:
        asyncio.run(scenario())
    finally:
        watch.close()
        other.store.close()
    errors = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.getMessage() for r in errors] == [
        "reading SQLite's data_version failed; re-reading the runs"
    ]
    assert errors[0].exc_info is not None  # with what failed


def test_one_users_work_holds_one_wait_thread_however_it_keeps_arriving(node: Node) -> None:
    # One user's waits, streams and shared answers hold WAIT_THREADS_PER_USER
    # (1) of the WAIT_THREADS (4) at once, also when more of her work arrives
    # while some of it runs (her turn is kept while any of it runs or waits):
    # the other users' work is served meanwhile (attack review).
    gates: dict[str, threading.Event] = {}
    lock = threading.Lock()
    running: list[str] = []

    def work(name: str) -> str:
        with lock:
            running.append(name)
        try:
            assert gates.setdefault(name, threading.Event()).wait(60), "never let end"
            return name
        finally:
            with lock:
                running.remove(name)

    def let_end(*names: str) -> None:
        for name in names:
            gates.setdefault(name, threading.Event()).set()

    async def scenario() -> None:
        watch = RunWatch(node.store.db, recheck_seconds=3600)
        try:
            first = asyncio.ensure_future(watch.in_thread(work, "eve1", user="eve"))
            await _until(lambda: running == ["eve1"], "her first work running")
            second = asyncio.ensure_future(watch.in_thread(work, "eve2", user="eve"))
            await asyncio.sleep(0)  # her second work asked for while her first runs
            let_end("eve1")
            assert await first == "eve1"
            await _until(lambda: running == ["eve2"], "her second work running")
            # More of hers arrives while her second runs (the first two asks
            # are placed before the others' are).
            third = asyncio.ensure_future(watch.in_thread(work, "eve3", user="eve"))
            shared = asyncio.ensure_future(watch.shared(("answer",), work, "eve4", user="eve"))
            await _until(lambda: watch.answers_built == 1, "her shared answer asked for")
            await asyncio.sleep(0)
            users = ["ann", "bob", "cy"]
            others = [asyncio.ensure_future(watch.in_thread(work, u, user=u)) for u in users]
            await _until(lambda: sorted(running) == [*users, "eve2"], "the others served")
            hers = ["eve2", "eve3", "eve4"]
            let_end(*hers, *users)
            assert await asyncio.gather(second, third, shared, *others) == [*hers, *users]
        finally:
            let_end(*gates)
            watch.close()

    asyncio.run(scenario())


def test_waits_not_signed_in_yet_take_the_waits_threads_and_none_of_the_servers(
    node: Node,
) -> None:
    # A waiting request signs in on the waits' threads before its user is
    # known (api/waiting.py `_waiting_caller`). A crowd of them held there (a
    # slow sign-in) takes WAIT_THREADS (4) of them and none of the server's
    # own threads: the server's other requests' thread work still runs.
    gate = threading.Event()
    lock = threading.Lock()
    running: list[str] = []

    def sign_in(name: str) -> str:
        with lock:
            running.append(name)
        try:
            assert gate.wait(60), "the test never let the sign-ins end"
            return name.upper()
        finally:
            with lock:
                running.remove(name)

    async def scenario() -> None:
        watch = RunWatch(node.store.db, recheck_seconds=3600)
        crowd = [f"caller{n}" for n in range(WAIT_THREADS + 2)]
        # The server's own threads (starlette's run_in_threadpool), as few as the crowd.
        anyio.to_thread.current_default_thread_limiter().total_tokens = len(crowd)
        try:
            signing = asyncio.gather(*(watch.in_thread(sign_in, name) for name in crowd))
            await _until(lambda: len(running) == WAIT_THREADS, "the waits' threads all taken")
            other = asyncio.ensure_future(run_in_threadpool(str.upper, "other request"))
            await _until(other.done, "another request's thread work done")
            assert other.result() == "OTHER REQUEST"
            assert len(running) == WAIT_THREADS
            gate.set()
            assert await signing == [name.upper() for name in crowd]
        finally:
            gate.set()
            watch.close()

    asyncio.run(scenario())


def test_a_shared_answer_that_fails_after_its_askers_went_away_logs_nothing(
    node: Node, caplog: pytest.LogCaptureFixture
) -> None:
    # A shared answer goes on when its askers go away (another may still ask
    # for it until the next re-read). If it then fails, there is no one left
    # to tell: the server's log must not get asyncio's "exception was never
    # retrieved" for it.
    (run,) = _runs(node, "answer", 1)
    gate = threading.Event()

    def failing() -> None:
        assert gate.wait(60), "the test never let the answer end"
        raise NotFound("the job was deleted meanwhile")

    async def scenario() -> None:
        watch = RunWatch(node.store.db, recheck_seconds=3600)
        try:
            async with watch.watching([run]):
                await _read_after(watch, 0)
                asker = asyncio.ensure_future(watch.shared(("status",), failing, user="eve"))
                await _until(lambda: watch.answers_built == 1, "the answer asked for")
                asker.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await asker
                gate.set()
                # Its thread ends; the next re-read lets go of the wake-up's answers.
                reads = watch.reads
                await _in_thread(_cancel_elsewhere, node, run)
                await _read_after(watch, reads)
        finally:
            gate.set()
            watch.close()

    asyncio.run(scenario())
    gc.collect()
    _nothing_logged(caplog)


def test_a_closed_watch_holds_no_handle_on_the_sqlite_database(node: Node) -> None:
    # The app's shutdown closes its watch: the connection it looked at SQLite's
    # change counter with is closed then, not left open until the process
    # ends (a server started again in the same process, as tests and an
    # embedding application do, would hold one more each time).
    watch = _counter_watch(node)
    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("counts this process's open files through /proc")
    database = node.store.db.engine.url.database
    assert database is not None
    names = {os.path.realpath(database + end) for end in ("", "-wal", "-shm", "-journal")}

    def handles() -> int:
        """This process's open files on the database (or its journal)."""
        opened = (os.path.realpath(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd"))
        return sum(1 for name in opened if name in names)

    (run,) = _runs(node, "handles", 1)
    for _ in range(2):  # started, stopped, started again, stopped
        asyncio.run(_until_looked(watch, run))
        assert handles() >= 1
        watch.close()
    node.store.db.engine.dispose()  # the node's own pooled connections
    assert handles() == 0


class _ObservedWatch(RunWatch):
    """The real RunWatch, its looks at SQLite's change counter counted (with the re-reads
    made before each), held while `looks_open` is clear, look number `broken_look` made
    on a broken connection; its re-reads held while `reads_open` is clear (each look and
    each re-read still the real one)."""

    def __init__(self, db: Database, *, recheck_seconds: float) -> None:
        super().__init__(db, recheck_seconds=recheck_seconds)
        self.looks = 0
        self.reads_at_look: list[int] = []
        self.looks_open = threading.Event()
        self.looks_open.set()
        self.broken_look: int | None = None
        self.reading = threading.Event()
        self.reads_open = threading.Event()
        self.reads_open.set()

    def _sqlite_changed(self) -> bool:
        self.reads_at_look.append(self.reads)
        self.looks += 1
        assert self.looks_open.wait(30), "the test never let the look go on"
        if self.looks == self.broken_look and self._version_connection is not None:
            self._version_connection.close()  # as a failing disk or file handle would
        return super()._sqlite_changed()

    def _read(self, ids: list[int]) -> dict[int, RunState]:
        self.reading.set()
        assert self.reads_open.wait(30), "the test never let the re-read go on"
        return super()._read(ids)


def _counter_watch(node: Node) -> _ObservedWatch:
    """A watch that looks at SQLite's change counter every 0.01 s (SQLite only)."""
    if not node.store.db.is_sqlite:
        pytest.skip("SQLite's change counter; PostgreSQL hears every commit by NOTIFY")
    return _ObservedWatch(node.store.db, recheck_seconds=0.01)


async def _until_looked(watch: _ObservedWatch, run: int) -> None:
    """Watch the run until the change counter was looked at (its connection open)."""
    async with watch.watching([run]):
        await _looks_after(watch, 1)


async def _looks_after(watch: _ObservedWatch, looks: int) -> None:
    """Until the watch starts its look number `looks` + 1 (what the looks before caused is done)."""
    await _until(lambda: watch.looks > looks, f"a look at the change counter after {looks}")


def _rename_runs(node: Node, old: str, new: str) -> None:
    with node.store.db.write() as conn:
        conn.execute(sa.text(f"ALTER TABLE {old} RENAME TO {new}"))


def _nothing_logged(caplog: pytest.LogCaptureFixture) -> None:
    """No warning or error while waiting (a failing change counter, a listener that cannot)."""
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


def _cancel_elsewhere(other: Node, run: int) -> None:
    with other.store.db.write() as conn:
        conn.execute(
            sa.text("UPDATE executions SET status = :s WHERE id = :i"),
            {"s": JobStatus.CANCELED.value, "i": run},
        )
