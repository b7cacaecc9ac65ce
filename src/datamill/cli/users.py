"""`datamill user add | password | list`: on the server with --url, else the local home."""

from __future__ import annotations

from typing import Annotated

import typer

from datamill.cli import local
from datamill.cli.context import connect, globals_of, new_password, refuse_password_option
from datamill.cli.output import JsonOption, emit_json, out, table

user_app = typer.Typer(help="Manage users.", no_args_is_help=True)

PasswordStdin = Annotated[
    bool,
    typer.Option("--password-stdin", help="read the new password from the first line of stdin"),
]
# Kept only to refuse it with the reason: it was `user add`'s option before.
OldPassword = Annotated[str | None, typer.Option("--password", hidden=True)]


@user_app.command("add")
def user_add(
    ctx: typer.Context,
    name: str,
    role: Annotated[list[str] | None, typer.Option(help="ADMIN or ANALYST (repeatable)")] = None,
    group: Annotated[list[str] | None, typer.Option(help="group name (repeatable)")] = None,
    email: Annotated[str | None, typer.Option(help="e-mail address (server only)")] = None,
    password_stdin: PasswordStdin = False,
    password: OldPassword = None,
    json_output: JsonOption = False,
) -> None:
    """Create a user; the password is asked for, or read with --password-stdin."""
    refuse_password_option(password)
    secret = new_password(password_stdin, name)
    options = globals_of(ctx)
    if options.is_local:
        local.user_add(options, name, secret, role or [], group or [])
        return
    with connect(ctx) as client:
        client.add_user(name, secret, email=email, groups=group or [], roles=role)
    if json_output:
        emit_json({"status": "success", "username": name})
    else:
        out.print(f"user {name} created")


@user_app.command("password")
def user_password(
    ctx: typer.Context,
    name: str,
    password_stdin: PasswordStdin = False,
    json_output: JsonOption = False,
) -> None:
    """Change a password (your own, or anyone's as ADMIN); the old one stops working at once."""
    secret = new_password(password_stdin, name)
    options = globals_of(ctx)
    if options.is_local:
        local.user_password(options, name, secret)
        return
    with connect(ctx) as client:
        client.set_password(name, secret)
    if json_output:
        emit_json({"status": "success", "username": name})
    else:
        out.print(f"password of {name} changed")


@user_app.command("list")
def user_list(
    ctx: typer.Context,
    max_results: Annotated[int, typer.Option("--max", help="users per page")] = 100,
    start: Annotated[int, typer.Option(help="skip this many")] = 0,
    json_output: JsonOption = False,
) -> None:
    """The users, in name order (ADMIN)."""
    with connect(ctx) as client:
        page = client.users(max_results, start)
    if json_output:
        emit_json({"maxResults": page.max_results, "total": page.total, "elements": page.elements})
        return
    rows = [
        (u["username"], u.get("email"), ", ".join(u["roles"]), ", ".join(u["groups"]))
        for u in page.elements
    ]
    table(f"{page.total} users", ["user", "email", "roles", "groups"], rows)
