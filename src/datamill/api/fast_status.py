"""The status route below the framework: the call that scripts make in a loop.

Schedulers and shell scripts poll `GET /api/job-execution/<reference>/status`
many times a second. Through FastAPI that request costs two thread-pool hops
and six SQLAlchemy statements. `FastStatus` answers the successful case
itself: a reference the route accepts (file id, uuid, or path, with `+` for
spaces), Basic credentials that the Authenticator verified a moment ago or a
valid session cookie, a caller whose role certainly grants job.read and who
may read the file, and any state of the newest run but QUEUED and WAITING
(the route adds their queue position). It reads everything in
one SQL statement on a connection of its own (for a RUNNING run the same
statement brings the newest successful runs its remaining-time estimate
needs, one row each): in the event loop on SQLite
(the read takes tens of microseconds, and a lock wait is cut short at 50 ms),
in a worker thread on PostgreSQL, whose connection has a connect and a
statement timeout; after a failure the fast path stands aside for a few
seconds. So a stalled database never freezes the event loop.

On SQLite the statement's rows are kept while the database stays unchanged:
`PRAGMA data_version` (a quarter of the statement's cost) changes whenever
any other connection, in this process or another, commits; then every kept
row is dropped. A statement's rows depend on nothing but the database's
content and its parameters, so a kept row is exactly what the statement
would read now: nothing of a run, a user or a permission is older than the
last commit. (The estimate's clock and the credential checks are evaluated
on every poll, as before.) The version itself is read once per batch of the
event loop's callbacks (api/kept_rows.py says why that is as fresh).

Everything else falls through to the FastAPI route, unchanged: the first
login, wrong credentials, unknown or unreadable files, files that are no
job, callers with other roles, and any database error: every error answer
is the route's. The answer is built by `status_body`, which the route uses
too, so the two paths give the same bytes.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import re
import threading
import time
from typing import Any, NamedTuple

import psycopg
from starlette.concurrency import run_in_threadpool
from starlette.requests import cookie_parser
from starlette.types import Receive, Scope, Send

from datamill.api.kept_rows import KeptRows
from datamill.api.security import basic_credentials
from datamill.api.wire import Clock, PrettyJSONResponse, tolerant_path
from datamill.domain.estimate import format_duration, remaining_seconds
from datamill.domain.status import JobStatus
from datamill.errors import NotAuthenticated
from datamill.observability.http import Shortcut
from datamill.services.auth import Authenticator
from datamill.services.sessions import COOKIE_NAME, Sessions
from datamill.services.wakeup import libpq_conninfo
from datamill.store.db import Database
from datamill.store.executions import ESTIMATE_RUNS, mean_seconds
from datamill.store.files import reference_key

# The route's template `/api/job-execution/{reference:path}/status` after
# TolerantPaths: the path converter is greedy, so is this.
_PATH = re.compile(r"/api/job-execution/(.*)/status")

_CONTENT_TYPE = (b"content-type", b"application/json")
_ESTIMATE = b',\n  "estimate-time": '
# A RUNNING body's last two members after its cached head. Both values are
# ASCII letters, digits and spaces (format_duration, an int), which JSON
# writes as they are: no json.dumps needed to stay byte for byte the route's.
_RUNNING_TAIL = b'%s,\n  "estimate-time": "%s",\n  "job-progress": "%s"\n}'
_RUNNING = JobStatus.RUNNING.value
_RENDERED_LIMIT = 10_000
CONNECT_TIMEOUT_SECONDS = 2
STATEMENT_TIMEOUT_MS = 2_000
SQLITE_BUSY_MS = 50
BACKOFF_SECONDS = 5.0

# One row if the file exists (whoever asks), None if it does not: the '+'
# spelling is retried with spaces only then, as JobService.resolve_file does.
# Readability follows services/permissions.has_access: ADMIN, owner, others
# flag, or a readable group of the caller. The newest run is the highest id.
# The capability job.read is certain only for the built-in roles (they cannot
# be changed); callers with other roles take the ordinary route, which checks it.
# If the newest run is RUNNING, the statement gives one row per newest
# successful run (s.*, at most ESTIMATE_RUNS, as store/executions.py's
# _newest_successes picks them) for its estimate; otherwise (and without any) one row with s.* NULL.
_QUERY = """
SELECT u.password_hash,
       u.session_epoch,
       EXISTS (SELECT 1 FROM user_roles r
               WHERE r.user_name = u.name AND r.role_name = 'ADMIN'),
       EXISTS (SELECT 1 FROM user_roles r
               WHERE r.user_name = u.name AND r.role_name IN ('ADMIN', 'ANALYST')),
       f.owner,
       f.others_readable,
       EXISTS (SELECT 1 FROM file_group_permissions g
               JOIN user_groups ug ON ug.group_name = g.group_name
               WHERE g.file_id = f.id AND ug.user_name = u.name AND g.readable),
       f.id,
       c.id,
       e.id, e.status, e.started_at, e.finished_at, e.progress,
       s.id, s.started_at, s.finished_at
