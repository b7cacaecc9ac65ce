"""Location and connection routes: /rest/location[/<id>], /rest/connection[/<id>],
and Datameer's /rest/connections[/<id>] (api/connection_documents.py translates).

They mirror the job definition routes; the id is the entry's file id, so the
filesystem permission routes (/api/filesystem/files/<id>/permission/...) share
them with groups and others.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from datamill.api import connection_documents
from datamill.api.bodies import json_object_body
from datamill.api.types import CurrentUser, EntityId
from datamill.api.wire import PrettyJSONResponse
from datamill.services.resources import ResourceService

router = APIRouter()


def _service(request: Request) -> ResourceService:
    service: ResourceService = request.app.state.resources
    return service


async def _document(request: Request) -> dict[str, Any]:
    return await json_object_body(request, "the entry's path and what it points at")


def _same(document: dict[str, Any]) -> dict[str, Any]:
    return document


@dataclasses.dataclass(frozen=True, slots=True)
class WireShape:
    """How one family of routes writes an entry's document and reads it back."""

    incoming: Callable[[dict[str, Any]], dict[str, Any]] = _same
    outgoing: Callable[[dict[str, Any]], dict[str, Any]] = _same
    listed: Callable[[dict[str, Any]], dict[str, Any]] = _same
    created_key: str = "id"


DATAMILL = WireShape()
DATAMEER_CONNECTION = WireShape(
    incoming=connection_documents.incoming,
    outgoing=connection_documents.outgoing,
    listed=connection_documents.listed,
    # Datameer answers a created connection as a created job.
    created_key="configuration-id",
)


def _register(kind: str, base: str, shape: WireShape) -> None:
    async def create(request: Request, user: CurrentUser) -> Response:
        document = shape.incoming(await _document(request))
        entry_id = await run_in_threadpool(_service(request).create, kind, document, user)
        return PrettyJSONResponse({shape.created_key: entry_id, "status": "success"})

    def list_all(request: Request, user: CurrentUser) -> Response:
        return PrettyJSONResponse([shape.listed(d) for d in _service(request).list_all(kind, user)])

    def read(entry_id: EntityId, request: Request, user: CurrentUser) -> Response:
        return PrettyJSONResponse(shape.outgoing(_service(request).read(kind, entry_id, user)))

    async def update(entry_id: EntityId, request: Request, user: CurrentUser) -> Response:
        document = shape.incoming(await _document(request))
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


_register("location", "/rest/location", DATAMILL)
_register("connection", "/rest/connection", DATAMILL)
_register("connection", "/rest/connections", DATAMEER_CONNECTION)
