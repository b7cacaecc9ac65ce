"""The status route below the framework: the call that scripts make in a loop.

Schedulers and shell scripts poll `GET /api/job-execution/<file-id>/status`
many times a second. Through FastAPI that request costs two thread-pool hops
and six SQLAlchemy statements. `FastStatus` answers the common case itself:
a numeric file id, Basic credentials that the Authenticator verified a
moment ago, a job the caller may read, and a newest run that is not RUNNING.
It reads everything in one SQL statement on a connection of its own: in the
event loop on SQLite (the read takes tens of microseconds, and a lock wait is
cut short at 50 ms), in a worker thread on PostgreSQL, whose connection has a
connect and a statement timeout; after a failure the fast path stands aside
for a few seconds. So a stalled database never freezes the event loop.

Everything else falls through to the FastAPI route, unchanged: the first
login, wrong credentials, unknown or unreadable files, RUNNING runs (their
answer includes an estimate), and any database error. The answer is built
by `status_body`, which the route uses too, so the two paths give the same bytes.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import threading
import time
from typing import Any

import psycopg
from starlette.concurrency import run_in_threadpool
from starlette.types import Receive, Scope, Send

from datamill.api.security import basic_credentials
from datamill.api.wire import Clock, PrettyJSONResponse
from datamill.domain.status import JobStatus
from datamill.errors import NotAuthenticated
from datamill.services.auth import Authenticator
from datamill.services.wakeup import libpq_conninfo
from datamill.store.db import Database

# Doubled and trailing slashes are accepted as TolerantPaths accepts them.
_PATH = re.compile(r"/+api/+job-execution/+([0-9]{1,9})/+status/*")

_CONTENT_TYPE = (b"content-type", b"application/json")
_RENDERED_LIMIT = 10_000
CONNECT_TIMEOUT_SECONDS = 2
STATEMENT_TIMEOUT_MS = 2_000
SQLITE_BUSY_MS = 50
BACKOFF_SECONDS = 5.0

# Readability follows services/permissions.has_access: ADMIN, owner, others
# flag, or a readable group of the caller. The newest run is the highest id.
# The capability job.read is certain only for the built-in roles (they cannot
# be changed); callers with other roles take the ordinary route, which checks it.
_QUERY = """
SELECT u.password_hash,
       EXISTS (SELECT 1 FROM user_roles r
               WHERE r.user_name = u.name AND r.role_name = 'ADMIN'),
       f.owner,
       f.others_readable,
       EXISTS (SELECT 1 FROM file_group_permissions g
               JOIN user_groups ug ON ug.group_name = g.group_name
               WHERE g.file_id = f.id AND ug.user_name = u.name AND g.readable),
       e.id, e.status, e.started_at, e.finished_at,
       EXISTS (SELECT 1 FROM user_roles r
               WHERE r.user_name = u.name AND r.role_name IN ('ADMIN', 'ANALYST'))
FROM users u
JOIN files f ON f.id = {param}
JOIN job_configurations c ON c.file_id = f.id
LEFT JOIN executions e ON e.id = (
    SELECT max(x.id) FROM executions x WHERE x.job_configuration_id = c.id)
