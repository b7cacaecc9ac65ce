"""The one error hierarchy: every failure a user can act on is a DatamillError."""

from __future__ import annotations


class DatamillError(Exception):
    """Something went wrong in Datamill."""

    http_status: int = 500

    def __init__(self, message: str | None = None) -> None:
        # The class docstring is the default message, so a bare raise still explains itself.
        super().__init__(message or (self.__doc__ or "").strip())

    @property
    def message(self) -> str:
        """The text a person can act on."""
        return str(self.args[0])


class InvalidInput(DatamillError):
    """The request is not valid."""

    http_status = 400


class InvalidDefinition(InvalidInput):
    """The job definition is not valid."""


class InvalidSql(InvalidInput):
    """The SQL of a sheet is not allowed."""


class PathNotAllowed(InvalidInput):
    """The path is outside the folders the operator allowed."""


class NotAuthenticated(DatamillError):
    """Missing or wrong credentials."""

    http_status = 401


class Forbidden(DatamillError):
    """You are not allowed to do this."""

    http_status = 403


class NotFound(DatamillError):
    """File doesn't exist or isn't accessible with current permissions"""

    http_status = 404


class Conflict(DatamillError):
    """The request conflicts with the current state."""

    http_status = 409


class AlreadyExists(Conflict):
    """The entity already exists."""


class JobFailed(DatamillError):
    """The job failed."""

    http_status = 500


class PassingFailure(JobFailed):
    """The job failed for a reason that may pass (a database refused the connection)."""

    # Its job's retry policy applies: the run may be started again (docs/jobs.md, "Retries").


class StopTimeout(DatamillError):
    """The execution did not stop in time."""

    http_status = 409


class TooManyRequests(DatamillError):
    """Too many failed sign-ins; try again later."""

    http_status = 429

    def __init__(self, message: str | None = None, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TooManyWaits(TooManyRequests):
    """You hold too many waiting requests and event streams on this server; try again later."""


class KeyReused(DatamillError):
    """This Idempotency-Key was used for a different request."""

    http_status = 422