FROM files f
LEFT JOIN users u ON u.name = {param}
LEFT JOIN job_configurations c ON c.file_id = f.id
LEFT JOIN executions e ON e.id = (
    SELECT max(x.id) FROM executions x WHERE x.job_configuration_id = c.id)
{successes}
WHERE f.{column} = {param}
"""
_SUCCESSES = """
    SELECT {columns} FROM executions y
    WHERE e.status = 'RUNNING' AND y.job_configuration_id = c.id
      AND y.status IN ('COMPLETED', 'COMPLETED_WITH_WARNINGS') AND y.started_at IS NOT NULL
    ORDER BY y.id DESC LIMIT {last}"""
# SQLite has no LATERAL: a correlated IN list on the primary key is its
# equivalent (one rowid lookup per listed id). PostgreSQL plans LATERAL better.
_SQLITE_SUCCESSES = "LEFT JOIN executions s ON s.id IN ({})".format(
    _SUCCESSES.format(columns="y.id", last=ESTIMATE_RUNS)
)
_POSTGRES_SUCCESSES = "LEFT JOIN LATERAL ({}) s ON TRUE".format(
    _SUCCESSES.format(columns="y.id, y.started_at, y.finished_at", last=ESTIMATE_RUNS)
)
_COLUMNS = ("id", "uuid", "path")
# A run not started yet: the route adds its queue position, so it answers.
_PENDING = (JobStatus.QUEUED.value, JobStatus.WAITING_FOR_OTHER_JOB.value)
_HEAD = 14  # the columns before s.*
# The clock of a RUNNING run's elapsed time (tests freeze it).
posix_now = time.time
# Set on a request the fast path declined, so that it is not asked twice.
_DECLINED = "datamill.fast_status_declined"


def running_members(remaining: float | None, progress: float | None) -> tuple[str, str]:
    """A RUNNING document's last two members: estimate-time and job-progress."""
    return format_duration(remaining or 0.0), str(int((progress or 0.0) * 100))


def status_body(
    clock: Clock,
    file_id: int,
    execution_id: int | None,
    status: JobStatus | None,
    started_at: dt.datetime | None,
    finished_at: dt.datetime | None,
    *,
    remaining: float | None = None,
    progress: float | None = None,
) -> dict[str, Any]:
    """The v2 status document (spec §4.1); `remaining` and `progress` count if RUNNING."""
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
        body["estimate-time"], body["job-progress"] = running_members(remaining, progress)
    elif status.is_terminal:
        body["stop-time"] = clock.datameer(finished_at)
    return body


# Reading a path checks it character by character (twice the rest of the
# request): pollers repeat the same few references, so remember the answer.
_reference_key = functools.lru_cache(maxsize=4096)(reference_key)


class _Caller(NamedTuple):
    """Who asks: Basic credentials, or the claim of a session cookie (checked against the row).

    A tuple, not a frozen dataclass: made on every poll, and a frozen
    dataclass's __init__ costs several times a tuple's.
    """

    name: str
    password: str | None  # None: a session cookie, whose claim is below
    epoch: int = 0
    fingerprint: str = ""


def _caller(scope: Scope, sessions: Sessions) -> _Caller | None:
    """As api/security.current_user reads it: Basic wins, a cookie counts only without it."""
    cookies: bytes | None = None
    for key, value in scope["headers"]:
        if key == b"authorization":
            try:
                # Header values are latin-1, as Starlette decodes them for the route.
                name, password = basic_credentials(value.decode("latin-1"))
            except NotAuthenticated:
                return None  # the route answers with the reason
            return _Caller(name, password)
        if key == b"cookie" and cookies is None:
            cookies = value
    if cookies is None:
        return None
    cookie = cookie_parser(cookies.decode("latin-1")).get(COOKIE_NAME)
    claim = sessions.claim(cookie) if cookie else None
    if claim is None:
        return None
    return _Caller(claim.name, None, claim.epoch, claim.fingerprint)


def _time(value: Any) -> dt.datetime | None:
    return None if value is None else _datetime(value)


@functools.lru_cache(maxsize=1024)
def _mean(runs: tuple[tuple[Any, Any], ...]) -> float | None:
    """mean_seconds of stored (started_at, finished_at) values; a pure function, so cached."""
    return mean_seconds([(_datetime(a), _time(b)) for a, b in runs])


def _datetime(value: Any) -> dt.datetime:
    # SQLite hands back SQLAlchemy's stored text, PostgreSQL a datetime.
    if isinstance(value, dt.datetime):
        return value
    return dt.datetime.fromisoformat(str(value))


