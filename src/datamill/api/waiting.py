"""Asking a trigger or a status request to wait (`?wait=N`, `Prefer: wait=N`), and its answer.

docs/waiting.md is the user's side. The routes call `requested_wait` before
doing anything (a bad value is a 400 before a run starts), then take a
`wait_slot` (a caller over her cap is a 429 before a run starts) which they
give back on every way out, `wait_for_runs` after, and `applied` on the
response they built. A request that may wait
signs in (`WaitingCaller`) and does its thread work on the run watch's own
threads, so a crowd of waits does not queue ahead of other requests; woken
status requests share one status read per caller, job and run.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Callable, Iterable
from typing import Annotated, Any

from fastapi import Depends
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive

from datamill.api.security import current_user
from datamill.api.wire import PrettyJSONResponse
from datamill.domain.records import User
from datamill.errors import InvalidInput, NotFound
from datamill.services.jobs import JobReference, JobService, StatusView
from datamill.services.waiting import (
    MAX_WAIT_SECONDS,
    RunState,
    RunWatch,
    WaitLimit,
    WaitSlot,
    read_states,
    readable_runs,
    status_of_run,
)

_BAD_WAIT = f"wait must be a whole number of seconds from 0 to {MAX_WAIT_SECONDS}"


@dataclasses.dataclass(frozen=True, slots=True)
class Wait:
    """How long a request asked to wait, and whether it asked with Prefer."""

    seconds: int
    preferred: bool


def _seconds(value: str) -> int:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]  # RFC 7240 allows a quoted value
    if not (value.isascii() and value.isdigit()) or len(value) > 6:
        raise InvalidInput(_BAD_WAIT)
    seconds = int(value)
    if seconds > MAX_WAIT_SECONDS:
        raise InvalidInput(_BAD_WAIT)
    return seconds


def _preferred_wait(request: Request) -> int | None:
    """The wait preference of the Prefer header(s), if any (RFC 7240: other preferences pass)."""
    found: int | None = None
    for header in request.headers.getlist("prefer"):
        for preference in header.split(","):
            token, _, value = preference.split(";", 1)[0].partition("=")
            if token.strip().lower() == "wait":
                found = _seconds(value)
    return found


def requested_wait(request: Request) -> Wait | None:
    """The wait the request asks for: `?wait=` wins over `Prefer: wait=`; None if neither."""
    query = request.query_params.getlist("wait")
    if len(query) > 1:
        raise InvalidInput("wait: give it once")
    if query:
        return Wait(_seconds(query[0]), preferred=False)
    preferred = _preferred_wait(request)
    return None if preferred is None else Wait(preferred, preferred=True)


def may_wait(request: Request) -> bool:
    """Whether the request asks to wait, rightly or not (a cheap look; `requested_wait` judges)."""
    return "wait" in request.query_params or "prefer" in request.headers


def wait_slot(request: Request, user: User | None = None) -> WaitSlot:
    """A place among the caller's waits, taken now for `user` if given (TooManyWaits, a 429,
    if she holds the most); use it in `with`, so it is given back however the request ends."""
    limit: WaitLimit = request.app.state.wait_limit
    slot = limit.slot()
    if user is not None:
        slot.take(user.name)
    return slot


def _watch(request: Request) -> RunWatch:
    watch: RunWatch = request.app.state.run_watch
    return watch


async def _waiting_caller(request: Request) -> User:
    # What CurrentUser does, in one thread trip as there; a request that may
    # wait takes it on the waits' own threads.
    if may_wait(request):
        return await _watch(request).in_thread(current_user, request)
    return await run_in_threadpool(current_user, request)


WaitingCaller = Annotated[User, Depends(_waiting_caller)]
"""CurrentUser for routes that may wait."""


async def _disconnected(receive: Receive) -> None:
    # What is left of a request body is of no use now; the message that
    # matters is the disconnect.
    while (await receive())["type"] != "http.disconnect":
        pass


async def wait_for_runs(request: Request, ids: Iterable[int], wait: Wait) -> dict[int, RunState]:
    """Wait until the runs ended, the time is up, or the client went away (the runs go on)."""
    waiting = asyncio.ensure_future(_watch(request).until_ended(ids, wait.seconds))
    gone = asyncio.ensure_future(_disconnected(request.receive))
    try:
        await asyncio.wait({waiting, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not waiting.done():
            waiting.cancel()
    return waiting.result() if waiting.done() and not waiting.cancelled() else {}


def _as_now(jobs: JobService, user: User) -> User | None:
    """The caller as the store has her now: a wait lasts up to an hour, and her groups,
    roles or the user herself may be gone by its end (as for event streams)."""
    with jobs.store.db.read() as conn:
        now = jobs.store.users.get(conn, user.name)
    # A new user of the same name (deleted and made again) has another hash.
    return now if now is not None and now.password_hash == user.password_hash else None


def _readable_now(jobs: JobService, ids: list[int], user: User) -> set[int]:
    now = _as_now(jobs, user)
    return set() if now is None else readable_runs(jobs, ids, now)


def _status_now(jobs: JobService, job: JobReference, user: User, run: int) -> StatusView:
    now = _as_now(jobs, user)
    if now is None:
        raise NotFound()
    return status_of_run(jobs, job, now, run)


async def waited_statuses(
    request: Request, ids: list[int], wait: Wait, user: User
) -> dict[int, str]:
    """Wait as asked, then the status of each run the user may still read: as the watch's
    last read found it if all ended, else as the store has it now.

    A run she may not read (or no longer) is neither waited on nor told, as
    one that no longer exists.
    """
    jobs: JobService = request.app.state.jobs
    watch = _watch(request)
    readable = await watch.in_thread(readable_runs, jobs, ids, user, user=user.name)
    ids = [i for i in ids if i in readable]
    states = await wait_for_runs(request, ids, wait)
    if not all(i in states and states[i].ended for i in ids):
        states = await watch.in_thread(read_states, jobs.store.db, ids, user=user.name)
    # Checked again after the wait, as the status routes do, with the rights she has now.
    readable = await watch.in_thread(_readable_now, jobs, ids, user, user=user.name)
    return {i: s.status.value for i, s in states.items() if s.status is not None and i in readable}


async def waited_status(
    request: Request, job: JobReference, user: User
) -> tuple[StatusView, Wait | None]:
    """What a status route shows: the newest run of the job, or with `wait`, that run once ended.

    The same checks as without `wait`, and again after the wait with the
    caller's rights then (status_of_run: a reader who lost the right, her
    group or her account meanwhile gets the 404).
    """
    jobs: JobService = request.app.state.jobs
    wait = requested_wait(request)
    if wait is None:
        return await run_in_threadpool(jobs.status, job, user), None
    watch = _watch(request)
    with wait_slot(request, user):
        view = await watch.in_thread(jobs.status, job, user, user=user.name)
        if view.execution is None or view.execution.status.is_terminal:
            return view, wait
        waited = view.execution.id
        await wait_for_runs(request, [waited], wait)
        # One read per caller, job and run for all woken together (services/waiting.py).
        key = ("status", user, job, waited)
        view = await watch.shared(key, _status_now, jobs, job, user, waited, user=user.name)
        return view, wait


async def answered_after_wait(
    request: Request,
    answer: Response,
    wait: Wait | None,
    user: User,
    runs: Callable[[dict[str, Any]], list[dict[str, Any]]],
    status_member: str,
    id_member: str = "job-execution-id",
) -> Response:
    """A trigger's answer, with `wait`: each triggered run's state once the wait ended.

    The answer may be an Idempotency-Key replay (api/idempotent.py), which
    stores the answer without the wait: a retried trigger that asks to wait
    waits on the runs the first one started, so the key and the wait compose.
    """
    if wait is None or answer.status_code != 200:
        return answer
    body: dict[str, Any] = json.loads(bytes(answer.body))
    items = [item for item in runs(body) if id_member in item]
    statuses = await waited_statuses(request, [item[id_member] for item in items], wait, user)
    for item in items:
        item[status_member] = statuses.get(item[id_member], item.get(status_member))
    waited = PrettyJSONResponse(body)
    for name, value in answer.headers.items():
        if name.lower() not in {"content-length", "content-type"}:
            waited.headers[name] = value
    return applied(waited, wait)


def applied(response: Response, wait: Wait | None) -> Response:
    """Say that a Prefer wait was honoured (RFC 7240 Preference-Applied); return the response."""
    if wait is not None and wait.preferred:
        response.headers["Preference-Applied"] = f"wait={wait.seconds}"
    return response
