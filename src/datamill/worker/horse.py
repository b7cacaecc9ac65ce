"""Work horses: warm child processes that run one execution at a time.

Running the engine in a child process means a crash, a runaway query or an
out-of-memory kill ends only that run; and a stop can always end it by
killing the process. Processes are started ahead of time ("warm") because
importing the engine (DuckDB, pyarrow; PySpark) takes far longer than a trivial job.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import select
import signal
import threading
import time
import traceback
import uuid
from multiprocessing.connection import Connection
from typing import Any

from datamill.domain.runlog import PendingEvent
from datamill.engine.base import RunRequest, RunResult

# DuckDB horses are forked from a fork server that imported the engine once
# (per worker process): a new horse is ready in milliseconds instead of
# paying ~0.6-1.2 s of CPU for its imports, which matters when a stop or a
# crash replaces one, and for every worker a test starts. The fork server is
# single-threaded (importing the engine starts no thread), so forking it is
# safe where forking the threaded worker would not be. Spark horses are
# spawned: their cost is the JVM's, and a Spark server they start takes the
# worker's environment as it is now, not as the fork server saw it.
_SPAWN = multiprocessing.get_context("spawn")
_FORKSERVER = multiprocessing.get_context("forkserver")
_FORKSERVER.set_forkserver_preload(["datamill.worker.horse", "datamill.engine.duckdb"])
# The kind of answer a child sends for a failure that may pass (errors.PassingFailure).
RETRYABLE = "failed-passing"
_PR_SET_PDEATHSIG = 1
_PR_SET_NAME = 15
# What `ps -o comm`, `top` and /proc/<pid>/comm show for a work horse (at most
# 15 bytes): forked horses would otherwise look like their fork server.
PROCESS_NAME = b"datamill-horse"
# How often a child tells its parent how far a run got.
PROGRESS_SECONDS = 0.2
# A run's last progress (1.0) is sent only once the run may have lasted long
# enough for the parent to write it (Worker._await writes none in a run's
# first 0.5 s); a little less, as the parent's clock started first.
FINAL_PROGRESS_SECONDS = 0.4


def name_process(name: bytes) -> None:
    """Name this process for `ps -o comm`, `top` and /proc/<pid>/comm (15 bytes at most)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_NAME, ctypes.c_char_p(name))


def die_with(owner: int) -> None:
    """End this process when process `owner` ends (a horse's worker, the server's worker child).

    A horse busy with a query does not read its pipe, so it would outlive a
    killed worker (holding memory, files, a DuckDB database). A forked horse's
    parent is the fork server, which lives as long as any of its children do,
    so the kernel's parent-death signal alone would never fire: the owner is
    watched itself, through a pidfd (readable once it has ended).
    """
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)  # a spawned child: at once
    watched: int | None = None
    try:
        watched = os.pidfd_open(owner)
    except ProcessLookupError:
        os._exit(1)  # the owner ended before this process started
    except OSError:
        watched = None  # no pidfd (a kernel before 5.3): poll the pid instead

    def watch() -> None:
        if watched is not None:
            select.select([watched], [], [])
            os._exit(1)
        while True:
            try:
                os.kill(owner, 0)
            except ProcessLookupError:
                os._exit(1)
            time.sleep(0.5)

    threading.Thread(target=watch, name="datamill-watch-owner", daemon=True).start()


