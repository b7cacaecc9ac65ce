"""Where the CLI finds its server and credentials, and the new passwords it is given."""

from __future__ import annotations

import dataclasses
import netrc
import os
import sys
from pathlib import Path
from urllib.parse import urlsplit

import typer

from datamill.client import DEFAULT_URL, Client
from datamill.client.errors import Unauthorized


@dataclasses.dataclass
class Globals:
    """The options given before (or anywhere around) the command."""

    url: str | None = None
    user: str | None = None
    home: Path | None = None
    database_url: str | None = None
    local: bool = False

    @property
    def is_local(self) -> bool:
        """Whether a command that exists both ways acts on the local home.

        Local when asked (`--local`, `--home`, `--database-url`) or when no
        server is named (no `--url`, no DATAMILL_URL); on the server otherwise.
        """
        return self.local or self.home is not None or self.database_url is not None or not self.url


def globals_of(ctx: typer.Context) -> Globals:
    """The global options of this invocation."""
    root = ctx.find_root()
    if not isinstance(root.obj, Globals):
        root.obj = Globals()
    return root.obj


def _netrc_login(url: str, user: str | None) -> tuple[str, str] | None:
    host = urlsplit(url).hostname or ""
    path = Path(os.environ.get("NETRC") or Path.home() / ".netrc")
    if not path.is_file():
        return None
    # netrc checks this only for a default ~/.netrc it opens itself, never for a
    # file it is given: a password file others may read is not trusted (as ssh
    # and libpq treat theirs).
    if path.stat().st_mode & 0o077:
        print(
            f"warning: {path} is not used: others may read it (chmod 600 {path})",
            file=sys.stderr,
        )
        return None
    try:
        entry = netrc.netrc(str(path)).authenticators(host)
    except netrc.NetrcParseError as error:
        # Its message quotes the offending token, which may be a password.
        print(
            f"warning: {path} is not used: it cannot be read (line {error.lineno})", file=sys.stderr
        )
        return None
    except OSError as error:
        print(f"warning: {path} is not used: {error.strerror}", file=sys.stderr)
        return None
    if entry is None:
        return None
    login, _account, password = entry
    if not login or password is None or (user is not None and login != user):
        return None
    return login, password


def credentials(url: str, user: str | None) -> tuple[str, str]:
    """User and password: DATAMILL_USER/DATAMILL_PASSWORD, ~/.netrc, or a prompt.

    Never from the command line, where other users and the shell history see it.
    """
    user = user or os.environ.get("DATAMILL_USER") or None
    password = os.environ.get("DATAMILL_PASSWORD")
    if user and password:
        return user, password
    found = _netrc_login(url, user)
    if found is not None:
        return found
    if sys.stdin.isatty():
        user = user or typer.prompt("User")
        return user, typer.prompt(f"Password for {user} at {url}", hide_input=True)
    raise Unauthorized(
        f"no credentials for {url}: set DATAMILL_USER and DATAMILL_PASSWORD, add the"
        " server to ~/.netrc, or run in a terminal to be asked",
        401,
    )


def connect(ctx: typer.Context) -> Client:
    """A client for the server the options name (default http://127.0.0.1:8080)."""
    options = globals_of(ctx)
    url = options.url or DEFAULT_URL
    return Client(url, credentials(url, options.user))


def new_password(from_stdin: bool, name: str) -> str:
    """A new password: the first line of stdin with --password-stdin, else asked twice."""
    if from_stdin:
        line = sys.stdin.readline()
        password = line[:-1] if line.endswith("\n") else line
        password = password[:-1] if password.endswith("\r") else password
    elif sys.stdin.isatty():
        password = typer.prompt(
            f"New password for {name}", hide_input=True, confirmation_prompt=True
        )
    else:
        raise typer.BadParameter(
            "give the new password on stdin with --password-stdin, or run in a terminal"
        )
    if not password:
        raise typer.BadParameter("the password must not be empty")
    return password


def refuse_password_option(value: str | None) -> None:
    """The old `--password VALUE` is refused: a password in argv leaks to `ps` and history."""
    if value is not None:
        raise typer.BadParameter(
            "a password on the command line is visible to other users and in the shell"
            " history; use --password-stdin, or leave it out to be asked",
            param_hint="--password",
        )
