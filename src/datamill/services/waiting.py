"""Waiting for runs without polling: one watcher per server wakes every waiting request.

A request that waits for runs (trigger, sequential trigger or status with
`wait`, an events stream) registers the ids with `RunWatch` and awaits an
asyncio event: it holds no database connection and no thread meanwhile. The
watch re-reads the state of every watched run in ONE query whenever runs
may have changed, and wakes the requests whose runs did change:

- a commit in this process that changed a run (store/run_changes.py: the
  embedded worker, a stop, a plan settling) calls it at once;
- on PostgreSQL, a NOTIFY on `datamill_runs` from any node (workers on other
  machines, other API servers), relayed by a listener thread;
- on SQLite with a worker in another process (no NOTIFY there), a check of
  `PRAGMA data_version` once a second while anyone waits: it changes when
  another connection committed, costs microseconds, and only a change costs
  the re-read. A waiter in that setup learns of a change within a second.

Notifications that arrive while a re-read runs are folded into one more
re-read, so a busy server costs at most one query at a time for all waiters.

Woken requests build their answers through `shared`: the first request of a
wake-up that needs an answer (e.g. the status of run 7 as user eve may see
it) computes it in a thread, every other request of that wake-up with the
same key awaits the same result. So 1,000 requests waiting on one run cost
one status read when it ends, yet each caller's rights are checked (the key
holds the caller). Waits do their thread work on threads of their own
(`WAIT_THREADS`), so a crowd of arriving waits does not queue ahead of the
server's other requests.

`WaitLimit` caps how many waiting requests and event streams one user holds
at once on this server (`max_waits_per_user`): each holds a file descriptor
and memory until it ends, so one script must not hold thousands.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import threading
from collections.abc import AsyncIterator, Callable, Hashable, Iterable
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import sqlalchemy as sa
from starlette.concurrency import run_in_threadpool

from datamill.domain.records import Execution, User
from datamill.domain.status import JobStatus
from datamill.errors import NotFound, TooManyWaits
from datamill.services.jobs import JobReference, JobService, StatusView
from datamill.services.permissions import (
    Access,
    Capability,
    has_access,
    has_capability,
    require_capability,
)
from datamill.services.wakeup import ChannelListener, libpq_conninfo
from datamill.store import executions as ex
from datamill.store import tables as t
from datamill.store.db import Database
from datamill.store.run_changes import RUNS_CHANNEL

log = logging.getLogger(__name__)

MAX_WAIT_SECONDS = 3600
"""The longest wait a request may ask for (docs/waiting.md)."""
SQLITE_RECHECK_SECONDS = 1.0
"""How often, while anyone waits, SQLite's change counter is looked at."""
WAIT_THREADS = 4
"""Threads that waiting requests' own work (sign-in, first read, answers) may use at once."""
WAIT_THREADS_PER_USER = 1
"""Of those, how many one user's work may hold at once (the rest stay free for others)."""
WAIT_RETRY_AFTER_SECONDS = 5
"""The Retry-After of a wait refused for the cap: a guess, waits end when their runs do."""
_READ_CHUNK = 500
_RETRY_SECONDS = 1.0

T = TypeVar("T")


@dataclasses.dataclass(frozen=True, slots=True)
class RunState:
    """What a waiter learns of a run: its status (None once it no longer exists) and progress."""

    status: JobStatus | None
    progress: float | None

    @property
    def ended(self) -> bool:
        """Terminal, or gone: nothing more will happen to it."""
        return self.status is None or self.status.is_terminal


GONE = RunState(None, None)


def read_states(db: Database, ids: Iterable[int]) -> dict[int, RunState]:
    """The state of each of these runs that exists, in one query per 500 ids."""
    e = t.executions
    wanted = list(dict.fromkeys(ids))
    states: dict[int, RunState] = {}
    with db.read() as conn:
        for start in range(0, len(wanted), _READ_CHUNK):
            chunk = wanted[start : start + _READ_CHUNK]
            rows = conn.execute(
                sa.select(e.c.id, e.c.status, e.c.progress).where(e.c.id.in_(chunk))
            ).all()
            for row in rows:
                states[row.id] = RunState(JobStatus(row.status), row.progress)
    return states


