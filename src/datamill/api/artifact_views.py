"""Datameer's /api views of job documents: dependencies, and a workbook by uuid."""

from __future__ import annotations

from typing import cast

from fastapi import APIRouter, Request
from starlette.responses import Response

from datamill.api.types import CurrentUser, EntityId
from datamill.api.wire import PrettyJSONResponse
from datamill.domain.status import JobKind
from datamill.errors import InvalidInput
from datamill.services.artifacts import ArtifactService, Direction

router = APIRouter()

DEFAULT_DIRECTION: Direction = "both"
DEFAULT_LEVEL = 1
MAX_LEVEL = 100
_KINDS = {"import-job": JobKind.IMPORT, "workbook": JobKind.WORKBOOK, "export-job": JobKind.EXPORT}


def _service(request: Request) -> ArtifactService:
    service: ArtifactService = request.app.state.artifacts
    return service


def _direction(text: str) -> Direction:
    # Clients send the parameter empty when they mean the default (?direction=&level=).
    value = text.strip().lower() or DEFAULT_DIRECTION
    if value not in ("upstream", "downstream", "both"):
        raise InvalidInput(f"direction: {text!r} is not UPSTREAM, DOWNSTREAM or BOTH")
    return cast(Direction, value)


def _level(text: str) -> int:
    value = text.strip()
    if not value:
        return DEFAULT_LEVEL
    whole = value.isascii() and value.isdigit() and len(value) <= 6
    if not whole or not 1 <= int(value) <= MAX_LEVEL:
        raise InvalidInput(f"level: {text!r} is not a whole number from 1 to {MAX_LEVEL}")
    return int(value)


def _register(name: str, kind: JobKind) -> None:
    def dependencies(
        config_id: EntityId,
        request: Request,
        user: CurrentUser,
        direction: str = "",
        level: str = "",
    ) -> Response:
        return PrettyJSONResponse(
            _service(request).dependencies(
                kind, config_id, user, _direction(direction), _level(level)
            )
        )

    router.add_api_route(
        f"/api/{name}/{{config_id}}/dependencies",
        dependencies,
        methods=["GET"],
        summary=f"The jobs upstream and downstream of a {name}",
    )


for _name, _kind in _KINDS.items():
    _register(_name, _kind)


@router.get("/api/filesystem/workbooks/{file_uuid}")
def workbook_by_uuid(file_uuid: str, request: Request, user: CurrentUser) -> Response:
    """A workbook's document (as GET /rest/workbook/<id> gives it), named by its file's uuid."""
    return PrettyJSONResponse(_service(request).read_by_uuid(JobKind.WORKBOOK, file_uuid, user))
