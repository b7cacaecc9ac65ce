"""Data results on the wire (spec §4.8, §6)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from datamill.api.types import CurrentUser, EntityId
from datamill.api.wire import PrettyJSONResponse
from datamill.services.data import delete_data
from datamill.services.jobs import JobService

router = APIRouter()


@router.delete("/rest/data/{data_id}")
def delete(data_id: EntityId, request: Request, user: CurrentUser) -> Response:
    """Mark a data result for deletion: {"status": true}, or false if already marked."""
    jobs: JobService = request.app.state.jobs
    return PrettyJSONResponse({"status": delete_data(jobs.store, data_id, user)})
