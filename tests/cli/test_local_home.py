"""The local-home commands keep working, and what the CLI tells people to run exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.main import get_command

from datamill.bootstrap import open_node
from datamill.cli.main import app
from datamill.errors import NotAuthenticated
from datamill.services.auth import Authenticator
from datamill.settings import Settings
from tests.cli.conftest import clean_env, run


def _auth(home: Path) -> Authenticator:
    return Authenticator(open_node(Settings(home=home)).store)


def _runs(command_line: str) -> bool:
    """Whether `datamill WORDS...` names a command that exists (the words after it are its own)."""
    command = get_command(app)
    for word in command_line.split()[1:]:
        if not hasattr(command, "commands"):
            return True  # a command: the rest are its arguments
        command = getattr(command, "commands", {}).get(word)
        if command is None:
            return False
    return True


def test_the_first_start_message_names_a_command_that_works(tmp_path: Path) -> None:
    home = tmp_path / "datamill"
    env = clean_env(tmp_path / "user", DATAMILL_HOME=str(home))
    first = run(["init"], env)
    assert first.returncode == 0, first.stderr
    generated = re.search(r"password '([^']+)'", first.stdout)
    named = re.search(r"`(datamill [^`]+)`", first.stdout)
    assert generated and named, first.stdout
    assert named.group(1) == "datamill user password admin"
    changed = run([*named.group(1).split()[1:], "--password-stdin"], env, stdin="new-admin-pw\n")
    assert changed.returncode == 0, changed.stderr
    assert _auth(home).authenticate("admin", "new-admin-pw").is_admin
    with pytest.raises(NotAuthenticated):
        _auth(home).authenticate("admin", generated.group(1))
    missing = run(["user", "password", "nobody", "--password-stdin"], env, stdin="x-pw\n")
    assert missing.returncode == 1 and "nobody" in missing.stderr


def test_user_add_on_the_local_home(tmp_path: Path) -> None:
    home = tmp_path / "datamill"
    env = clean_env(tmp_path / "user", DATAMILL_HOME=str(home))
    assert run(["init"], env).returncode == 0
    added = run(["user", "add", "bob", "--role", "ANALYST", "--password-stdin"], env, "bob-pw\n")
    assert added.returncode == 0, added.stderr
    assert added.stdout.strip() == "user bob created"
    assert not _auth(home).authenticate("bob", "bob-pw").is_admin
    # --home on the command line means the local home, whatever DATAMILL_URL says.
    other = tmp_path / "other"
    env_with_url = dict(env, DATAMILL_URL="http://127.0.0.1:9")
    assert run(["--home", str(other), "init"], env_with_url).returncode == 0
    assert (
        run(
            ["user", "add", "ann", "--home", str(other), "--password-stdin"], env_with_url, "a-pw\n"
        ).returncode
        == 0
    )
    assert _auth(other).authenticate("ann", "a-pw").name == "ann"


def test_user_add_refuses_a_name_the_api_refuses_and_makes_nobody(tmp_path: Path) -> None:
    # '..' and 'x/y' would name a home folder outside the users' own; ':' never logs in.
    home = tmp_path / "datamill"
    env = clean_env(tmp_path / "user", DATAMILL_HOME=str(home))
    assert run(["init"], env).returncode == 0
    for name in ("..", "x/y", "a:b"):
        added = run(["user", "add", name, "--password-stdin"], env, "pw\n")
        assert added.returncode != 0, name
        assert repr(name) in added.stderr, added.stderr
        with pytest.raises(NotAuthenticated):
            _auth(home).authenticate(name, "pw")
    empty = run(["user", "add", "bob", "--password-stdin"], env, "\n")
    assert "the password must not be empty" in empty.stderr, empty.stderr
    with pytest.raises(NotAuthenticated):
        _auth(home).authenticate("bob", "")


def test_help_names_only_commands_that_exist(tmp_path: Path) -> None:
    env = clean_env(tmp_path / "user")
    texts = [run(["--help"], env).stdout]
    for group in ("job", "user", "data"):
        texts.append(run([group, "--help"], env).stdout)
    mentioned = {m for text in texts for m in re.findall(r"`(datamill [^`]+)`", text)}
    mentioned |= {"datamill job trigger"}  # the example of a command that did not exist
    missing = sorted(m for m in mentioned if not _runs(m))
    assert missing == ["datamill job trigger"]
    for name in ("trigger", "plan", "status", "history", "running", "stop", "logs", "ls"):
        assert re.search(rf"^\s+{name}\s", texts[0], re.M), name
