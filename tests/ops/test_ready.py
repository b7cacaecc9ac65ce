"""GET /health and /ready: liveness without the database, readiness with it."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.engine import make_url

from datamill.api.app import create_app
from datamill.bootstrap import Node
from datamill.settings import Settings
from datamill.worker.worker import Worker
from tests.conftest import _admin_conninfo
from tests.security.conftest import Actors


def test_ready_when_the_database_answers_at_head(actors: Actors) -> None:
    answer = actors.client.get("/ready")
    assert answer.status_code == 200
    assert answer.json() == {
        "status": "ready",
        "checks": {"database": "ok", "schema": "ok"},
    }


def test_ready_names_the_worker_check_on_a_node_with_a_worker(running: Actors) -> None:
    answer = running.client.get("/ready")
    assert answer.status_code == 200
    assert answer.json()["checks"] == {"database": "ok", "schema": "ok", "worker": "ok"}


def test_not_ready_while_the_database_is_gone_and_ready_again_after(actors: Actors) -> None:
    with _outage(actors.node):
        answer = actors.client.get("/ready")
        assert answer.status_code == 503
        body = answer.json()
        assert body["status"] == "unready"
        assert body["checks"]["database"] == "the metadata database does not answer"
        assert body["reason"].startswith("database: the metadata database does not answer")
        # Nothing about the database's whereabouts.
        url = make_url(actors.node.settings.resolved_database_url)
        assert str(url.database) not in answer.text and "Error" not in answer.text
        # Liveness does not depend on the database.
        assert actors.client.get("/health").json() == {"status": "ok"}
    assert actors.client.get("/ready").status_code == 200


def test_not_ready_when_the_schema_is_behind(actors: Actors) -> None:
    with actors.node.store.db.write() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '0001'"))
    answer = actors.client.get("/ready")
    assert answer.status_code == 503
    assert answer.json()["checks"] == {
        "database": "ok",
        "schema": "the metadata schema is not the one this server needs (migrations pending?)",
    }


def test_not_ready_when_the_worker_stops_beating(node: Node) -> None:
    # A worker that beats every 2 s, while 0.3 s of silence already counts as lost.
    settings = Settings(
        **{**node.settings.model_dump(), "heartbeat_seconds": 2.0, "worker_lost_seconds": 0.3}
    )
    worker = Worker(node.store, settings, node.wakeup)
    worker.start()
    try:
        with TestClient(create_app(settings, node.jobs)) as client:
            for _ in range(400):
                answer = client.get("/ready")
                if answer.status_code == 503:
                    break
                time.sleep(0.01)
            assert answer.status_code == 503
            worker_check = answer.json()["checks"]["worker"]
            assert worker_check.startswith("the worker's last heartbeat is ")
            assert answer.json()["checks"]["database"] == "ok"
    finally:
        worker.shutdown(grace_seconds=0.5)


@contextlib.contextmanager
def _outage(node: Node) -> Iterator[None]:
    """The metadata database really unreachable: file moved away, or connections refused."""
    url = make_url(node.settings.resolved_database_url)
    if node.store.db.is_sqlite:
        path = Path(str(url.database))
        aside = path.with_name(path.name + ".away")
        os.rename(path, aside)
        try:
            yield
        finally:
            os.rename(aside, path)
        return
    name = url.database
    with psycopg.connect(_admin_conninfo(), autocommit=True) as admin:
        admin.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS false")
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
        )
        try:
            yield
        finally:
            admin.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")
