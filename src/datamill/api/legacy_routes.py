"""The older /rest job routes that real clients still call (spec §5)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from datamill.api.idempotent import answer_once
from datamill.api.types import ConfigurationQuery, CurrentUser, EntityId
from datamill.api.waiting import (
    WaitingCaller,
    answered_after_wait,
    applied,
    requested_wait,
    wait_slot,
    waited_status,
)
from datamill.api.wire import Clock, PrettyJSONResponse, v1_status
from datamill.domain.status import JobStatus
from datamill.services.jobs import ByConfiguration, JobService

router = APIRouter()


def _service(request: Request) -> JobService:
    service: JobService = request.app.state.jobs
    return service


@router.get("/rest/job-configuration/job-status/{config_id}")
async def job_status(config_id: EntityId, request: Request, user: WaitingCaller) -> Response:
    """The newest execution of a configuration, or {} if it never ran; with `wait`, once ended."""
    view, wait = await waited_status(request, ByConfiguration(config_id), user)
    body: dict[str, Any] = {}
    if view.execution is not None:
        body = {"id": view.execution.id, "jobStatus": v1_status(view.execution.status)}
    if view.queue is not None:
        # Datamill's members, dated as job details dates (docs/retried-triggers-and-queue.md).
        clock: Clock = request.app.state.clock
        body["queuePosition"] = view.queue.position
        body["expectedStartTime"] = clock.datameer(view.queue.expected_start)
    return applied(PrettyJSONResponse(body), wait)


@router.post("/rest/job-execution")
async def trigger(
    request: Request, user: CurrentUser, configuration: ConfigurationQuery
) -> Response:
    """Trigger a configuration by id; with `wait`, answer once the run ended (or the time is up)."""
    # Checked before the run starts: a bad wait starts nothing.
    wait = requested_wait(request)
    # A caller over her cap of waits is refused before too.
    with wait_slot(request, None if wait is None else user):
        answer = await run_in_threadpool(
            answer_once,
            request,
            user,
            ("rest-trigger", configuration),
            lambda execution: {"id": execution.id, "jobStatus": execution.status.value},
            lambda once: _service(request).trigger(ByConfiguration(configuration), user, once=once),
        )
        return await answered_after_wait(
            request, answer, wait, user, lambda body: [body], "jobStatus", "id"
        )


@router.post("/rest/job-execution/job-kill/{execution_id}")
def job_kill(execution_id: EntityId, request: Request, user: CurrentUser) -> Response:
    """Stop one execution."""
    _service(request).stop_execution(execution_id, user)
    return PrettyJSONResponse({"status": "success"})


@router.get("/rest/job-configuration/volume-report/{config_id}")
def volume_report(config_id: EntityId, request: Request, user: CurrentUser) -> Response:
    """Bytes read by each ended run of a configuration, newest first.

    A run that published nothing (ERROR, CANCELED) has no importedVolume, so a
    "change since the last import" check skips it instead of reading 0.
    """
    report = []
    for execution_id, status, volume in _service(request).volume_report(config_id, user):
        item: dict[str, Any] = {"id": execution_id, "jobStatus": v1_status(status)}
        if status not in _PUBLISHED_NOTHING:
            item["importedVolume"] = volume
        item["type"] = "NORMAL"
        report.append(item)
    return PrettyJSONResponse(report)


_PUBLISHED_NOTHING = frozenset({JobStatus.ERROR, JobStatus.CANCELED})
