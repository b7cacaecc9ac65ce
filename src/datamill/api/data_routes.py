"""Data results on the wire (spec §4.8, §6)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from datamill.api.security import current_user
from datamill.api.wire import PrettyJSONResponse
from datamill.domain.records import User
from datamill.services.data import delete_data
from datamill.services.jobs import JobService

router = APIRouter()
CurrentUser = Annotated[User, Depends(current_user)]


@router.delete("/rest/data/{data_id}")
def delete(data_id: int, request: Request, user: CurrentUser) -> Response:
    """Mark a data result for deletion: {"status": true}, or false if already marked."""
    jobs: JobService = request.app.state.jobs
    return PrettyJSONResponse({"status": delete_data(jobs.store, data_id, user)})
