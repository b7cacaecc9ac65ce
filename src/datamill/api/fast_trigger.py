"""The trigger route answered in front of FastAPI's routing, for scripts that trigger in bulk.

`POST /api/job-execution/<reference>/trigger` is what a client sends once per
run. Behind FastAPI, routing, dependency solving and the exception
middlewares cost the server more CPU than the trigger's own store work
(py-spy of `bench/throughput.py`). This path runs the route's own code
(`job_routes.trigger_as_caller`: sign-in and trigger in one trip to the
thread pool, `job_routes.triggered`: the answer); an error goes through the
application's own exception handlers, as it would behind FastAPI. A request
it does not recognise exactly (another method, a path that TolerantPaths
would rewrite, a body, a root path, a query string, an Idempotency-Key or a
Prefer header) is left to FastAPI.
"""

from __future__ import annotations

import inspect
import re

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from datamill.api import job_routes
from datamill.api.wire import tolerant_path

# As Starlette compiles the route's template, TRIGGER_ROUTE.
_PATH = re.compile(r"/api/job-execution/(.*)/trigger")
TRIGGER_ROUTE = "/api/job-execution/{reference:path}/trigger"
# Headers that ask for what only the route does: a replayed answer
# (api/idempotent.py) or a wait (api/waiting.py).
_ROUTE_HEADERS = frozenset({b"idempotency-key", b"prefer"})


def trigger_reference(scope: Scope) -> str | None:
    """The job reference of a plain trigger request, None for anything else."""
    if scope["type"] != "http" or scope["method"] != "POST" or scope.get("root_path"):
        return None
    path = scope["path"]
    match = _PATH.fullmatch(path)
    if match is None or tolerant_path(path) != path:
        return None
    if scope.get("query_string"):
        return None  # `?wait=` (api/waiting.py) and anything else: the route's
    for name, value in scope["headers"]:
        if name == b"transfer-encoding" or (name == b"content-length" and value != b"0"):
            return None
        if name in _ROUTE_HEADERS:
            return None
    return match.group(1)


async def answer_trigger(
    app: FastAPI, reference: str, scope: Scope, receive: Receive, send: Send
) -> None:
    """Trigger the job as the route does and send the route's answer, or its error's."""
    scope["app"] = app  # as Starlette sets it before routing: request.app reads it
    request = Request(scope, receive)
    try:
        execution = await run_in_threadpool(job_routes.trigger_as_caller, request, reference)
    except Exception as error:
        kind = next((k for k in type(error).__mro__ if k in app.exception_handlers), None)
        if kind is None:
            raise
        response = app.exception_handlers[kind](request, error)
        if inspect.isawaitable(response):  # Datamill's handlers are all async
            response = await response
        await response(scope, receive, send)
        if kind is Exception:
            raise  # as Starlette's ServerErrorMiddleware does once it has answered
        return
    await job_routes.triggered(execution)(scope, receive, send)
