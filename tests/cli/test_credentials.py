"""Credentials come from the environment, ~/.netrc or a prompt; never from the command line."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

from datamill.cli.main import app
from datamill.client import Client
from tests.acceptance.conftest import DATAMILL
from tests.cli.conftest import PASSWORD, Cli, clean_env, run


def test_a_netrc_entry_signs_in_without_any_password_in_the_environment(
    cli: Cli, tmp_path: Path
) -> None:
    home = tmp_path / "netrc-home"
    env = clean_env(home, DATAMILL_URL=cli.server.base)
    netrc = home / ".netrc"
    host = urlsplit(cli.server.base).hostname
    netrc.write_text(f"machine {host} login admin password {PASSWORD}\n")
    netrc.chmod(0o600)
    result = run(["running", "--json"], env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []
    netrc.write_text(f"machine {host} login admin password not-{PASSWORD}\n")
    wrong = run(["running"], env)
    assert wrong.returncode == 7 and "error:" in wrong.stderr


def test_without_credentials_and_without_a_terminal_the_cli_says_where_to_put_them(
    cli: Cli, tmp_path: Path
) -> None:
    env = clean_env(tmp_path / "bare", DATAMILL_URL=cli.server.base)
    result = run(["status", "/Data/ImportJobs/x.imp"], env)
    assert result.returncode == 7
    assert "DATAMILL_USER and DATAMILL_PASSWORD" in result.stderr and "netrc" in result.stderr
    assert result.stdout == ""
    # The URL may come after the command too, as people write it.
    moved = run(["running", "--url", cli.server.base, "--json"], {**cli.env, "DATAMILL_URL": ""})
    assert moved.returncode == 0, moved.stderr


def test_no_option_takes_a_password(tmp_path: Path) -> None:
    def options(command: object) -> list[str]:
        names = [o for p in getattr(command, "params", []) for o in getattr(p, "opts", [])]
        for sub in getattr(command, "commands", {}).values():
            names += options(sub)
        return names

    from typer.main import get_command

    taking_a_password = [
        n for n in options(get_command(app)) if "pass" in n and n != "--password-stdin"
    ]
    assert taking_a_password == ["--password"]  # only to refuse it, below
    env = clean_env(tmp_path / "h", DATAMILL_HOME=str(tmp_path / "datamill"))
    refused = run(["user", "add", "eve", "--password", "hunter2"], env)
    assert refused.returncode == 2
    assert "visible to other users" in refused.stderr and "--password-stdin" in refused.stderr


def test_a_password_prompt_reads_the_terminal_not_argv(cli: Cli) -> None:
    # Without a terminal and without --password-stdin, a new password is refused, not guessed.
    result = cli("user", "add", "carol")
    assert result.returncode == 2 and "--password-stdin" in result.stderr
    with Client(cli.server.base, ("admin", PASSWORD)) as client:
        assert [u["username"] for u in client.users().elements] == ["admin"]
    assert subprocess.run([*DATAMILL, "--help"], capture_output=True, check=True).returncode == 0
    assert re.search(
        r"DATAMILL_PASSWORD",
        subprocess.run([*DATAMILL, "--help"], capture_output=True, text=True, check=True).stdout,
    )
