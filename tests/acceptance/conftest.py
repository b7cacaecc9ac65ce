"""The real `datamill serve` in a subprocess on a free port."""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

DATAMILL = [sys.executable, "-m", "datamill.cli.main"]


@dataclasses.dataclass
class Server:
    """A running server: its base URL, environment and home folder."""

    base: str
    port: int
    env: dict[str, str]
    home: Path
    process: subprocess.Popen[bytes]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def launch_server(home: Path, log_path: Path, *args: str, **extra_env: str) -> Server:
    """Start `datamill serve` on a free port with its home in `home`; return once it answers."""
    port = _free_port()
    env = dict(os.environ, DATAMILL_HOME=str(home), DATAMILL_PORT=str(port), **extra_env)
    env.pop("DATAMILL_ADMIN_PASSWORD", None) if "DATAMILL_ADMIN_PASSWORD" not in extra_env else None
    log = log_path.open("w")
    process = subprocess.Popen([*DATAMILL, "serve", *args], env=env, stdout=log, stderr=log)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            up = httpx.get(f"{base}/health", timeout=1).status_code == 200
        except httpx.TransportError:  # not listening yet
            up = False
        if up:
            break
        if process.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(log_path.read_text())
        time.sleep(0.1)
    return Server(base, port, env, home, process)


def stop_servers(servers: list[Server]) -> None:
    """SIGTERM each server, then check that each stopped cleanly."""
    for server in servers:
        server.process.send_signal(signal.SIGTERM)
    for server in servers:
        try:
            assert server.process.wait(timeout=30) == 0
        finally:
            server.process.kill()


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """A factory: start(*serve_args, **env) -> Server; all are stopped with SIGTERM after."""
    servers: list[Server] = []

    def start(*args: str, **extra_env: str) -> Server:
        index = len(servers)
        server = launch_server(
            tmp_path / f"home{index}", tmp_path / f"server{index}.log", *args, **extra_env
        )
        servers.append(server)
        return server

    yield start
    stop_servers(servers)
