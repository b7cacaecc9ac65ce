"""Job commands against a server: trigger, plan, status, history, running, stop, logs."""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import typer
from rich.markup import escape

from datamill.cli.context import connect
from datamill.cli.output import JsonOption, details_json, emit_json, out, styled, table
from datamill.cli.progress import wait_runs
from datamill.client import Client, Details

VarOption = Annotated[
    list[str] | None,
    typer.Option(
        "--var",
        help="a workbook variable for this run, NAME=VALUE (repeatable); VALUE is read as JSON"
        " if it is a number, true, false or null, else as text",
        metavar="NAME=VALUE",
    ),
]
WaitOption = Annotated[
    bool, typer.Option("--wait", help="wait for the end; the exit code tells the outcome")
]
TimeoutOption = Annotated[
    float | None,
    typer.Option("--timeout", help="with --wait: give up after this many seconds (exit 6)"),
]
Ref = Annotated[str, typer.Argument(help="job file: id, uuid or path like /Data/ImportJobs/x.imp")]


def parse_variables(pairs: list[str] | None) -> dict[str, Any]:
    """`NAME=VALUE` pairs as the variables object of a trigger."""
    variables: dict[str, Any] = {}
    for pair in pairs or []:
        name, sep, text = pair.partition("=")
        if not sep or not name:
            raise typer.BadParameter(f"{pair!r} is not NAME=VALUE", param_hint="--var")
        value: Any = text
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = text
        if parsed is None or isinstance(parsed, (bool, int, float)):
            value = parsed
        elif isinstance(parsed, str) and text.startswith('"'):
            value = parsed  # "--var 'n=\"250\"'" keeps a number-like text as text
        variables[name] = value
    return variables


def trigger(
    ctx: typer.Context,
    reference: Ref,
    var: VarOption = None,
    wait: WaitOption = False,
    timeout: TimeoutOption = None,
    json_output: JsonOption = False,
) -> None:
    """Run a job; with --wait, show its progress and exit with its outcome."""
    variables = parse_variables(var)
    with connect(ctx) as client:
        triggered = client.trigger(reference, variables or None)
        if not wait:
            if json_output:
                emit_json(triggered.raw)
            else:
                out.print(f"{reference}: execution {triggered.execution_id} queued")
            return
        code, results = wait_runs(
            client, [(reference, triggered.execution_id)], timeout, not json_output
        )
        if json_output:
            emit_json(_waited_json(triggered.execution_id, results[0]))
    raise typer.Exit(code)


def _waited_json(execution_id: int, details: Details | None) -> dict[str, Any]:
    if details is None:
        return {"jobExecutionId": execution_id, "timeout": True}
    return details_json(details)


def plan(
    ctx: typer.Context,
    references: Annotated[list[str], typer.Argument(help="job files: ids, uuids or paths")],
    var: VarOption = None,
    wait: WaitOption = False,
    timeout: TimeoutOption = None,
    json_output: JsonOption = False,
) -> None:
    """Run jobs and the data-driven workbooks after them as one ordered plan."""
    variables = parse_variables(var)
    with connect(ctx) as client:
        members = client.sequential_trigger(references, variables or None)
        if not json_output:
            rows = [
                (m.name, m.configuration_id, m.execution_id or "-", m.reason or "") for m in members
            ]
            table("Plan", ["job", "configuration", "execution", "not run because"], rows)
        runs = [(m.name, m.execution_id) for m in members if m.execution_id is not None]
        if not wait:
            if json_output:
                emit_json({"status": "success", "execution-plan": [m.raw for m in members]})
            return
        code, results = wait_runs(client, runs, timeout, not json_output)
        if json_output:
            emit_json(
                {
                    "execution-plan": [m.raw for m in members],
                    # Runs after a timeout were not waited for and are left out.
                    "results": [
                        _waited_json(eid, d) for (_, eid), d in zip(runs, results, strict=False)
                    ],
                    "exitCode": code,
                }
            )
    raise typer.Exit(code)


