"""A Spark Connect server in local mode on this machine, from the jars in the PySpark wheel.

Used when DATAMILL_SPARK_REMOTE is unset: the engine starts one for its
process and talks to it exactly as to a cluster. The server dies with the
process that started it (Linux: the kernel kills it), so killing a work
horse stops its Spark work too.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time

from datamill.errors import JobFailed

_SERVER_CLASS = "org.apache.spark.sql.connect.service.SparkConnectServer"
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def spark_home() -> str:
    """The folder of the installed PySpark, which holds Spark's jars and scripts."""
    try:
        import pyspark
    except ImportError:
        raise JobFailed("the Spark engine needs PySpark: pip install 'datamill[spark]'") from None
    return os.path.dirname(str(pyspark.__file__))


class LocalServer:
    """One Spark Connect server in local mode, on 127.0.0.1 only, for holders of its token."""

    def __init__(
        self, *, threads: int = 2, memory: str = "1g", temp_dir: str | None = None
    ) -> None:
        if shutil.which("java") is None:
            raise JobFailed(
                "the Spark engine needs Java (Debian: apt-get install openjdk-17-jre-headless)"
            )
        home = spark_home()
        self.port = _free_port()
        # Spark Connect has no other login: without a token, any process of any
        # local user could connect and read every file this user may (attack
        # review). The token goes by environment, which only this user can
        # read (/proc/<pid>/environ), never by command line (`ps` shows that);
        # gRPC's local credentials carry it only over a loopback connection.
        self.token = secrets.token_urlsafe(32)
        self.remote = f"sc://localhost:{self.port}/;token={self.token}"
        self.log_path = os.path.join(temp_dir or tempfile.gettempdir(), f"spark-{self.port}.log")
        command = [
            os.path.join(home, "bin", "spark-submit"),
            "--class",
            _SERVER_CLASS,
            "--master",
            f"local[{threads}]",
            "--driver-memory",
            memory,
            "--conf",
            f"spark.connect.grpc.binding.port={self.port}",
            "--conf",
            "spark.connect.grpc.binding.address=127.0.0.1",
            "--conf",
            "spark.ui.enabled=false",
            "--conf",
            "spark.sql.variable.substitute=false",
            "--conf",
            "spark.sql.shuffle.partitions=2",
            "spark-internal",
        ]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                command,
                env=dict(os.environ, SPARK_HOME=home, SPARK_CONNECT_AUTHENTICATE_TOKEN=self.token),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
                cwd=temp_dir or tempfile.gettempdir(),
            )

    def wait(self, timeout: float = 300.0) -> None:
        """Return once the server accepts connections; JobFailed if it ended or never did."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise JobFailed(f"the local Spark server ended: {self._log_tail()}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), 0.5),
            ):
                return
            time.sleep(0.2)
        self.close()
        raise JobFailed(f"the local Spark server did not start within {timeout:.0f} s")

    def _log_tail(self) -> str:
        with contextlib.suppress(OSError), open(self.log_path, "rb") as log:
            return log.read()[-1000:].decode("utf-8", "replace")
        return "no log"

    def close(self) -> None:
        """Stop the server."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        with contextlib.suppress(OSError):
            os.unlink(self.log_path)
