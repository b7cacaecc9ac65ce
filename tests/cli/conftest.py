"""The real `datamill` command in a subprocess against a real server (tests/acceptance)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from datamill.client import Client, JobKind
from tests.acceptance.conftest import DATAMILL, Server, start_server
from tests.helpers import orders_import, totals_workbook, write_orders_csv

__all__ = ["start_server"]
PASSWORD = "cli-secret-pw"
IMPORT = "/Data/ImportJobs/orders.imp"
WARN_IMPORT = "/Data/ImportJobs/dirty.imp"
WORKBOOK = "/Analytics/Workbooks/totals.wbk"
FAILING = "/Analytics/Workbooks/broken.wbk"
# Fails at run time, not when saved: 'north' is no integer.
FAILING_SQL = "SELECT CAST(region AS INTEGER) AS x FROM orders"


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment without any DATAMILL_ setting, with HOME in the test's folder."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATAMILL_")}
    env.pop("NETRC", None)
    home.mkdir(parents=True, exist_ok=True)
    return {**env, "HOME": str(home), **extra}


def run(
    args: list[str], env: dict[str, str], stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """`datamill ARGS` as a user's shell runs it."""
    return subprocess.run(
        [*DATAMILL, *args], env=env, input=stdin, capture_output=True, text=True, timeout=180
    )


class Cli:
    """The CLI pointed at one server, signed in as admin through the environment."""

    def __init__(self, server: Server, home: Path) -> None:
        self.server = server
        self.env = clean_env(
            home,
            DATAMILL_URL=server.base,
            DATAMILL_USER="admin",
            DATAMILL_PASSWORD=PASSWORD,
        )

    def __call__(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run the command; the result has returncode, stdout and stderr."""
        return run(list(args), self.env, stdin)

    def popen(self, *args: str) -> subprocess.Popen[str]:
        """Start the command and return at once."""
        return subprocess.Popen(
            [*DATAMILL, *args],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def client(self) -> Client:
        """A Python client for the same server, as admin."""
        return Client(self.server.base, ("admin", PASSWORD))


def define_jobs(client: Client, home: Path) -> dict[str, Any]:
    """A clean import, an import that drops records, a workbook and a failing workbook."""
    files = home / "files"
    clean = write_orders_csv(files / "clean", rows=30)
    dirty = write_orders_csv(files / "dirty", rows=30, bad_rows=2)
    ids = {
        IMPORT: client.create_job(JobKind.IMPORT, IMPORT, orders_import(clean)),
        WARN_IMPORT: client.create_job(JobKind.IMPORT, WARN_IMPORT, orders_import(dirty)),
        WORKBOOK: client.create_job(JobKind.WORKBOOK, WORKBOOK, totals_workbook(IMPORT)),
        FAILING: client.create_job(
            JobKind.WORKBOOK, FAILING, totals_workbook(IMPORT, sql=FAILING_SQL)
        ),
    }
    return ids


@pytest.fixture
def cli(start_server: Callable[..., Server], tmp_path: Path) -> Iterator[Cli]:
    """A server with its embedded worker, and the CLI pointed at it."""
    server = start_server(DATAMILL_ADMIN_PASSWORD=PASSWORD)
    yield Cli(server, tmp_path / "user-home")


@pytest.fixture
def api_only(start_server: Callable[..., Server], tmp_path: Path) -> Iterator[Cli]:
    """A server that queues runs but runs none (--no-worker): runs stay QUEUED."""
    server = start_server("--no-worker", DATAMILL_ADMIN_PASSWORD=PASSWORD)
    yield Cli(server, tmp_path / "user-home-api")
