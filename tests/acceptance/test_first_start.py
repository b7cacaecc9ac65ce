"""First start: an admin with a password from the environment, or generated and shown once."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from datamill.bootstrap import open_node
from datamill.errors import NotAuthenticated
from datamill.services.auth import Authenticator
from datamill.settings import Settings
from tests.acceptance.conftest import DATAMILL


def _init(home: Path, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DATAMILL_")}
    result = subprocess.run(
        [*DATAMILL, "init"],
        env={**clean, "DATAMILL_HOME": str(home), **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout


def _authenticator(home: Path) -> Authenticator:
    return Authenticator(open_node(Settings(home=home)).store)


def test_a_generated_admin_password_is_printed_once_and_works(tmp_path: Path) -> None:
    home = tmp_path / "home"
    first = _init(home)
    match = re.search(r"user 'admin', password '([^']+)'", first)
    assert match, first
    password = match.group(1)
    assert len(password) >= 12
    auth = _authenticator(home)
    assert auth.authenticate("admin", password).is_admin
    with pytest.raises(NotAuthenticated):
        auth.authenticate("admin", "admin")
    second = _init(home)
    assert password not in second and "password" not in second


def test_the_admin_password_can_come_from_the_environment(tmp_path: Path) -> None:
    home = tmp_path / "home"
    output = _init(home, DATAMILL_ADMIN_PASSWORD="from-the-env-123")
    assert "from-the-env-123" not in output
    assert _authenticator(home).authenticate("admin", "from-the-env-123").is_admin


def test_a_new_home_is_private_and_an_existing_one_keeps_its_mode(tmp_path: Path) -> None:
    # The home holds the SQLite database (password hashes, connection
    # passwords) and the session key: other accounts on the machine must not
    # read them, whatever the umask `datamill init` ran under.
    home = tmp_path / "home"
    _init(home)
    assert home.stat().st_mode & 0o777 == 0o700
    assert (home / "datamill.db").exists()
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    _init(shared)
    assert shared.stat().st_mode & 0o777 == 0o755
