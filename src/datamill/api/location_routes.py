"""Location and connection routes: /rest/location[/<id>] and /rest/connection[/<id>].

They mirror the job definition routes; the id is the entry's file id, so the
filesystem permission routes (/api/filesystem/files/<id>/permission/...) share
them with groups and others.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from datamill.api.bodies import lenient_json_body
from datamill.api.types import CurrentUser, EntityId
from datamill.api.wire import PrettyJSONResponse
from datamill.errors import InvalidInput
from datamill.services.resources import ResourceService

router = APIRouter()


def _service(request: Request) -> ResourceService:
    service: ResourceService = request.app.state.resources
    return service


async def _document(request: Request) -> dict[str, Any]:
    body = await lenient_json_body(request)
    if not isinstance(body, dict):
        raise InvalidInput("the body must be a JSON object")
    return body


def _register(kind: str) -> None:
    base = f"/rest/{kind}"

    async def create(request: Request, user: CurrentUser) -> Response:
        document = await _document(request)
        entry_id = await run_in_threadpool(_service(request).create, kind, document, user)
        return PrettyJSONResponse({"id": entry_id, "status": "success"})

    def list_all(request: Request, user: CurrentUser) -> Response:
        return PrettyJSONResponse(_service(request).list_all(kind, user))

    def read(entry_id: EntityId, request: Request, user: CurrentUser) -> Response:
        return PrettyJSONResponse(_service(request).read(kind, entry_id, user))

    async def update(entry_id: EntityId, request: Request, user: CurrentUser) -> Response:
        document = await _document(request)
        await run_in_threadpool(_service(request).update, kind, entry_id, document, user)
        return PrettyJSONResponse({"status": "success"})

    def delete(entry_id: EntityId, request: Request, user: CurrentUser) -> Response:
        _service(request).delete(kind, entry_id, user)
        return PrettyJSONResponse({"status": "success"})

    router.add_api_route(base, create, methods=["POST"], summary=f"Create a {kind}")
    router.add_api_route(base, list_all, methods=["GET"], summary=f"List {kind}s")
    router.add_api_route(f"{base}/{{entry_id}}", read, methods=["GET"], summary=f"Read a {kind}")
    router.add_api_route(
        f"{base}/{{entry_id}}", update, methods=["PUT"], summary=f"Change a {kind}"
    )
    router.add_api_route(
        f"{base}/{{entry_id}}", delete, methods=["DELETE"], summary=f"Delete a {kind}"
    )


for _kind in ("location", "connection"):
    _register(_kind)
