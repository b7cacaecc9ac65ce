"""The FastAPI application factory and the one error mapping."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import DataError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from datamill.api import (
    artifact_routes,
    artifact_views,
    data_routes,
    event_routes,
    filesystem_routes,
    job_routes,
    legacy_routes,
    location_routes,
    log_routes,
    ops_routes,
    session_routes,
    system_routes,
    user_routes,
)
from datamill.api.fast_status import FastStatus
from datamill.api.fast_trigger import TRIGGER_ROUTE, answer_trigger, trigger_reference
from datamill.api.ops_routes import install_metrics
from datamill.api.types import CurrentUser
from datamill.api.wire import Clock, PrettyJSONResponse, failure, tolerant_path
from datamill.errors import DatamillError, NotAuthenticated, TooManyRequests
from datamill.observability.http import ROUTE_KEY, Observe
from datamill.services.artifacts import ArtifactService
from datamill.services.auth import Authenticator
from datamill.services.jobs import JobService
from datamill.services.resources import ResourceService
from datamill.services.sessions import Sessions, load_secret
from datamill.services.waiting import RunWatch, WaitLimit
from datamill.settings import Settings
from datamill.ui import install_ui

log = logging.getLogger(__name__)

# The template of the route the status fast path answers for.
STATUS_ROUTE = "/api/job-execution/{reference:path}/status"


class TolerantPaths:
    """Accept `//rest/...` and a trailing slash, as Datameer does."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Normalise the path, then pass the request on."""
        if scope["type"] == "http":
            path = tolerant_path(scope["path"])
            if path != scope["path"]:
                # Changed in place, so the route found below is seen by Observe.
                scope["path"], scope["raw_path"] = path, path.encode()
        await self.app(scope, receive, send)


