"""The exit codes of the `datamill` command: what cron, Control-M and scripts test.

Documented in docs/client.md; never renumber them.
"""

from __future__ import annotations

from datamill.domain.status import JobStatus

OK = 0  # done; with --wait: the job COMPLETED
FAILED = 1  # the server refused the request (reason on stderr) or could not be reached
USAGE = 2  # wrong arguments or options
WARNINGS = 3  # --wait: the job ended COMPLETED_WITH_WARNINGS (records were dropped)
ERROR = 4  # --wait: the job ended ERROR
CANCELED = 5  # --wait: the job ended CANCELED (stopped, or an upstream plan member failed)
TIMEOUT = 6  # --wait --timeout: still not ended when the time ran out (it goes on running)
AUTH = 7  # no credentials, wrong credentials, or not allowed (HTTP 401/403)
INTERRUPTED = 130  # Control-C

_BY_STATUS = {
    JobStatus.COMPLETED: OK,
    JobStatus.COMPLETED_WITH_WARNINGS: WARNINGS,
    JobStatus.ERROR: ERROR,
    JobStatus.CANCELED: CANCELED,
}
# Which outcome a plan of several runs reports: the first in this list that occurred.
_PRECEDENCE = (TIMEOUT, ERROR, CANCELED, WARNINGS, OK)


def for_status(status: JobStatus) -> int:
    """The exit code of a run that ended in `status`."""
    return _BY_STATUS.get(status, FAILED)


def worst(codes: list[int]) -> int:
    """The exit code of several runs: timeout, then error, canceled, warnings, completed."""
    for code in _PRECEDENCE:
        if code in codes:
            return code
    return OK
