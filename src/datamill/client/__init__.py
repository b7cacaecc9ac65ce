"""A typed Python client for a Datamill server (the Datameer X job API), on httpx.

    from datamill.client import Client

    with Client("http://127.0.0.1:8080", auth=("admin", "secret")) as dm:
        run = dm.trigger("/Data/ImportJobs/orders.imp")
        details = dm.wait(run.execution_id, timeout=600)
        print(details.status, details.success_count, details.failure_reason)

Importing it loads httpx and Datamill's plain records only: no database,
no engine. See docs/client.md.
"""

from __future__ import annotations

from datamill.client.client import DEFAULT_URL, Client, Reference, reference_path
from datamill.client.errors import (
    ApiError,
    BadRequest,
    ClientError,
    Conflict,
    Forbidden,
    NotFound,
    ServerError,
    TooManyRequests,
    TransportError,
    Unauthorized,
    WaitTimeout,
)
from datamill.client.models import (
    Details,
    Entry,
    Folder,
    HistoryItem,
    Page,
    PlanMember,
    RunningJob,
    Status,
    Triggered,
)
from datamill.client.waiting import Poll, Progress
from datamill.domain.status import JobKind, JobStatus

__all__ = [
    "DEFAULT_URL",
    "ApiError",
    "BadRequest",
    "Client",
    "ClientError",
    "Conflict",
    "Details",
    "Entry",
    "Folder",
    "Forbidden",
    "HistoryItem",
    "JobKind",
    "JobStatus",
    "NotFound",
    "Page",
    "PlanMember",
    "Poll",
    "Progress",
    "Reference",
    "RunningJob",
    "ServerError",
    "Status",
    "TooManyRequests",
    "TransportError",
    "Triggered",
    "Unauthorized",
    "WaitTimeout",
    "reference_path",
]