def status(ctx: typer.Context, reference: Ref, json_output: JsonOption = False) -> None:
    """Status of the newest run of a job, with progress and time left while it runs."""
    with connect(ctx) as client:
        current = client.status(reference)
    if json_output:
        emit_json(current.raw)
        return
    line = f"{reference}: {styled(current.status)}"
    if current.execution_id is not None:
        line += f" (execution {current.execution_id})"
    if current.progress is not None:
        line += f" {current.progress}%"
    if current.estimate:
        line += f", about {current.estimate} left"
    out.print(line)


def history(
    ctx: typer.Context,
    reference: Ref,
    start: Annotated[int, typer.Option(help="skip this many newer runs")] = 0,
    length: Annotated[int, typer.Option(help="runs per page")] = 10,
    json_output: JsonOption = False,
) -> None:
    """A page of a job's runs, newest first, with times and record counts."""
    with connect(ctx) as client:
        configuration_id = _configuration_id(client, reference)
        page = client.history(configuration_id, start, length)
        if json_output:
            emit_json([{"id": i.execution_id, "jobStatus": i.status.value} for i in page])
            return
        rows = []
        for item in page:
            details = client.details(item.execution_id)
            rows.append(
                (
                    item.execution_id,
                    styled(item.status),
                    details.start_time,
                    details.stop_time,
                    details.success_count,
                    details.failure_count,
                )
            )
    table(
        f"{reference} (runs {start + 1}-{start + len(rows)})",
        ["execution", "status", "started", "stopped", "records", "dropped"],
        rows,
    )


def _configuration_id(client: Client, reference: str) -> int:
    entry = client.file(reference)
    if entry.configuration_id is None:
        raise typer.BadParameter(f"{reference} is a {entry.type}, not a job", param_hint="REF")
    return entry.configuration_id


def running(ctx: typer.Context, json_output: JsonOption = False) -> None:
    """The queued, waiting and running jobs you may read."""
    with connect(ctx) as client:
        jobs = client.list_running()
    if json_output:
        emit_json([job.raw for job in jobs])
        return
    rows = [
        (
            job.execution_id,
            styled(job.status),
            job.name,
            job.file_id,
            f"{job.remaining_ms // 1000}s" if job.remaining_ms else "",
        )
        for job in jobs
    ]
    table(None, ["execution", "status", "job", "file id", "time left"], rows)


def stop(ctx: typer.Context, reference: Ref, json_output: JsonOption = False) -> None:
    """Stop the active run of a job; returns once it no longer runs."""
    with connect(ctx) as client:
        client.stop(reference)
        current = client.status(reference)
    if json_output:
        emit_json(current.raw)
    else:
        out.print(f"{reference}: execution {current.execution_id} {styled(current.status)}")


def logs(
    ctx: typer.Context,
    run: Annotated[
        str,
        typer.Argument(
            help="an execution id, or a job file's path (starting with /) for its newest run"
        ),
    ],
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="keep printing until it ends")
    ] = False,
    json_output: Annotated[
        bool, typer.Option("--json", help="one JSON object per event (JSON lines)")
    ] = False,
) -> None:
    """A run's log: queued, claimed, sources read, sheets, drops, failure, stop."""
    with connect(ctx) as client:
        execution_id = _execution_id(client, run)
        since: int | None = None
        delay = 0.2
        while True:
            # Whether it had ended is read before the events, so that no event
            # written before the end is missed by the last round.
            ended = not follow or client.details(execution_id).status.is_terminal
            for event in client.log(execution_id, since):
                since = max(since or 0, int(event.get("seq", 0)))
                _print_event(event, json_output)
            if ended:
                return
            time.sleep(delay)
            delay = min(2.0, delay * 1.5)


def _execution_id(client: Client, run: str) -> int:
    if run.isdigit():
        return int(run)
    current = client.status(run)
    if current.execution_id is None:
        raise typer.BadParameter(f"{run} never ran", param_hint="RUN")
    return current.execution_id


def _print_event(event: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(event, ensure_ascii=False), flush=True)
        return
    detail = " ".join(
        f"{k}={json.dumps(v, ensure_ascii=False)}"
        for k, v in event.items()
        if k not in ("seq", "time", "event")
    )
    line = f"{event.get('time')} [bold]{escape(str(event.get('event')))}[/bold] {escape(detail)}"
    out.print(line.rstrip())
