"""The worker's side of a run's log: events gathered between writes, and paths shown as defined.

The engine sees a definition whose location references were resolved to
real folders; the log shows them as the job's definition names them (the
location's path in the file tree), so a reader of the job learns nothing
of the server's folders, nor of a location they could not read.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import socket
from typing import Any

from datamill.domain import runlog as rl
from datamill.domain.records import Execution, JobConfiguration
from datamill.domain.status import JobStatus
from datamill.engine.base import RunRequest
from datamill.settings import Settings
from datamill.store.queue import Outcome
from datamill.worker.memo import PerConfiguration


class RunLog:
    """Events of one run not yet written, and the where of its failure."""

    def __init__(self, shown_as: dict[str, str] | None = None) -> None:
        self._pending: list[rl.PendingEvent] = []
        self._taken: list[rl.PendingEvent] = []
        self._failed_at: dict[str, Any] = {}
        # Longest first, so a folder inside another is replaced by its own name.
        self._shown_as = sorted((shown_as or {}).items(), key=lambda kv: -len(kv[0]))

    def add(self, event: rl.PendingEvent) -> None:
        """Keep an event from the engine until the next write."""
        if event.event == rl.FAILED_AT:
            self._failed_at = self._shown(event.detail)
            return
        self._pending.append(dataclasses.replace(event, detail=self._shown(event.detail)))
        self._pending = rl.squeeze(self._pending)

    @property
    def pending(self) -> bool:
        """Whether events wait to be written."""
        return bool(self._pending)

    def take(self) -> list[rl.PendingEvent]:
        """The pending events, which the caller writes; give_back them if that fails."""
        taken, self._pending = self._pending, []
        return taken

    def give_back(self, events: list[rl.PendingEvent]) -> None:
        """Events whose write failed: written with the next ones."""
        self._pending = rl.squeeze([*events, *self._pending])

    def ending(self, outcome: Outcome) -> Outcome:
        """`outcome` carrying the events still to write and, for a failure, why and where."""
        self._taken.extend(self.take())
        self._taken = rl.squeeze(self._taken)
        final: list[rl.PendingEvent] = []
        # The failure's message in full (a trace may hold a stack), not cut as other text.
        message = rl.cut_text(self.shown(outcome.error_message or ""), rl.MAX_FAILURE_TEXT)
        if outcome.status is JobStatus.ERROR:
            detail = {**self._failed_at, "message": message}
            final.append(rl.PendingEvent(rl.now(), rl.FAILED, detail))
        elif outcome.status is JobStatus.CANCELED:
            final.append(rl.pending(rl.STOPPED, message=message))
        return dataclasses.replace(outcome, log=(*self._taken, *final))

    def shown(self, text: str) -> str:
        """`text` with the run's real folders named as its definition names them."""
        for real, name in self._shown_as:
            text = text.replace(real, name)
        return text

    def _shown(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.shown(value)
        if isinstance(value, dict):
            return {k: self._shown(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._shown(v) for v in value]
        return value


def folder_names(
    config: JobConfiguration, request: RunRequest, settings: Settings
) -> dict[str, str]:
    """Real folder -> how the log names it: a location's folder by the location's path."""
    names: dict[str, str] = {}
    for part, roots in (("source", request.roots.source_roots), ("sink", request.roots.sink_roots)):
        spec = config.definition.get(part)
        if isinstance(spec, dict) and spec.get("location") and roots:
            for real in {roots[0], os.path.realpath(roots[0])}:
                names[real] = str(spec["location"])
    # The server's own folders are nobody's business but the operator's.
    for real, name in _server_folders(
        str(settings.staging_root), str(settings.resolved_data_root), str(settings.temp_root)
    ):
        names.setdefault(real, name)
    return names


@functools.lru_cache(maxsize=16)
def _server_folders(staging: str, data: str, temp: str) -> tuple[tuple[str, str], ...]:
    """Each server folder, as configured and as resolved, with its name in the log.

    Resolved once per process, not per run (three realpath calls were a fifth
    of the worker's prepare): these are the operator's folders, fixed when the
    worker starts, and the names only hide them in log text; a run's own
    location folders above are resolved every time.
    """
    pairs: list[tuple[str, str]] = []
    for root, name in ((staging, "<staging>"), (data, "<data>"), (temp, "<temp>")):
        pairs += [(real, name) for real in dict.fromkeys([root, os.path.realpath(root)])]
    return tuple(pairs)


def _digest(config: JobConfiguration) -> str:
    canonical = json.dumps(config.definition, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


# Digested once per saved version of a job, not per run (worker/memo.py).
_digests = PerConfiguration(_digest)


def configuration_version(config: JobConfiguration) -> dict[str, Any]:
    """Which version of its configuration a run ran: when it was saved, and its digest."""
    return {
        "id": config.id,
        "saved": config.updated_at.isoformat(timespec="milliseconds") + "Z",
        "sha256": _digests(config),
    }


def claimed(
    execution: Execution, worker_id: str, config: JobConfiguration | None
) -> list[rl.PendingEvent]:
    """The events of a claim: retried (after a hand-back) and claimed by whom."""
    events = []
    if execution.attempts > 1:
        events.append(rl.pending(rl.RETRIED, attempt=execution.attempts))
    detail: dict[str, Any] = {
        "worker": worker_id,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "attempt": execution.attempts,
    }
    if config is not None:
        detail["configuration"] = configuration_version(config)
    events.append(rl.pending(rl.CLAIMED, **detail))
    return events
