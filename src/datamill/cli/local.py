"""Commands on the local home: serve, worker, init, and the local forms of user and job.

The server's modules are imported inside each command, so that the
commands that only talk to a server start fast and need no database driver.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from datamill.cli.context import Globals

if TYPE_CHECKING:
    from datamill.bootstrap import Node
    from datamill.settings import Settings

log = logging.getLogger("datamill")

# The command the first-start message names; tests run exactly this.
CHANGE_ADMIN_PASSWORD = "datamill user password admin"


def settings(options: Globals, **overrides: Any) -> Settings:
    """The settings: environment, then the command line's options."""
    from datamill.observability.logs import configure_logging
    from datamill.settings import Settings

    given = {k: v for k, v in overrides.items() if v is not None}
    if options.home is not None:
        given["home"] = options.home
    if options.database_url is not None:
        given["database_url"] = options.database_url
    built = Settings(**given)
    configure_logging(built.log_format, built.log_level)
    return built


def _open(options: Globals, **overrides: Any) -> Node:
    from datamill.bootstrap import open_node

    return open_node(settings(options, **overrides))


def _serve_metrics_port(node: Node) -> None:
    from datamill.observability.metrics import serve_metrics

    settings = node.settings
    if settings.metrics != "off" and settings.metrics_port is not None:
        serve_metrics(node.store.metrics, settings.metrics_host, settings.metrics_port)
        print(
            f"Metrics on http://{settings.metrics_host}:{settings.metrics_port}/metrics",
            flush=True,
        )


def _announce_admin(node: Node) -> None:
    from datamill.bootstrap import ensure_admin

    generated = ensure_admin(node)
    if generated:
        print(
            f"Created the first admin: user 'admin', password '{generated}'. "
            f"It is shown only this once; change it with `{CHANGE_ADMIN_PASSWORD}`.",
            flush=True,
        )


def init(options: Globals) -> None:
    """Create the home folder and the metadata schema."""
    node = _open(options)
    _announce_admin(node)
    print(f"Datamill home ready at {node.settings.resolved_home}")


def uvicorn_options(host: str, port: int, proxies: str | None) -> dict[str, Any]:
    """How `serve` runs uvicorn (bench/api_status.py serves its baselines alike)."""
    return {
        "host": host,
        "port": port,
        "log_level": "warning",
        # uvicorn's lines go through Datamill's handler, in its format.
        "log_config": None,
        "access_log": False,
        # The client address limits failed sign-ins; uvicorn would otherwise take it
        # from X-Forwarded-For of any local caller, who could then claim any address.
        "proxy_headers": proxies is not None,
        "forwarded_allow_ips": proxies,
    }


def serve(
    options: Globals,
    *,
    port: int | None,
    host: str | None,
    demo: bool,
    no_worker: bool,
    metrics_port: int | None,
) -> None:
    """Run the HTTP API, with an embedded worker unless `no_worker`."""
    import uvicorn

    from datamill.api.app import create_app
    from datamill.bootstrap import open_node
    from datamill.worker.supervisor import WorkerSupervisor

    built = settings(
        options,
        port=port,
        host=host,
        demo=True if demo else None,
        embedded_worker=False if no_worker else None,
        metrics_port=metrics_port,
    )
    node = open_node(built)
    _announce_admin(node)
    if built.demo:
        _install_demo(node)
    # The embedded worker runs in a supervised child process, so that HTTP and
    # the worker do not share one interpreter lock (docs/decisions.md).
    worker: WorkerSupervisor | None = None
    if built.embedded_worker:
        worker = WorkerSupervisor(node)
        worker.start()
    app = create_app(built, node.jobs)
    _serve_metrics_port(node)
    config = uvicorn.Config(app, **uvicorn_options(built.host, built.port, built.trusted_proxies))
    server = uvicorn.Server(config)
    role = "" if worker is not None else " (API only: `datamill worker` runs the executions)"
    print(f"Datamill serving on http://{built.host}:{built.port}{role}", flush=True)
    # uvicorn re-raises the signal that stopped it once it has shut down; with
    # these handlers in place that re-raise is harmless and the worker child
    # below (if any) still gets to finish or hand back its running executions.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    try:
        server.run()
    finally:
        if worker is not None:
            worker.stop()
        node.store.close()


def _install_demo(node: Node) -> None:
    from datamill.demo import install_demo

    with node.store.db.read() as conn:
        admin = node.store.users.get(conn, "admin")
    if admin is None:
        print("demo: no user 'admin'; skipping the demo workspace", file=sys.stderr)
        return
    created = install_demo(node, admin)
    if created:
        print("Demo workspace ready: " + ", ".join(created), flush=True)


def worker(options: Globals, *, metrics_port: int | None) -> None:
    """Run a standalone worker against a shared database."""
    from datamill.worker.worker import Worker

    node = _open(options, metrics_port=metrics_port)
    runner = Worker(node.store, node.settings, node.wakeup)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    runner.start()
    _serve_metrics_port(node)
    print(f"Datamill worker {runner.id} running", flush=True)
    done.wait()
    runner.shutdown()
    node.store.close()


def user_add(
    options: Globals, name: str, password: str, roles: list[str], groups: list[str]
) -> None:
    """Create a user in the local home's database."""
    from datamill.services.auth import hash_password
    from datamill.services.users import check_name, check_password

    # The API's checks: a name like '..' or 'x/y' would name no home folder of
    # its own (or one outside the users' folder), and one with ':' never logs in.
    check_name("user", name)
    node = _open(options)
    node.store.users.create(
        name,
        hash_password(check_password(password)),
        roles=tuple(roles or ["ANALYST"]),
        groups=tuple(groups),
    )
    print(f"user {name} created")


def user_password(options: Globals, name: str, password: str) -> None:
    """Set a user's password in the local home's database; the old one stops working."""
    from datamill.errors import NotFound
    from datamill.services.auth import hash_password
    from datamill.services.users import check_password
    from datamill.store import users as user_store

    node = _open(options)
    password_hash = hash_password(check_password(password))
    with node.store.db.write() as conn:
        if not user_store.update_password_hash(conn, name, password_hash):
            raise NotFound(f"user {name!r} doesn't exist")
    print(f"password of {name} changed")


def job_define(options: Globals, kind: str, path: str, definition: Path, owner: str) -> None:
    """Create a job file in the local home from a JSON definition."""
    from datamill.domain.status import JobKind

    node = _open(options)
    raw = json.loads(definition.read_text(encoding="utf-8"))
    entry, config = node.jobs.define_job(path, JobKind(kind), raw, owner)
    print(json.dumps({"file-id": entry.id, "configuration-id": config.id, "path": entry.path}))