WHERE u.name = {param}
"""


def status_body(
    clock: Clock,
    file_id: int,
    execution_id: int | None,
    status: JobStatus | None,
    started_at: dt.datetime | None,
    finished_at: dt.datetime | None,
    *,
    estimate: str | None = None,
    progress: str | None = None,
) -> dict[str, Any]:
    """The v2 status document (spec §4.1)."""
    if execution_id is None or status is None:
        return {"status": "success", "job-status": "_NONE"}
    body: dict[str, Any] = {
        "status": "success",
        "file-id": file_id,
        "job-execution-id": execution_id,
        "job-status": status.value,
        "start-time": clock.datameer(started_at),
    }
    if status is JobStatus.RUNNING:
        body["estimate-time"] = estimate
        body["job-progress"] = progress
    elif status.is_terminal:
        body["stop-time"] = clock.datameer(finished_at)
    return body


def _credentials(scope: Scope) -> tuple[str, str] | None:
    for key, value in scope["headers"]:
        if key == b"authorization":
            try:
                # Header values are latin-1, as Starlette decodes them for the route.
                return basic_credentials(value.decode("latin-1"))
            except NotAuthenticated:
                return None  # the route answers with the reason
    return None


def _time(value: Any) -> dt.datetime | None:
    # SQLite hands back SQLAlchemy's stored text, PostgreSQL a datetime.
    if value is None or isinstance(value, dt.datetime):
        return value
    return dt.datetime.fromisoformat(str(value))


class FastStatus:
    """Answers the common status request before FastAPI sees it."""

    def __init__(self, *, db: Database, authenticator: Authenticator, clock: Clock) -> None:
        self._db = db
        self._authenticator = authenticator
        self._clock = clock
        self._sql = _QUERY.format(param="?" if db.is_sqlite else "%s")
        self._connection: Any = None
        self._rendered: dict[tuple[Any, ...], bytes] = {}
        self._lock = threading.Lock()
        # After a database failure the route answers until then (monotonic).
        self._resume_at = 0.0
        # How many requests this path answered itself (tests look at it).
        self.answered = 0

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> bool:
        """Answer a plain status request and return True, or return False and do nothing."""
        if scope["type"] != "http" or scope["method"] != "GET":
            return False
        match = _PATH.fullmatch(scope["path"])
        if match is None:
            return False
        if time.monotonic() < self._resume_at:
            return False
        if self._db.is_sqlite:
            body = self._answer(scope, int(match.group(1)))
        else:
            # A network round trip that may stall: never on the event loop.
            body = await run_in_threadpool(self._answer, scope, int(match.group(1)))
        if body is None:
            return False
        self.answered += 1
        # The headers PrettyJSONResponse sends, without building one.
        headers = [(b"content-length", str(len(body)).encode()), _CONTENT_TYPE]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return True

    def _answer(self, scope: Scope, file_id: int) -> bytes | None:
        credentials = _credentials(scope)
        if credentials is None:
            return None
        name, password = credentials
        row = self._read(file_id, name)
        if row is None:
            return None
        password_hash, is_admin, owner, others, group, execution_id, status = row[:7]
        if not self._authenticator.recently_verified(name, password, password_hash):
            return None
        if not (is_admin or owner == name or others or group):
            return None
        if not row[9]:
            return None
        if status == JobStatus.RUNNING.value:
            return None
        # The answer for one state of one run never changes: render it once.
        key = (file_id, *row[5:9])
        body = self._rendered.get(key)
        if body is None:
            if len(self._rendered) >= _RENDERED_LIMIT:
                self._rendered.clear()
            document = status_body(
                self._clock,
                file_id,
                execution_id,
                JobStatus(status) if status is not None else None,
                _time(row[7]),
                _time(row[8]),
            )
            body = self._rendered[key] = bytes(PrettyJSONResponse(document).body)
        return body

    def _read(self, file_id: int, name: str) -> tuple[Any, ...] | None:
        # One request at a time on the dedicated connection; a second one
        # arriving meanwhile (another event loop) takes the ordinary route.
        if not self._lock.acquire(blocking=False):
            return None
        try:
            if self._connection is None:
                self._connection = self._connect()
            cursor = self._connection.cursor()
            try:
                cursor.execute(self._sql, (file_id, name))
                row = cursor.fetchone()
            finally:
                cursor.close()
            return tuple(row) if row is not None else None
        except Exception:
            # The ordinary route reports database trouble properly; start afresh
            # once the database has had a moment.
            self._close()
            self._resume_at = time.monotonic() + BACKOFF_SECONDS
            return None
        finally:
            self._lock.release()

    def _connect(self) -> Any:
        if not self._db.is_sqlite:
            # Its own connection with timeouts, not the pool's (which has none);
            # autocommit: each read sees the newest commit, no transaction stays open.
            return psycopg.connect(
                libpq_conninfo(self._db.url),
                autocommit=True,
                connect_timeout=CONNECT_TIMEOUT_SECONDS,
                options=f"-c statement_timeout={STATEMENT_TIMEOUT_MS}",
            )
        pooled = self._db.engine.raw_connection()
        connection = pooled.driver_connection
        # Kept for good rather than returned to the pool after each request.
        pooled.detach()
        # Readers do not wait in WAL mode; should one have to, the route waits instead.
        connection.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_MS}")  # type: ignore[union-attr]
        return connection

    def _close(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):
                self._connection.close()
            self._connection = None

    def close(self) -> None:
        """Close the dedicated connection."""
        with self._lock:
            self._close()
