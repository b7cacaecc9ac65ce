"""`datamill serve | worker | init | user add | job define | job trigger`."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from datamill.bootstrap import Node, ensure_admin, open_node
from datamill.domain.status import JobKind
from datamill.errors import DatamillError
from datamill.observability.logs import configure_logging
from datamill.observability.metrics import serve_metrics
from datamill.services.auth import hash_password
from datamill.settings import Settings

log = logging.getLogger("datamill")


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    for name in ("home", "database_url", "port", "host", "metrics_port"):
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    if getattr(args, "demo", False):
        overrides["demo"] = True
    if getattr(args, "no_worker", False):
        overrides["embedded_worker"] = False
    settings = Settings(**overrides)
    configure_logging(settings.log_format, settings.log_level)
    return settings


def _serve_metrics_port(node: Node) -> None:
    settings = node.settings
    if settings.metrics != "off" and settings.metrics_port is not None:
        serve_metrics(node.store.metrics, settings.metrics_host, settings.metrics_port)
        print(
            f"Metrics on http://{settings.metrics_host}:{settings.metrics_port}/metrics",
            flush=True,
        )


def _announce_admin(node: Node) -> None:
    generated = ensure_admin(node)
    if generated:
        print(
            f"Created the first admin: user 'admin', password '{generated}'. "
            "It is shown only this once; change it with `datamill user password admin`.",
            flush=True,
        )


def cmd_init(args: argparse.Namespace) -> int:
    """Create the home folder and the metadata schema."""
    node = open_node(_settings(args))
    _announce_admin(node)
    print(f"Datamill home ready at {node.settings.resolved_home}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the HTTP API, with an embedded worker unless `--no-worker`."""
    import uvicorn

    from datamill.api.app import create_app
    from datamill.worker.worker import Worker

    settings = _settings(args)
    node = open_node(settings)
    _announce_admin(node)
    if settings.demo:
        _install_demo(node)
    worker: Worker | None = None
    if settings.embedded_worker:
        worker = Worker(node.store, settings, node.wakeup)
        worker.start()
    app = create_app(settings, node.jobs)
    _serve_metrics_port(node)
    # The client address limits failed sign-ins; uvicorn would otherwise take it
    # from X-Forwarded-For of any local caller, who could then claim any address.
    proxies = settings.trusted_proxies
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level="warning",
        # uvicorn's lines go through Datamill's handler, in its format.
        log_config=None,
        access_log=False,
        proxy_headers=proxies is not None,
        forwarded_allow_ips=proxies,
    )
    server = uvicorn.Server(config)
    role = "" if worker is not None else " (API only: `datamill worker` runs the executions)"
    print(f"Datamill serving on http://{settings.host}:{settings.port}{role}", flush=True)
    # uvicorn re-raises the signal that stopped it once it has shut down; with
    # these handlers in place that re-raise is harmless and the worker below
    # (if any) still gets to finish or hand back its running executions.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    try:
        server.run()
    finally:
        if worker is not None:
            worker.shutdown()
        node.store.close()
    return 0


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


def cmd_worker(args: argparse.Namespace) -> int:
    """Run a standalone worker against a shared database."""
    from datamill.worker.worker import Worker

    settings = _settings(args)
    node = open_node(settings)
    worker = Worker(node.store, settings, node.wakeup)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    worker.start()
    _serve_metrics_port(node)
    print(f"Datamill worker {worker.id} running", flush=True)
    done.wait()
    worker.shutdown()
    node.store.close()
    return 0


def cmd_user_add(args: argparse.Namespace) -> int:
    """Create a user."""
    node = open_node(_settings(args))
    node.store.users.create(
        args.name,
        hash_password(args.password),
        roles=tuple(args.role or ["ANALYST"]),
        groups=tuple(args.group or []),
    )
    print(f"user {args.name} created")
    return 0


def cmd_job_define(args: argparse.Namespace) -> int:
    """Create a job file from a JSON definition."""
    node = open_node(_settings(args))
    raw = json.loads(Path(args.definition).read_text(encoding="utf-8"))
    entry, config = node.jobs.define_job(args.path, JobKind(args.kind), raw, args.owner)
    print(json.dumps({"file-id": entry.id, "configuration-id": config.id, "path": entry.path}))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `datamill` command."""
    parser = argparse.ArgumentParser(prog="datamill", description=__doc__)
    parser.add_argument("--home", type=Path, help="Datamill home folder (DATAMILL_HOME)")
    parser.add_argument("--database-url", help="metadata database URL (DATAMILL_DATABASE_URL)")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser(
        "serve", help="run the HTTP API with an embedded worker (unless --no-worker)"
    )
    serve.add_argument("--port", type=int)
    serve.add_argument("--host")
    serve.add_argument("--demo", action="store_true", help="set up the demo workspace")
    serve.add_argument(
        "--no-worker",
        action="store_true",
        help="API only: queue executions but run none; `datamill worker` runs them"
        " (DATAMILL_EMBEDDED_WORKER=false)",
    )
    serve.set_defaults(func=cmd_serve)

    serve.add_argument("--metrics-port", type=int, help="also serve /metrics openly on this port")
    worker = commands.add_parser("worker", help="run a standalone worker")
    worker.add_argument(
        "--metrics-port",
        type=int,
        help="serve this worker's metrics on this port (DATAMILL_METRICS_PORT)",
    )
    worker.set_defaults(func=cmd_worker)
    commands.add_parser("init", help="create home and schema").set_defaults(func=cmd_init)

    user = commands.add_parser("user", help="manage users").add_subparsers(
        dest="user_command", required=True
    )
    add = user.add_parser("add", help="create a user")
    add.add_argument("name")
    add.add_argument("--password", required=True)
    add.add_argument("--role", action="append", help="ADMIN or ANALYST (repeatable)")
    add.add_argument("--group", action="append", help="group name (repeatable)")
    add.set_defaults(func=cmd_user_add)

    job = commands.add_parser("job", help="manage jobs").add_subparsers(
        dest="job_command", required=True
    )
    define = job.add_parser("define", help="create a job file from a JSON definition")
    define.add_argument("kind", choices=[k.value for k in JobKind])
    define.add_argument("path", help="e.g. /Data/ImportJobs/orders.imp")
    define.add_argument("definition", help="JSON file with the definition")
    define.add_argument("--owner", default="admin")
    define.set_defaults(func=cmd_job_define)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line."""
    configure_logging("text")  # until the settings say otherwise
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
        return code
    except DatamillError as error:
        print(f"error: {error.message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