def horse_main(conn: Connection, worker: int, engine_name: str = "duckdb") -> None:
    """Entry point of a child process: run requests until the pipe closes."""
    name_process(PROCESS_NAME)
    die_with(worker)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from datamill.engine.registry import Engines
    from datamill.errors import DatamillError, PassingFailure

    engine = Engines(engine_name, keep_warm=True)
    # The imports are done: the worker claims work for this process only now.
    conn.send(("ready", None))
    while True:
        try:
            request: RunRequest = conn.recv()
        except (EOFError, OSError):
            engine.close()
            return
        # The parent writes progress at most every 0.5 s, and none in a run's
        # first 0.5 s: a run's first message waits PROGRESS_SECONDS (a trivial
        # run sends none, where it sent two the parent dropped).
        started = last_sent = time.monotonic()

        def progress(fraction: float, started: float = started) -> None:
            nonlocal last_sent
            now = time.monotonic()
            # Throttled: the parent writes progress to the store.
            if now - last_sent >= PROGRESS_SECONDS or (
                fraction >= 1.0 and now - started >= FINAL_PROGRESS_SECONDS
            ):
                last_sent = now
                with contextlib.suppress(Exception):
                    conn.send(("progress", float(fraction)))

        def event(happened: PendingEvent) -> None:
            # Sent as it happens, so a running job's log can be tailed.
            with contextlib.suppress(Exception):
                conn.send(("event", happened))

        try:
            result = engine.run(request, progress, event)
            conn.send(("done", result))
        except PassingFailure as error:
            conn.send((RETRYABLE, error.message))
        except DatamillError as error:
            conn.send(("failed", error.message))
        except MemoryError:
            conn.send(("failed", "the job ran out of memory"))
        except Exception as error:  # a bug in the engine: report it, keep the horse
            conn.send(("failed", f"internal error: {error!r}\n{traceback.format_exc(limit=5)}"))
        # After the answer is sent, so the worker publishes without waiting for this.
        with contextlib.suppress(Exception):
            engine.between_runs()


class HorseDied(Exception):
    """The child process ended before it answered."""


class Horse:
    """The parent's handle on one child process."""

    def __init__(self, engine: str = "duckdb") -> None:
        context = _FORKSERVER if engine == "duckdb" else _SPAWN
        parent_end, child_end = context.Pipe()
        self._conn = parent_end
        self.process = context.Process(
            target=horse_main,
            args=(child_end, os.getpid(), engine),
            name="datamill-horse",
            daemon=True,
        )
        # Names the engine's session elsewhere (Spark) for all of this child's
        # runs; after killing the child the worker cancels that session's work.
        self.session = str(uuid.uuid4())
        self.process.start()
        child_end.close()
        self._ready = False

    @property
    def alive(self) -> bool:
        """Whether the process still runs."""
        return self.process.is_alive()

    def wait_ready(self, timeout: float) -> bool:
        """Whether the child has imported the engine, waiting up to `timeout`."""
        if not self._ready:
            with contextlib.suppress(HorseDied):  # the caller sees it is not alive
                self.receive(timeout)
        return self._ready

    def send(self, request: RunRequest) -> None:
        """Hand a request to the child."""
        try:
            self._conn.send(request)
        except (OSError, ValueError) as error:
            raise HorseDied(str(error)) from error

    def receive(self, timeout: float) -> tuple[str, Any] | None:
        """The next message, None if none arrived within timeout; HorseDied on EOF."""
        try:
            if not self._conn.poll(timeout):
                if not self.process.is_alive():
                    raise HorseDied(self.exit_description())
                return None
            message: tuple[str, Any] = self._conn.recv()
            if message[0] == "ready":
                self._ready = True
                return None
            return message
        except (EOFError, OSError) as error:
            self.process.join(1.0)
            raise HorseDied(self.exit_description()) from error

    def exit_description(self) -> str:
        """Why the process ended, in words."""
        code = self.process.exitcode
        if code is not None and code < 0:
            with contextlib.suppress(ValueError):
                return f"the execution process was killed by {signal.Signals(-code).name}"
        return f"the execution process ended unexpectedly (exit code {code})"

    def kill(self) -> None:
        """End the child at once."""
        with contextlib.suppress(Exception):
            self.process.kill()
        self.process.join(5.0)
        with contextlib.suppress(Exception):
            self._conn.close()


def run_result(message: tuple[str, Any]) -> RunResult | str:
    """The result of a 'done' message, or the error text of a 'failed' one."""
    kind, payload = message
    if kind == "done":
        assert isinstance(payload, RunResult)
        return payload
    return str(payload)
