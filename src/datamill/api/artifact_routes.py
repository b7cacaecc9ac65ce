"""Job definition routes (spec §6): import jobs, workbooks, export jobs."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from datamill.api.bodies import json_object_body
from datamill.api.types import CurrentUser, EntityId
from datamill.api.wire import PrettyJSONResponse
from datamill.domain.status import JobKind
from datamill.errors import NotFound
from datamill.services.artifacts import ArtifactService, document_schema

router = APIRouter()

_BASES = {
    JobKind.IMPORT: ["/rest/import-job"],
    JobKind.WORKBOOK: ["/rest/workbook"],
    JobKind.EXPORT: ["/rest/export-job", "/rest/export-jobs"],
}
_DOCUMENT_BODY = {
    "requestBody": {
        "required": True,
        "description": "The job's document (its definition plus `path`), as lenient JSON. "
        "See docs/jobs.md and the JSON Schemas under /rest/schemas.",
        "content": {"application/json": {"schema": {"type": "object"}}},
    }
}


def _service(request: Request) -> ArtifactService:
    service: ArtifactService = request.app.state.artifacts
    return service


async def _document(request: Request) -> dict[str, Any]:
    return await json_object_body(request, "the job's definition and its path")


def _register(kind: JobKind, base: str) -> None:
    async def create(request: Request, user: CurrentUser) -> Response:
        document = await _document(request)
        config = await run_in_threadpool(_service(request).create, kind, document, user)
        return PrettyJSONResponse({"configuration-id": config.id, "status": "success"})

    def list_all(request: Request, user: CurrentUser) -> Response:
        return PrettyJSONResponse(_service(request).list_jobs(kind, user))

    def read(config_id: EntityId, request: Request, user: CurrentUser) -> Response:
        return PrettyJSONResponse(_service(request).read(kind, config_id, user))

    async def update(config_id: EntityId, request: Request, user: CurrentUser) -> Response:
        document = await _document(request)
        await run_in_threadpool(_service(request).update, kind, config_id, document, user)
        return PrettyJSONResponse({"status": "success"})

    def delete(config_id: EntityId, request: Request, user: CurrentUser) -> Response:
        _service(request).delete(kind, config_id, user)
        return PrettyJSONResponse({"status": "success"})

    noun = {"import": "import job", "workbook": "workbook", "export": "export job"}[kind.value]
    router.add_api_route(
        base,
        create,
        methods=["POST"],
        summary=f"Create an {noun}" if noun[0] in "aeiou" else f"Create a {noun}",
        openapi_extra=_DOCUMENT_BODY,
    )
    router.add_api_route(base, list_all, methods=["GET"], summary=f"List {noun}s")
    router.add_api_route(f"{base}/{{config_id}}", read, methods=["GET"], summary=f"Read a {noun}")
    router.add_api_route(
        f"{base}/{{config_id}}",
        update,
        methods=["PUT"],
        summary=f"Replace a {noun}",
        openapi_extra=_DOCUMENT_BODY,
    )
    router.add_api_route(
        f"{base}/{{config_id}}", delete, methods=["DELETE"], summary=f"Delete a {noun}"
    )


for _kind, _bases in _BASES.items():
    for _base in _bases:
        _register(_kind, _base)


@router.get("/rest/schemas/{kind}")
def schema(kind: str, _user: CurrentUser) -> Response:
    """The JSON Schema of import-job, workbook or export-job documents."""
    kinds = {
        "import-job": JobKind.IMPORT,
        "workbook": JobKind.WORKBOOK,
        "export-job": JobKind.EXPORT,
    }
    if kind not in kinds:
        raise NotFound(f"no schema named {kind!r}; there are {', '.join(kinds)}")
    return PrettyJSONResponse(document_schema(kinds[kind]))