class DatamillApp(FastAPI):
    """FastAPI with the status and trigger fast paths in front of all of its machinery."""

    fast_status: FastStatus | None = None
    fast_trigger = False
    # Triggers the fast path answered (tests tell the two paths apart by it).
    fast_triggered = 0
    observe: Observe | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Observe the request; let the fast path answer if it can, else the framework."""
        if self.observe is not None:
            await self.observe(scope, receive, send)
        else:
            await self.dispatch(scope, receive, send)

    async def dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A fast path if one answers, else the framework."""
        fast = self.fast_status
        if fast is not None and await fast.handle(scope, receive, send):
            scope[ROUTE_KEY] = STATUS_ROUTE
            return
        reference = trigger_reference(scope) if self.fast_trigger else None
        if reference is not None:
            scope[ROUTE_KEY] = TRIGGER_ROUTE
            self.fast_triggered += 1
            await answer_trigger(self, reference, scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def create_app(
    settings: Settings, jobs: JobService, *, fast_status: bool = True, fast_trigger: bool = True
) -> FastAPI:
    """Build the HTTP application around ready services.

    `fast_status=False` (`fast_trigger=False`) leaves every status (trigger)
    request to the FastAPI route (tests compare the two paths).
    """
    app = DatamillApp(
        title="Datamill",
        version="0.1.0",
        description=(
            "The Datameer X job REST API. Every route needs HTTP Basic credentials"
            " or the session cookie of GET /browser."
        ),
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.jobs = jobs
    app.state.settings = settings
    app.state.artifacts = ArtifactService(jobs)
    authenticator = Authenticator(
        jobs.store,
        failures_per_name=settings.login_failures_per_name,
        failures_per_client=settings.login_failures_per_client,
        refill_seconds=settings.login_refill_seconds,
        checks_at_once=settings.password_checks_at_once,
    )
    app.state.max_body_bytes = settings.max_body_bytes
    clock = Clock(settings.timezone)
    app.state.authenticator = authenticator
    session_secret = load_secret(
        settings.resolved_home,
        settings.session_secret.get_secret_value() if settings.session_secret else None,
    )
    app.state.sessions = Sessions(jobs.store, session_secret, settings.session_lifetime_seconds)
    app.state.clock = clock
    app.include_router(job_routes.router)
    app.include_router(event_routes.router)
    # Requests that wait for runs (docs/waiting.md) wake through this one watcher.
    run_watch = RunWatch(jobs.store.db)
    app.state.run_watch = run_watch
    app.state.wait_limit = WaitLimit(settings.max_waits_per_user)
    app.router.on_shutdown.append(run_watch.close)
    app.include_router(log_routes.router)
    app.include_router(legacy_routes.router)
    app.include_router(data_routes.router)
    app.include_router(artifact_routes.router)
    app.include_router(filesystem_routes.router)
    app.include_router(user_routes.router)
    app.include_router(location_routes.router)
    app.include_router(ops_routes.router)
    install_metrics(app, settings, jobs.store.metrics, jobs.store.db)
    app.include_router(artifact_views.router)
    app.include_router(system_routes.router)
    app.include_router(session_routes.router)
    app.state.resources = ResourceService(jobs.store)
    # The web UI (/ and /ui/...): pages for people, beside the API, sharing its sessions.
    install_ui(app, session_secret)

    @app.get("/openapi.json", include_in_schema=False)
    def openapi(_user: CurrentUser) -> Response:
        # Behind authentication like every other route but the health probe.
        return PrettyJSONResponse(_openapi_with_basic_auth(app))

    _install_error_mapping(app)
    app.add_middleware(TolerantPaths)
    if fast_status:
        app.fast_status = FastStatus(
            db=jobs.store.db, authenticator=authenticator, sessions=app.state.sessions, clock=clock
        )
    app.fast_trigger = fast_trigger
    # On SQLite the status fast path answers inside Observe (FastStatus.answer).
    shortcut = app.fast_status.shortcut if app.fast_status is not None else None
    app.observe = Observe(
        app.dispatch, jobs.store.metrics, shortcut=shortcut, shortcut_route=STATUS_ROUTE
    )
    return app


def _openapi_with_basic_auth(app: FastAPI) -> dict[str, Any]:
    schema = app.openapi()
    schema.setdefault("components", {})["securitySchemes"] = {
        "basic": {"type": "http", "scheme": "basic"}
    }
    schema["security"] = [{"basic": []}]
    return schema


BUSY_RETRY_AFTER_SECONDS = 5
"""The Retry-After of a 503 for a database pool that stayed exhausted."""


def _install_error_mapping(app: FastAPI) -> None:
    @app.exception_handler(DatamillError)
    async def _datamill_error(_request: Request, error: DatamillError) -> Response:
        headers = None
        if isinstance(error, NotAuthenticated):
            headers = {"WWW-Authenticate": 'Basic realm="datamill"'}
        elif isinstance(error, TooManyRequests):
            headers = {"Retry-After": str(error.retry_after)}
        return failure(error.http_status, error.message, headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, error: RequestValidationError) -> Response:
        problems = []
        for item in error.errors():
            where = ".".join(str(p) for p in item.get("loc", ()) if p not in ("path", "query"))
            problems.append(f"{where}: {item.get('msg')}" if where else str(item.get("msg")))
        return failure(400, "; ".join(problems) or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, error: StarletteHTTPException) -> Response:
        reasons: dict[int, str] = {
            404: "No such route.",
            405: "This method is not allowed on this route.",
        }
        reason: Any = reasons.get(error.status_code, error.detail)
        return failure(error.status_code, str(reason), getattr(error, "headers", None))

    @app.exception_handler(DataError)
    async def _unstorable(_request: Request, _error: DataError) -> Response:
        # e.g. a NUL character, which PostgreSQL text cannot hold.
        return failure(400, "the request holds a value that cannot be stored or looked up")

    @app.exception_handler(PoolTimeout)
    async def _busy(_request: Request, _error: PoolTimeout) -> Response:
        # Every pooled database connection stayed in use for the pool's timeout
        # (30 s): the server is overloaded, not wrong (attack review on
        # PostgreSQL: 45 concurrent 3,000-file plans of one user made others'
        # requests 500).
        log.warning("no database connection became free in time; answered 503")
        return failure(
            503,
            "the server is busy: all of its database connections are in use; try again shortly",
            {"Retry-After": str(BUSY_RETRY_AFTER_SECONDS)},
        )

    @app.exception_handler(Exception)
    async def _bug(_request: Request, error: Exception) -> Response:
        log.error("internal error answering a request", exc_info=error)
        return PrettyJSONResponse(
            {"status": "failure", "reason": f"internal error: {type(error).__name__}"},
            status_code=500,
        )
