"""Waiting for an execution to end: poll with backoff, report progress, give up at a timeout."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from datamill.client.errors import WaitTimeout
from datamill.client.models import Details
from datamill.domain.status import JobStatus

if TYPE_CHECKING:
    from datamill.client.client import Client


@dataclasses.dataclass(frozen=True)
class Progress:
    """What a waiting caller learns at each poll."""

    execution_id: int
    status: JobStatus
    percent: int | None  # only while RUNNING, from the status route
    remaining: str | None  # the server's estimate, e.g. "3m 20s", only while RUNNING


ProgressCallback = Callable[[Progress], None]


@dataclasses.dataclass(frozen=True)
class Poll:
    """Backoff between polls: from `first` seconds, times `factor`, at most `most`."""

    first: float = 0.1
    factor: float = 1.5
    most: float = 2.0

    def delays(self) -> Iterator[float]:
        """The successive delays, endlessly."""
        delay = self.first
        while True:
            yield delay
            delay = min(self.most, delay * self.factor)


DEFAULT_POLL = Poll()


def wait_for_execution(
    client: Client,
    execution_id: int,
    timeout: float | None,
    on_progress: ProgressCallback | None,
    poll: Poll,
) -> Details:
    """Poll until the execution is terminal; its final details, or WaitTimeout."""
    deadline = None if timeout is None else time.monotonic() + timeout
    first = client.details(execution_id)
    if first.status.is_terminal:
        return first
    delays = poll.delays()
    while True:
        # The status route (the cheap poll) carries progress and the estimate,
        # but only for the job's newest execution; a run with a newer one queued
        # behind it is followed through its details instead.
        current = client.status(first.file_id)
        percent, remaining = None, None
        if current.execution_id == execution_id and current.status is not None:
            status, percent, remaining = current.status, current.progress, current.estimate
        else:
            status = client.details(execution_id).status
        if status.is_terminal:
            return client.details(execution_id)
        if on_progress is not None:
            on_progress(Progress(execution_id, status, percent, remaining))
        delay = next(delays)
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise WaitTimeout(execution_id, timeout or 0.0, status.value)
            delay = min(delay, left)
        time.sleep(delay)
