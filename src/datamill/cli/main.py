"""The `datamill` command: run a server or worker, and drive a server from a shell.

Server commands (serve, worker, init) work on the local home. Commands that
exist both ways (user add, user password, job define) act on the server named
by --url or DATAMILL_URL, and on the local home when no server is named (or
with --local, --home, --database-url). Every other command talks to a server,
http://127.0.0.1:8080 unless --url or DATAMILL_URL says otherwise.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from datamill.cli import exits, files, jobs, local
from datamill.cli.context import Globals, globals_of
from datamill.cli.users import user_app
from datamill.client.errors import ClientError, Forbidden, Unauthorized
from datamill.errors import DatamillError

app = typer.Typer(
    name="datamill",
    help=__doc__,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    epilog="Exit codes: 0 done (with --wait: COMPLETED), 1 request refused or server"
    " unreachable, 2 usage, 3 COMPLETED_WITH_WARNINGS, 4 ERROR, 5 CANCELED, 6 --timeout"
    " ran out, 7 no or wrong credentials or not allowed, 130 interrupted (docs/client.md).",
)


@app.callback()
def options(
    ctx: typer.Context,
    url: Annotated[
        str | None,
        typer.Option(
            envvar="DATAMILL_URL", metavar="URL", help="the server, e.g. http://127.0.0.1:8080"
        ),
    ] = None,
    user: Annotated[
        str | None,
        typer.Option(
            "--user",
            "-u",
            metavar="NAME",
            help="user name on the server (DATAMILL_USER); the password comes from"
            " DATAMILL_PASSWORD, ~/.netrc or a prompt, never from the command line",
        ),
    ] = None,
    home: Annotated[
        Path | None, typer.Option(help="Datamill home folder (DATAMILL_HOME); implies --local")
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option(help="metadata database URL (DATAMILL_DATABASE_URL); implies --local"),
    ] = None,
    local_home: Annotated[
        bool,
        typer.Option("--local", help="user add, user password, job define: on the local home"),
    ] = False,
) -> None:
    """Global options; they may also come after the command."""
    ctx.obj = Globals(url, user, home, database_url, local_home)


# ------------------------------------------------------------ server side


@app.command()
def serve(
    ctx: typer.Context,
    port: Annotated[int | None, typer.Option(help="port (DATAMILL_PORT, default 8080)")] = None,
    host: Annotated[str | None, typer.Option(help="address to listen on (DATAMILL_HOST)")] = None,
    demo: Annotated[bool, typer.Option("--demo", help="set up the demo workspace")] = False,
    no_worker: Annotated[
        bool,
        typer.Option(
            "--no-worker",
            help="API only: queue executions but run none; `datamill worker` runs them"
            " (DATAMILL_EMBEDDED_WORKER=false)",
        ),
    ] = False,
    metrics_port: Annotated[
        int | None, typer.Option(help="also serve /metrics openly on this port")
    ] = None,
) -> None:
    """Run the HTTP API with an embedded worker (unless --no-worker)."""
    local.serve(
        globals_of(ctx),
        port=port,
        host=host,
        demo=demo,
        no_worker=no_worker,
        metrics_port=metrics_port,
    )


@app.command()
def worker(
    ctx: typer.Context,
    metrics_port: Annotated[
        int | None,
        typer.Option(help="serve this worker's metrics on this port (DATAMILL_METRICS_PORT)"),
    ] = None,
) -> None:
    """Run a standalone worker against a shared database."""
    local.worker(globals_of(ctx), metrics_port=metrics_port)


@app.command()
def init(ctx: typer.Context) -> None:
    """Create the home folder and the metadata schema (and the first admin)."""
    local.init(globals_of(ctx))


# ------------------------------------------------------------ client side

for command in (jobs.trigger, jobs.plan, jobs.status, jobs.history, jobs.running, jobs.stop):
    app.command()(command)
app.command("logs")(jobs.logs)
app.command("ls")(files.ls)
app.add_typer(files.job_app, name="job")
app.add_typer(files.data_app, name="data")
app.add_typer(user_app, name="user")

# Global options with a value, and those without; `hoist` moves them to the front.
_VALUED = {"--url", "--user", "-u", "--home", "--database-url"}
_FLAGS = {"--local"}


def hoist(argv: list[str]) -> list[str]:
    """Move global options found after the command to the front, where Click reads them."""
    front: list[str] = []
    rest: list[str] = []
    index = 0
    while index < len(argv):
        arg = argv[index]
        if arg == "--":
            rest.extend(argv[index:])
            break
        name = arg.split("=", 1)[0]
        if name in _VALUED and "=" in arg:
            front.append(arg)
        elif name in _VALUED and index + 1 < len(argv):
            front.extend(argv[index : index + 2])
            index += 1
        elif arg in _FLAGS:
            front.append(arg)
        else:
            rest.append(arg)
        index += 1
    return front + rest


# Click's error classes, whether Typer uses the click package or its own copy of it.
_USAGE_ERROR: type[Exception] = next(
    c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError"
)
_CLICK_ERROR: type[Any] = next(
    c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException"
)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (docs/client.md)."""
    args = hoist(sys.argv[1:] if argv is None else list(argv))
    try:
        result = app(args=args, prog_name="datamill", standalone_mode=False)
    except _CLICK_ERROR as error:
        error.show()
        return exits.USAGE if isinstance(error, _USAGE_ERROR) else exits.FAILED
    except typer.Exit as error:
        return int(error.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        print("interrupted", file=sys.stderr)
        return exits.INTERRUPTED
    except (Unauthorized, Forbidden) as error:
        print(f"error: {error.message}", file=sys.stderr)
        return exits.AUTH
    except (ClientError, DatamillError) as error:
        print(f"error: {error.message}", file=sys.stderr)
        return exits.FAILED
    return int(result) if isinstance(result, int) else exits.OK


if __name__ == "__main__":
    sys.exit(main())
