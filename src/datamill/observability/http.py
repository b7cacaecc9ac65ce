"""Per-request observation below the framework: request id, counts and times by route.

A plain ASGI wrapper (not BaseHTTPMiddleware, which runs each request in a
task of its own and copies the body through a stream): it reads one header,
wraps `send` to add one header and note the status, and counts after the
answer is sent. A shortcut (the status fast path on SQLite) answers before
all of that, with the same header and the same counts. The label is the
route's template (`/api/job-execution/{reference:path}/status`), never the
raw path, so the series stay bounded.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import re
import secrets
import time
from collections.abc import Callable

from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from datamill.observability.logs import bind, bound, unbind
from datamill.observability.metrics import Metrics

log = logging.getLogger("datamill.http")

REQUEST_ID_HEADER = b"x-request-id"
# What a client may send as its own request id: bounded, printable, no spaces.
_SANE_ID = re.compile(rb"[\x21-\x7e]{1,128}")
UNMATCHED = "<unmatched>"
# Set by the status fast path, which answers before any route is matched.
ROUTE_KEY = "datamill.route"

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
TRIGGER_ROUTES = frozenset(
    {
        "/api/job-execution/{reference:path}/trigger",
        "/api/job-execution/sequential-trigger",
        "/rest/job-execution",
    }
)


# A request answered in front of the app, synchronously: the headers (a fresh
# list) and body of a 200, or None to pass the request on. The status fast
# path on SQLite is one (api/fast_status.py FastStatus.answer).
Shortcut = Callable[[Scope], "tuple[list[tuple[bytes, bytes]], bytes] | None"]


# A made request id is a random per-process prefix and a counter (32 hex
# characters, like a uuid4's hex): unique without reading the OS's random
# source on every request, which the status poll's profile showed.
_prefix = secrets.token_hex(8)
_counter = itertools.count()


def _new_prefix() -> None:
    global _prefix, _counter
    _prefix, _counter = secrets.token_hex(8), itertools.count()


# A forked child must not hand out its parent's ids again.
os.register_at_fork(after_in_child=_new_prefix)


def request_id_of(scope: Scope) -> str:
    """The client's X-Request-Id if it is sane, else a new one."""
    for name, value in scope["headers"]:
        if name == REQUEST_ID_HEADER:
            if _SANE_ID.fullmatch(value):
                return str(value.decode("ascii"))
            break
    return f"{_prefix}{next(_counter):016x}"


def route_of(scope: Scope) -> str:
    """The template of the route that answered, or a fixed label for none."""
    template = scope.get(ROUTE_KEY)
    if template is not None:
        return str(template)
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED


class Observe:
    """Gives each HTTP request an id (echoed in X-Request-Id) and counts it by route.

    A `shortcut` answers first if it can (labelled `shortcut_route`): Observe
    sends its answer with the request id itself and counts it, without the
    wrapped `send` and the extra `await` layers every other request goes
    through. The shortcut logs nothing, so there is nothing to bind the
    request id to but Observe's own debug line.
    """

    def __init__(
        self,
        app: ASGIApp,
        metrics: Metrics,
        *,
        shortcut: Shortcut | None = None,
        shortcut_route: str = UNMATCHED,
    ) -> None:
        self.app = app
        self.metrics = metrics
        # The series of each (method, route, status): `labels` looks them up
        # under a lock on every call, which showed in the status poll's
        # profile. Bounded like the label values themselves; series are
        # never removed from the registry, so a kept one stays the live one.
        self._series: dict[tuple[str, str, str], _Series] = {}
        self._shortcut = shortcut
        self._shortcut_route = shortcut_route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on, observing its answer."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        if self._shortcut is not None:
            answer = self._shortcut(scope)
            if answer is not None:
                await self._send_shortcut(scope, send, answer, started)
                return
        request_id = request_id_of(scope)
        header = (REQUEST_ID_HEADER, request_id.encode("ascii"))
        status = 500

        async def observed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        token = bind(request_id=request_id)
        try:
            await self.app(scope, receive, observed_send)
        finally:
            self._count(scope, status, time.perf_counter() - started)
            unbind(token)

    async def _send_shortcut(
        self,
        scope: Scope,
        send: Send,
        answer: tuple[list[tuple[bytes, bytes]], bytes],
        started: float,
    ) -> None:
        headers, body = answer
        request_id = request_id_of(scope)
        headers.append((REQUEST_ID_HEADER, request_id.encode("ascii")))
        try:
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": body})
        finally:
            # Counted like any request whose answer started: as a 200, also
            # when the client went away meanwhile.
            seconds = time.perf_counter() - started
            method, route = scope["method"], self._shortcut_route
            if log.isEnabledFor(logging.DEBUG):
                with bound(request_id=request_id):
                    _log_request(method, route, "200", seconds)
            self._observe(method, route, "200", seconds)

    def _count(self, scope: Scope, status: int, seconds: float) -> None:
        route = route_of(scope)
        code = str(status)
        method = scope["method"] if scope["method"] in METHODS else "OTHER"
        if log.isEnabledFor(logging.DEBUG):
            _log_request(method, route, code, seconds)
        self._observe(method, route, code, seconds)

    def _observe(self, method: str, route: str, code: str, seconds: float) -> None:
        key = (method, route, code)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = _Series.of(self.metrics, method, route, code)
        series.requests.inc()
        series.duration.observe(seconds)
        if series.triggers is not None:
            series.triggers.inc()


def _log_request(method: str, route: str, code: str, seconds: float) -> None:
    # The template, not the path: a path may hold names users typed.
    log.debug("%s %s -> %s in %.1f ms", method, route, code, seconds * 1e3)


@dataclasses.dataclass(frozen=True, slots=True)
class _Series:
    """The labelled metrics one (method, route, status) counts into."""

    requests: Counter
    duration: Histogram
    triggers: Counter | None

    @classmethod
    def of(cls, metrics: Metrics, method: str, route: str, code: str) -> _Series:
        """Look the series up (and create them) once."""
        triggers = None
        if route in TRIGGER_ROUTES:
            triggers = metrics.trigger_requests.labels(route, code)
        return cls(
            metrics.http_requests.labels(method, route, code),
            metrics.http_duration.labels(route),
            triggers,
        )