class _Rendered(NamedTuple):
    """A rendered answer: the whole body with its length, or a RUNNING one's head."""

    body: bytes
    length: tuple[bytes, bytes] | None  # None: RUNNING, the body is a head
    started_at: float | None  # a RUNNING run's start, POSIX seconds


class FastStatus:
    """Answers the successful status request before FastAPI sees it."""

    def __init__(
        self, *, db: Database, authenticator: Authenticator, sessions: Sessions, clock: Clock
    ) -> None:
        self._db = db
        self._authenticator = authenticator
        self._sessions = sessions
        self._clock = clock
        param = "?" if db.is_sqlite else "%s"
        successes = _SQLITE_SUCCESSES if db.is_sqlite else _POSTGRES_SUCCESSES
        self._sql = {c: _QUERY.format(param=param, column=c, successes=successes) for c in _COLUMNS}
        self._connection: Any = None
        # SQLite: rows by (sql, parameters) and RUNNING estimates' means, as of
        # one data version (api/kept_rows.py).
        self._kept = KeptRows()
        # A rendered body (a RUNNING one's head) and the run's start time.
        self._rendered: dict[tuple[Any, ...], _Rendered] = {}
        self._lock = threading.Lock()
        # After a database failure the route answers until then (monotonic).
        self._resume_at = 0.0
        # How many requests this path answered itself (tests look at it).
        self.answered = 0

    @property
    def shortcut(self) -> Shortcut | None:
        """What Observe calls first (`answer`): on SQLite only; PostgreSQL reads in a thread."""
        return self.answer if self._db.is_sqlite else None

    def answer(self, scope: Scope) -> tuple[list[tuple[bytes, bytes]], bytes] | None:
        """On SQLite: the headers and body of a 200 for a plain status request, or None.

        Synchronous (the SQLite read takes microseconds): Observe calls it
        before anything else and sends the answer itself with the request id,
        so the poll pays no wrapper, closure or extra `await` layer. The
        headers are a fresh list the caller may extend.
        """
        reference = self._reference(scope)
        if reference is None:
            return None
        answer = self._answer(scope, reference)
        if answer is None:
            # Declined: the route answers; `handle` need not ask the store again.
            scope[_DECLINED] = True
            return None
        self.answered += 1
        length, body = answer
        return [length, _CONTENT_TYPE], body

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> bool:
        """Answer a plain status request and return True, or return False and do nothing."""
        if _DECLINED in scope:
            return False
        reference = self._reference(scope)
        if reference is None:
            return False
        if self._db.is_sqlite:
            answer = self._answer(scope, reference)
        else:
            # A network round trip that may stall: never on the event loop.
            answer = await run_in_threadpool(self._answer, scope, reference)
        if answer is None:
            return False
        self.answered += 1
        length, body = answer
        # The headers PrettyJSONResponse sends, without building one.
        headers = [length, _CONTENT_TYPE]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return True

    def _reference(self, scope: Scope) -> str | None:
        """The reference of a plain status request the fast path may answer, else None."""
        if scope["type"] != "http" or scope["method"] != "GET":
            return None
        path = scope["path"]
        if "//" in path or path.endswith("/"):
            path = tolerant_path(path)  # the only two things it changes
        match = _PATH.fullmatch(path)
        if match is None:
            return None
        if b"wait" in scope["query_string"]:
            return None  # a waiting request (api/waiting.py): the route waits
        for key, _value in scope["headers"]:
            if key == b"prefer":
                return None  # likewise
        if time.monotonic() < self._resume_at:
            return None
        return match.group(1)

    def _answer(self, scope: Scope, reference: str) -> tuple[tuple[bytes, bytes], bytes] | None:
        caller = _caller(scope, self._sessions)
        if caller is None:
            return None
        # One request at a time on the dedicated connection; a second one
        # arriving meanwhile (another event loop) takes the ordinary route.
        if not self._lock.acquire(blocking=False):
            return None
        try:
            if self._db.is_sqlite:
                self._kept.refresh(self._data_version)
            rows = self._rows(reference, caller.name)
            if rows is None or not self._allowed(caller, rows[0]) or rows[0][10] in _PENDING:
                return None
            return self._body(rows)
        except Exception:
            # The ordinary route reports database trouble properly; start afresh
            # once the database has had a moment.
            self._close()
            self._resume_at = time.monotonic() + BACKOFF_SECONDS
            return None
        finally:
            self._lock.release()

    def _rows(self, reference: str, name: str) -> list[tuple[Any, ...]] | None:
        """The rows of the file the reference names, as JobService.resolve_file finds it."""
        rows = self._file_rows(reference, name)
        if rows is None and "+" in reference:
            # Datameer tells users to write spaces as '+'; a real '+' in a name wins.
            rows = self._file_rows(reference.replace("+", " "), name)
        return rows

    def _file_rows(self, reference: str, name: str) -> list[tuple[Any, ...]] | None:
        key = _reference_key(reference)
        if key is None:
            return None
        column, value = key
        sql = self._sql[column]
        if not self._db.is_sqlite:
            return self._execute(sql, (name, value)) or None
        kept = self._kept.rows.get((sql, name, value))
        if kept is None:
            kept = self._execute(sql, (name, value))
            self._kept.keep((sql, name, value), kept)
        return kept or None

    def _data_version(self) -> Any:
        """Changes whenever another connection commits."""
        return self._execute("PRAGMA data_version", ())[0][0]

    def _allowed(self, caller: _Caller, row: tuple[Any, ...]) -> bool:
        """Whether the route would answer this caller 200: signed in, job.read, READ, a job."""
        password_hash, epoch, is_admin, reads_jobs, owner, others, group = row[:7]
        # No such user (a NULL hash): neither check below accepts it.
        if caller.password is not None:
            verified = self._authenticator.recently_verified
            if not verified(caller.name, caller.password, password_hash):
                return False
        elif not self._sessions.holds(caller.epoch, caller.fingerprint, password_hash, epoch):
            return False
        if not reads_jobs:
            return False
        if not (is_admin or owner == caller.name or others or group):
            return False
        return row[8] is not None  # a job configuration: else "is not a job"

    def _body(self, rows: list[tuple[Any, ...]]) -> tuple[tuple[bytes, bytes], bytes]:
        """The content-length header and the body of the answer."""
        file_id, _config_id, execution_id, status, started, finished, progress = rows[0][7:_HEAD]
        # The answer for one state of one run never changes: render it once. A
        # RUNNING one's last two members do (each second, or with each
        # progress report): its head is rendered once and they are appended.
        key = (file_id, execution_id, status, started, finished)
        rendered = self._rendered.get(key)
        if rendered is None:
            rendered = self._render(key)
        body, length, started_at = rendered
        if length is not None:
            return length, body
        remaining = None
        if started_at is not None:
            # JobService.remaining: the newest successful runs' mean duration and
            # the pace. Elapsed from the POSIX clock and the start's POSIX time,
            # which is utcnow() - start without building two datetimes per poll.
            elapsed = posix_now() - started_at
            remaining = remaining_seconds(elapsed, progress, self._mean_of(key, rows))
        estimate, percent = running_members(remaining, progress)
        body = _RUNNING_TAIL % (body, estimate.encode(), percent.encode())
        return (b"content-length", b"%d" % len(body)), body

    def _render(self, key: tuple[Any, ...]) -> _Rendered:
        """Render the answer (a RUNNING one's head) for one state of one run, and keep it."""
        if len(self._rendered) >= _RENDERED_LIMIT:
            self._rendered.clear()
        file_id, execution_id, status, started, finished = key
        start = _time(started)
        document = status_body(
            self._clock,
            file_id,
            execution_id,
            JobStatus(status) if status is not None else None,
            start,
            _time(finished),
        )
        body = bytes(PrettyJSONResponse(document).body)
        if status == _RUNNING:
            head = body[: body.rindex(_ESTIMATE)]
            # The store's times are naive UTC.
            at = None if start is None else start.replace(tzinfo=dt.UTC).timestamp()
            rendered = _Rendered(head, None, at)
        else:
            rendered = _Rendered(body, (b"content-length", b"%d" % len(body)), None)
        self._rendered[key] = rendered
        return rendered

    def _mean_of(self, key: tuple[Any, ...], rows: list[tuple[Any, ...]]) -> float | None:
        """The mean duration of the newest successful runs the statement brought."""
        if self._db.is_sqlite:
            # Kept with the rows it comes from: dropped when they are.
            means = self._kept.means
            if key in means:
                return means[key]
        successes = sorted((row[_HEAD:] for row in rows if row[_HEAD] is not None), reverse=True)
        mean = _mean(tuple((a, b) for _id, a, b in successes))
        if self._db.is_sqlite:
            self._kept.means[key] = mean
        return mean

    def _execute(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        if self._connection is None:
            self._connection = self._connect()
        cursor = self._connection.cursor()
        try:
            cursor.execute(sql, params)
            rows: list[tuple[Any, ...]] = cursor.fetchall()  # tuples on both drivers
        finally:
            cursor.close()
        return rows

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
        self._kept.forget()
        if self._connection is not None:
            with contextlib.suppress(Exception):
                self._connection.close()
            self._connection = None

    def close(self) -> None:
        """Close the dedicated connection."""
        with self._lock:
            self._close()
