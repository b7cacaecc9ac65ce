"""Routes for operators and their probes: /health, /ready, /metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI, Request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import Response

from datamill.api.types import CurrentUser
from datamill.api.wire import PrettyJSONResponse
from datamill.observability.metrics import Metrics
from datamill.services.permissions import Capability, require_capability
from datamill.settings import Settings
from datamill.store import health as store_health
from datamill.store.db import Database

router = APIRouter(include_in_schema=False)


@router.get("/health")
def health() -> dict[str, str]:
    """Liveness: the process answers HTTP (no database access)."""
    return {"status": "ok"}


@router.get("/ready")
def ready(request: Request) -> Response:
    """Readiness: the database answers, its schema is at head, the worker (if any) beats.

    Without credentials, like /health: probes have none. The answer names the
    failing check in fixed words and never an error's text (which could name
    hosts, users or paths).
    """
    state = request.app.state
    checks = readiness(state.jobs.store.db, state.jobs.store.metrics, state.settings)
    failing = [f"{name}: {result}" for name, result in checks.items() if result != "ok"]
    if failing:
        body: dict[str, Any] = {"status": "unready", "reason": "; ".join(failing)}
        return PrettyJSONResponse({**body, "checks": checks}, status_code=503)
    return PrettyJSONResponse({"status": "ready", "checks": checks})


def readiness(db: Database, metrics: Metrics, settings: Settings) -> dict[str, str]:
    """Each check's result: 'ok' or why not."""
    checks: dict[str, str] = {}
    try:
        revision = store_health.schema_revision(db)
    except Exception:
        checks["database"] = "the metadata database does not answer"
        checks["schema"] = "unknown"
    else:
        checks["database"] = "ok"
        checks["schema"] = (
            "ok"
            if revision == store_health.head_revision()
            else "the metadata schema is not the one this server needs (migrations pending?)"
        )
    if metrics.has_worker:
        age = metrics.seconds_since_heartbeat()
        checks["worker"] = (
            "ok"
            if age <= settings.worker_lost_seconds
            else f"the worker's last heartbeat is {int(age)} s old"
        )
    return checks


def install_metrics(app: FastAPI, settings: Settings, metrics: Metrics, db: Database) -> None:
    """Add GET /metrics as DATAMILL_METRICS says; queue gauges are read at scrape time."""
    if settings.metrics == "off":
        return
    metrics.watch_queue(lambda: store_health.queue_depth(db))

    if settings.metrics == "open":

        @app.get("/metrics", include_in_schema=False)
        def open_metrics() -> Response:
            return _exposition(metrics)

        return

    @app.get("/metrics", include_in_schema=False)
    def metrics_for(user: CurrentUser) -> Response:
        with db.read() as conn:
            require_capability(conn, user, Capability.METRICS_READ)
        return _exposition(metrics)


def _exposition(metrics: Metrics) -> Response:
    return Response(generate_latest(metrics.exposed), media_type=CONTENT_TYPE_LATEST)