def readable_runs(jobs: JobService, ids: Iterable[int], user: User) -> set[int]:
    """The runs among `ids` that exist and whose job the user may read now (job details' rule).

    A keyed trigger's replay is answered by the role alone (docs/decisions.md);
    with `wait` it tells the runs' states, which only a reader may learn: the
    others count as runs that no longer exist (attack review).
    """
    wanted = list(dict.fromkeys(ids))
    e = t.executions
    with jobs.store.db.read() as conn:
        if not has_capability(conn, user, Capability.JOB_READ):
            return set()
        file_of: dict[int, int] = {}
        for start in range(0, len(wanted), _READ_CHUNK):
            chunk = wanted[start : start + _READ_CHUNK]
            rows = conn.execute(sa.select(e.c.id, e.c.file_id).where(e.c.id.in_(chunk))).all()
            file_of.update((row.id, row.file_id) for row in rows)
        entries = jobs.store.files.get_many(conn, file_of.values())
        allowed = {
            file_id
            for file_id, entry in entries.items()
            if has_access(conn, user, entry, Access.READ)
        }
    return {run for run, file_id in file_of.items() if file_id in allowed}


def status_of_run(jobs: JobService, reference: JobReference, user: User, run: int) -> StatusView:
    """JobService.status, but of run `run` of the job (the one a waiting request waited for).

    The same checks as the status route, made again after the wait: a reader
    who lost the right meanwhile gets what a missing job gets.
    """
    with jobs.store.db.read() as conn:
        require_capability(conn, user, Capability.JOB_READ)
        entry, config = jobs.resolve_job(conn, reference, user, Access.READ)
        try:
            execution: Execution | None = ex.get_execution(conn, run)
        except NotFound:
            # Dropped with old history meanwhile: the newest run it is.
            execution = ex.newest_execution(conn, config.id)
        remaining = None
        if execution is not None and execution.status is JobStatus.RUNNING:
            remaining = jobs.remaining(conn, execution)
    return StatusView(entry, execution, remaining)


class WaitLimit:
    """How many waits and event streams each user holds now on this server, up to a cap."""

    def __init__(self, per_user: int) -> None:
        self.per_user = per_user
        # Slots are taken on the event loop and on threads (a trigger signs in there).
        self._lock = threading.Lock()
        self._held: dict[str, int] = {}

    def held(self, user: str) -> int:
        """How many slots `user` holds now."""
        with self._lock:
            return self._held.get(user, 0)

    def slot(self) -> WaitSlot:
        """A slot not taken yet: `take` it when the user is known, `release` it on every exit."""
        return WaitSlot(self)

    def _take(self, user: str) -> None:
        with self._lock:
            held = self._held.get(user, 0)
            if held >= self.per_user:
                raise TooManyWaits(
                    f"you already hold {held} waiting requests and event streams on this"
                    f" server, the most one user may (max_waits_per_user); nothing was"
                    f" started; try again once one of them has ended",
                    retry_after=WAIT_RETRY_AFTER_SECONDS,
                )
            self._held[user] = held + 1

    def _release(self, user: str) -> None:
        with self._lock:
            held = self._held.get(user, 0) - 1
            if held > 0:
                self._held[user] = held
            else:
                self._held.pop(user, None)


class WaitSlot:
    """One user's place among her waits: taken at most once, released at most once."""

    def __init__(self, limit: WaitLimit) -> None:
        self._limit = limit
        self._user: str | None = None
        self._lock = threading.Lock()

    def take(self, user: str) -> None:
        """Count this wait for `user`, or raise TooManyWaits (429) if she holds the most."""
        with self._lock:
            assert self._user is None, "a slot is taken once"
            self._limit._take(user)
            self._user = user

    def release(self) -> None:
        """Give the slot back if it was taken (and not given back yet)."""
        with self._lock:
            user, self._user = self._user, None
        if user is not None:
            self._limit._release(user)

    def __enter__(self) -> WaitSlot:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.release()


