"""A live stream of runs: Server-Sent Events of their state, progress and log, to the end.

`GET /api/job-execution/<id>[,<id>...]/events` (docs/waiting.md). Each run
is read through services/runs.run_report, the check behind job details: a
run the caller may not read answers the 404 of a missing one, before any
event, and a right lost while streaming ends the stream with an `error`
event. The stream waits on the server's RunWatch, so it holds no database
connection between changes. An open stream counts among its caller's waits
(api/waiting.py `wait_slot`) from before its first read until it closes.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from datamill.api.log_routes import event_item
from datamill.api.types import CurrentUser
from datamill.api.waiting import wait_slot
from datamill.domain.records import User
from datamill.errors import DatamillError, InvalidInput, NotFound
from datamill.services import runs
from datamill.services.jobs import JobService
from datamill.services.waiting import RunWatch, WaitSlot

router = APIRouter()

MAX_STREAMED_RUNS = 1_000
"""The most runs one stream follows (a plan's triggered members)."""
KEEPALIVE_SECONDS = 15.0
"""A comment line this often keeps proxies from closing a quiet stream."""
_MAX_ID = 2**31 - 1


def _ids(text: str) -> list[int]:
    parts = text.split(",")
    if len(parts) > MAX_STREAMED_RUNS:
        raise InvalidInput(f"at most {MAX_STREAMED_RUNS} execution ids in one stream")
    ids: list[int] = []
    for part in parts:
        if not (part.isascii() and part.isdigit()) or len(part) > 10 or int(part) > _MAX_ID:
            raise InvalidInput("the events route takes execution ids separated by commas")
        if int(part) not in ids:
            ids.append(int(part))
    return ids


def _event(name: str, number: int, data: dict[str, Any]) -> bytes:
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return f"event: {name}\nid: {number}\ndata: {payload}\n\n".encode()


class _Reader:
    """What one stream has shown of each run, and reading what is new."""

    def __init__(self, jobs: JobService, ids: list[int], user: User) -> None:
        self.jobs, self.ids, self.user = jobs, ids, user
        self.last_seq: dict[int, int | None] = dict.fromkeys(ids)
        self.shown: dict[int, tuple[str, int | None]] = {}
        self.ended: dict[int, str] = {}

    def read(self) -> list[tuple[str, dict[str, Any]]]:
        """The events not shown yet, in order: each run's new log events, then its new state."""
        # With the caller's rights of now: a stream may last as long as its runs
        # (hours), and groups, roles or the user may be gone meanwhile.
        with self.jobs.store.db.read() as conn:
            user = self.jobs.store.users.get(conn, self.user.name)
        if user is None or user.password_hash != self.user.password_hash:
            # Deleted, or deleted and made again: a new user of the same name has
            # another hash (as for session cookies), and the old one's stream must
            # not read on with her rights (attack 12). A new password ends it too.
            raise NotFound()
        self.user = user
        found: list[tuple[str, dict[str, Any]]] = []
        for execution_id in self.ids:
            if execution_id in self.ended:
                # Nothing happens to an ended run any more: read once, not at every wake-up
                # (a stream of 1,000 ended runs and one running cost 1,000 reads per change).
                continue
            report = runs.run_report(
                self.jobs, execution_id, self.user, after_seq=self.last_seq[execution_id]
            )
            for log_event in report.events:
                found.append(("log", {"job-execution-id": execution_id, **event_item(log_event)}))
                self.last_seq[execution_id] = log_event.seq
            execution = report.execution
            progress = None if execution.progress is None else int(execution.progress * 100)
            state = (execution.status.value, progress)
            if self.shown.get(execution_id) != state:
                self.shown[execution_id] = state
                found.append(
                    (
                        "state",
                        {
                            "job-execution-id": execution_id,
                            "job-status": state[0],
                            "progress": progress,
                        },
                    )
                )
            if execution.status.is_terminal:
                self.ended[execution_id] = execution.status.value
        return found


async def _stream(request: Request, reader: _Reader, first: list[Any]) -> AsyncIterator[bytes]:
    watch: RunWatch = request.app.state.run_watch
    number = 0
    events = first
    async with watch.watching(reader.ids) as watcher:
        while True:
            for name, data in events:
                number += 1
                yield _event(name, number, data)
            # Sent: a keep-alive below loops back here, which sent them all again
            # every 15 s (attack 12), also to a reader who lost the right meanwhile.
            events = []
            if len(reader.ended) == len(reader.ids):
                number += 1
                yield _event("end", number, {"runs": {str(i): reader.ended[i] for i in reader.ids}})
                return
            try:
                await asyncio.wait_for(watcher.changed.wait(), KEEPALIVE_SECONDS)
            except TimeoutError:
                yield b": keep-alive\n\n"
                continue
            watcher.changed.clear()
            try:
                events = await watch.in_thread(reader.read, user=reader.user.name)
            except DatamillError as error:
                number += 1
                yield _event("error", number, {"status": "failure", "reason": error.message})
                return


class _HeldStream(StreamingResponse):
    """A stream that gives its caller's wait slot back however its sending ends: the
    runs' end, an error event, the client gone, or a failure while sending."""

    def __init__(self, slot: WaitSlot, content: AsyncIterator[bytes], **options: Any) -> None:
        super().__init__(content, **options)
        self._slot = slot

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._slot.release()


@router.get("/api/job-execution/{execution_ids}/events")
async def run_events(execution_ids: str, request: Request, user: CurrentUser) -> Response:
    """State, progress and log events of one run (or several, comma-separated) until each ended."""
    jobs: JobService = request.app.state.jobs
    reader = _Reader(jobs, _ids(execution_ids), user)
    # Counted before anything is read: a caller over her cap is a 429 (docs/waiting.md).
    slot = wait_slot(request, user)
    try:
        # Read before the answer starts: an unreadable run is a plain 404.
        first = await request.app.state.run_watch.in_thread(reader.read, user=user.name)
    except BaseException:
        slot.release()
        raise
    return _HeldStream(
        slot,
        _stream(request, reader, first),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
