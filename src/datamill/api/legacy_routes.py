"""The older /rest job routes that real clients still call (spec §5)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from datamill.api.types import ConfigurationQuery, CurrentUser, EntityId
from datamill.api.wire import PrettyJSONResponse
from datamill.services.jobs import ByConfiguration, JobService

router = APIRouter()


def _service(request: Request) -> JobService:
    service: JobService = request.app.state.jobs
    return service


@router.get("/rest/job-configuration/job-status/{config_id}")
def job_status(config_id: EntityId, request: Request, user: CurrentUser) -> Response:
    """The newest execution of a configuration, or {} if it never ran."""
    view = _service(request).status(ByConfiguration(config_id), user)
    body: dict[str, Any] = {}
    if view.execution is not None:
        body = {"id": view.execution.id, "jobStatus": view.execution.status.value}
    return PrettyJSONResponse(body)


@router.post("/rest/job-execution")
def trigger(request: Request, user: CurrentUser, configuration: ConfigurationQuery) -> Response:
    """Trigger a configuration by id."""
    execution = _service(request).trigger(ByConfiguration(configuration), user)
    return PrettyJSONResponse({"id": execution.id, "jobStatus": execution.status.value})


@router.post("/rest/job-execution/job-kill/{execution_id}")
def job_kill(execution_id: EntityId, request: Request, user: CurrentUser) -> Response:
    """Stop one execution."""
    _service(request).stop_execution(execution_id, user)
    return PrettyJSONResponse({"status": "success"})


@router.get("/rest/job-configuration/volume-report/{config_id}")
def volume_report(config_id: EntityId, request: Request, user: CurrentUser) -> Response:
    """Bytes read by each ended run of a configuration, newest first."""
    rows = _service(request).volume_report(config_id, user)
    return PrettyJSONResponse(
        [
            {"id": i, "jobStatus": status.value, "importedVolume": volume, "type": "NORMAL"}
            for i, status, volume in rows
        ]
    )