class Watcher:
    """One waiting request: the runs it watches, their newest known states, and its wake-up."""

    def __init__(self, ids: Iterable[int]) -> None:
        self.ids = tuple(dict.fromkeys(ids))
        self.states: dict[int, RunState] = {}
        self.changed = asyncio.Event()

    @property
    def all_ended(self) -> bool:
        """Whether every watched run is known to have ended."""
        return all(i in self.states and self.states[i].ended for i in self.ids)

    def _update(self, execution_id: int, state: RunState) -> None:
        if self.states.get(execution_id) != state:
            self.states[execution_id] = state
            self.changed.set()


class _Turn:
    """One user's share of the wait threads, and how many of her requests want it now."""

    def __init__(self) -> None:
        self.limiter = anyio.Semaphore(WAIT_THREADS_PER_USER)
        self.askers = 0


class RunWatch:
    """The server's one watcher of run states (see the module docstring)."""

    def __init__(self, db: Database, *, recheck_seconds: float = SQLITE_RECHECK_SECONDS) -> None:
        self._db = db
        self._recheck = recheck_seconds if db.is_sqlite else None
        self._watchers: dict[int, set[Watcher]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._signal: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._listener: ChannelListener | None = None
        self._version_connection: Any = None
        self._version: int | None = None
        self._limiter: anyio.CapacityLimiter | None = None
        # Each user's turn on the wait threads, while she has work for them (`in_thread`).
        self._turns: dict[str, _Turn] = {}
        # Answers computed since the last re-read, by key (see `shared`).
        self._shared: dict[Hashable, asyncio.Future[Any]] = {}
        # How many re-reads ran and how many shared answers were computed
        # (tests and the benchmark look at them).
        self.reads = 0
        self.answers_built = 0
        db.run_change_listeners.append(self._changed_elsewhere)

    @property
    def waiting(self) -> int:
        """How many runs are watched now."""
        return len(self._watchers)

    @contextlib.asynccontextmanager
    async def watching(self, ids: Iterable[int]) -> AsyncIterator[Watcher]:
        """Watch these runs while the block runs; the watcher's first states come at once."""
        self._bind()
        watcher = Watcher(ids)
        for execution_id in watcher.ids:
            self._watchers.setdefault(execution_id, set()).add(watcher)
        self._poke()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())
        try:
            yield watcher
        finally:
            for execution_id in watcher.ids:
                others = self._watchers.get(execution_id)
                if others is not None:
                    others.discard(watcher)
                    if not others:
                        del self._watchers[execution_id]
            if not self._watchers:
                self._poke()  # lets the task see it may end

    async def until_ended(self, ids: Iterable[int], seconds: float) -> dict[int, RunState]:
        """Wait until every run has ended or `seconds` passed; the states then known."""
        async with self.watching(ids) as watcher:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + seconds
            while True:
                watcher.changed.clear()
                if watcher.all_ended:
                    break
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    await asyncio.wait_for(watcher.changed.wait(), left)
                except TimeoutError:
                    break
            return dict(watcher.states)

    async def in_thread(self, func: Callable[..., T], *args: Any, user: str | None = None) -> T:
        """func(*args) in a thread of the waits' own few (not queued before other requests).

        Work done for a known `user` holds at most WAIT_THREADS_PER_USER of
        them at once; the rest of hers queues behind it, not ahead of others'
        (attack review: 20 event streams of one user over 600 runs each held
        all of them for 85 s, and every other user's waits with them).
        """
        self._bind()
        if user is None:
            return await anyio.to_thread.run_sync(func, *args, limiter=self._limiter)
        turn = self._turns.get(user)
        if turn is None:
            turn = self._turns[user] = _Turn()
        turn.askers += 1
        try:
            async with turn.limiter:
                return await anyio.to_thread.run_sync(func, *args, limiter=self._limiter)
        finally:
            turn.askers -= 1
            if not turn.askers and self._turns.get(user) is turn:
                del self._turns[user]

    async def shared(
        self, key: Hashable, func: Callable[..., T], *args: Any, user: str | None = None
    ) -> T:
        """func(*args), computed once for every request that asks with `key` until the next re-read.

        Whoever asks after a wake-up gets a result computed after that
        wake-up's re-read, so it is as fresh as a result of its own. The key
        must hold everything the result depends on (the caller too).
        """
        self._bind()
        future = self._shared.get(key)
        if future is None:
            future = asyncio.ensure_future(self.in_thread(func, *args, user=user))
            # Retrieved here too, in case every asker went away before it ended.
            future.add_done_callback(lambda done: done.cancelled() or done.exception())
            self._shared[key] = future
            self.answers_built += 1
        # One caller going away must not cancel the others' answer.
        result: T = await asyncio.shield(future)
        return result

    def close(self) -> None:
        """Stop listening for other nodes' notifications."""
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._version_connection is not None:
            with contextlib.suppress(Exception):
                self._version_connection.close()
            self._version_connection = None

    # ------------------------------------------------------------ inside

    def _bind(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            # A new event loop (a test client started again): start afresh on it.
            self._loop, self._signal, self._task = loop, asyncio.Event(), None
            self._limiter = anyio.CapacityLimiter(WAIT_THREADS)
            self._shared = {}
            self._turns = {}
        if self._listener is None and not self._db.is_sqlite:
            self._listener = ChannelListener(
                libpq_conninfo(self._db.url), RUNS_CHANNEL, self._changed_elsewhere
            )
            self._listener.start()

    def _changed_elsewhere(self) -> None:
        """Runs may have changed (called from any thread)."""
        loop = self._loop
        if loop is None or not self._watchers:
            return
        with contextlib.suppress(RuntimeError):  # the loop has closed
            loop.call_soon_threadsafe(self._poke)

    def _poke(self) -> None:
        if self._signal is not None:
            self._signal.set()

    async def _run(self) -> None:
        signal = self._signal
        assert signal is not None
        while self._watchers:
            try:
                await asyncio.wait_for(signal.wait(), self._recheck)
            except TimeoutError:
                if not await run_in_threadpool(self._sqlite_changed):
                    continue
            signal.clear()
            ids = list(self._watchers)
            if not ids:
                break
            try:
                states = await run_in_threadpool(self._read, ids)
            except Exception:
                log.exception("reading the watched runs failed; trying again")
                await asyncio.sleep(_RETRY_SECONDS)
                signal.set()
                continue
            self.reads += 1
            # Answers computed before this read may be older than the news it brings.
            self._shared = {}
            for execution_id in ids:
                state = states.get(execution_id, GONE)
                for watcher in list(self._watchers.get(execution_id, ())):
                    watcher._update(execution_id, state)

    def _read(self, ids: list[int]) -> dict[int, RunState]:
        return read_states(self._db, ids)

    def _sqlite_changed(self) -> bool:
        """Whether another connection committed since the last look (SQLite's data_version)."""
        try:
            if self._version_connection is None:
                pooled = self._db.engine.raw_connection()
                self._version_connection = pooled.driver_connection
                pooled.detach()  # kept for good: data_version counts per connection
                # A new connection counts from its own start: whatever another
                # process committed since the old one's last look is unknown.
                self._version = None
            cursor = self._version_connection.cursor()
            version = int(cursor.execute("PRAGMA data_version").fetchone()[0])
            cursor.close()
        except Exception:
            log.exception("reading SQLite's data_version failed; re-reading the runs")
            self._version_connection = None
            return True
        changed = version != self._version
        self._version = version
        return changed
