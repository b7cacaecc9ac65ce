"""What the client raises: one hierarchy, each carrying Datameer's `reason`.

Every class also derives from the matching server-side class of
datamill/errors.py, so `except datamill.errors.NotFound` catches a missing
file whether it was found missing in-process or over HTTP.
"""

from __future__ import annotations

from typing import Any

from datamill import errors


class ClientError(errors.DatamillError):
    """The request to the Datamill server failed."""


class TransportError(ClientError):
    """The server could not be reached."""


class ApiError(ClientError):
    """The server answered with a failure."""

    def __init__(self, reason: str, status_code: int, body: Any = None) -> None:
        super().__init__(reason)
        self.status_code = status_code
        self.body = body

    @property
    def reason(self) -> str:
        """Datameer's `reason`: the text a person can act on."""
        return self.message


class BadRequest(ApiError, errors.InvalidInput):
    """The request is not valid (400)."""


class Unauthorized(ApiError, errors.NotAuthenticated):
    """Missing or wrong credentials (401)."""


class Forbidden(ApiError, errors.Forbidden):
    """The user may see this but not do it (403)."""


class NotFound(ApiError, errors.NotFound):
    """No such entity, or not readable by this user (404)."""


class Conflict(ApiError, errors.Conflict):
    """The request conflicts with the current state (409): nothing to stop, already exists."""


class TooManyRequests(ApiError):
    """Too many failed sign-ins (429); try again later."""


class ServerError(ApiError):
    """The server failed (5xx)."""


class WaitTimeout(ClientError):
    """The execution did not end within the time given."""

    def __init__(self, execution_id: int, timeout: float, last_status: str | None) -> None:
        super().__init__(
            f"job execution {execution_id} did not end within {timeout:g}s"
            f" (last status {last_status or 'unknown'})"
        )
        self.execution_id = execution_id
        self.timeout = timeout
        self.last_status = last_status


_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    429: TooManyRequests,
}


def api_error(status_code: int, body: Any, text: str) -> ApiError:
    """The exception for a failure answer: its class from the status, its message the reason."""
    reason = body.get("reason") if isinstance(body, dict) else None
    if not isinstance(reason, str) or not reason:
        reason = text.strip()[:500] or f"HTTP {status_code}"
    cls = _BY_STATUS.get(status_code)
    if cls is None:
        cls = ServerError if status_code >= 500 else ApiError
    return cls(reason, status_code, body)
