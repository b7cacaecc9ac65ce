"""File tree, job definitions and data against a server: ls, job, data."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.syntax import Syntax

from datamill.cli import local
from datamill.cli.context import connect, globals_of
from datamill.cli.jobs import Ref
from datamill.cli.output import JsonOption, emit_json, out, table
from datamill.client import Client, Entry
from datamill.domain.status import JobKind

job_app = typer.Typer(help="Define, show and delete jobs.", no_args_is_help=True)
data_app = typer.Typer(help="The data jobs produced.", no_args_is_help=True)


def ls(
    ctx: typer.Context,
    folder: Annotated[str, typer.Argument(help="folder id, uuid or path")] = "/",
    json_output: JsonOption = False,
) -> None:
    """The folders and job files in a folder that you may read."""
    with connect(ctx) as client:
        listing = client.folder(folder)
    if json_output:
        emit_json(listing.entry.raw)
        return
    rows = [
        (escape(e.name) + ("/" if e.is_folder else ""), e.type, e.owner, e.id, e.configuration_id)
        for e in [*listing.folders, *listing.files]
    ]
    table(escape(listing.entry.path), ["name", "type", "owner", "file id", "configuration"], rows)


def _job(client: Client, reference: str) -> tuple[Entry, JobKind, int]:
    entry = client.file(reference)
    if entry.kind is None or entry.configuration_id is None:
        raise typer.BadParameter(f"{reference} is a {entry.type}, not a job", param_hint="REF")
    return entry, entry.kind, entry.configuration_id


@job_app.command("define")
def job_define(
    ctx: typer.Context,
    kind: Annotated[JobKind, typer.Argument(help="import, workbook or export")],
    path: Annotated[str, typer.Argument(help="e.g. /Data/ImportJobs/orders.imp")],
    definition: Annotated[
        Path, typer.Argument(help="JSON file with the definition", exists=True, dir_okay=False)
    ],
    owner: Annotated[
        str, typer.Option(help="owner of the new job (local home only; on a server: you)")
    ] = "admin",
) -> None:
    """Create a job file from a JSON definition (on the server with --url, else the local home).

    Prints {"file-id", "configuration-id", "path"} as one JSON line.
    """
    options = globals_of(ctx)
    if options.is_local:
        local.job_define(options, kind.value, path, definition, owner)
        return
    raw = json.loads(definition.read_text(encoding="utf-8"))
    with connect(ctx) as client:
        configuration_id = client.create_job(kind, path, raw)
        entry = client.file(path)
    print(json.dumps({"file-id": entry.id, "configuration-id": configuration_id, "path": path}))


@job_app.command("show")
def job_show(ctx: typer.Context, reference: Ref, json_output: JsonOption = False) -> None:
    """A job's definition (the document `job define` and PUT take back unchanged)."""
    with connect(ctx) as client:
        _entry, kind, configuration_id = _job(client, reference)
        document = client.read_job(kind, configuration_id)
    if json_output:
        emit_json(document)
    else:
        out.print(Syntax(json.dumps(document, indent=2, ensure_ascii=False), "json"))


@job_app.command("delete")
def job_delete(
    ctx: typer.Context,
    reference: Ref,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask")] = False,
    json_output: JsonOption = False,
) -> None:
    """Delete a job file, its configuration and its history."""
    with connect(ctx) as client:
        entry, kind, configuration_id = _job(client, reference)
        if not yes and sys.stdin.isatty() and not typer.confirm(f"Delete {entry.path}?"):
            raise typer.Exit(1)
        client.delete_job(kind, configuration_id)
    if json_output:
        emit_json({"status": "success", "path": entry.path})
    else:
        out.print(f"{escape(entry.path)} deleted")


@data_app.command("list")
def data_list(ctx: typer.Context, reference: Ref, json_output: JsonOption = False) -> None:
    """The stored results of an import job or workbook, newest first."""
    with connect(ctx) as client:
        _entry, kind, configuration_id = _job(client, reference)
        listing = client.list_data(kind, configuration_id)
    if json_output:
        emit_json(listing)
        return
    rows = [
        (escape(str(item["path"])), data["id"], data["timestamp"], data["record-count"])
        for item in listing
        for data in item.get("datas", [])
    ]
    table(escape(reference), ["sheet", "data id", "created", "records"], rows)


@data_app.command("download")
def data_download(
    ctx: typer.Context,
    reference: Ref,
    sheet: Annotated[
        str | None, typer.Option(help="the workbook's kept sheet (not for import jobs)")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="write to this file, not stdout")
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """The newest data of an import job, or of a workbook's kept sheet, as CSV."""
    with connect(ctx) as client:
        _entry, kind, configuration_id = _job(client, reference)
        if kind is JobKind.WORKBOOK and not sheet:
            raise typer.BadParameter("a workbook's data is per sheet: give --sheet NAME")
        if output is None:
            if json_output:
                raise typer.BadParameter("--json needs --output FILE (stdout is the CSV)")
            for chunk in client.iter_download(kind, configuration_id, sheet):
                sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()
            return
        written = client.download(kind, configuration_id, output, sheet)
    if json_output:
        emit_json({"path": str(output), "bytes": written})
    else:
        out.print(f"{written} bytes written to {escape(str(output))}")
