"""The server's side of its embedded worker child: start it, restart it, stop it, talk to it.

`datamill serve` starts one worker child (worker/child.py) with its own
settings, restarts it whenever it ends without being asked to (a crash, an
out-of-memory kill, an operator's kill), and at shutdown stops it with
SIGTERM, waits for its graceful stop and reaps it, so no process outlives
the server. A restarted child's start reconciles the runs the dead one held
(its pid is gone on this host): each is retried or ends in ERROR, as after
any worker crash, and none runs twice, because the dead child's engine
processes die with it.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import socket
import threading
import time
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess

from prometheus_client.core import Metric

from datamill.bootstrap import Node
from datamill.worker.child import BEAT, METRICS, RUNS, STOP, WORK, child_main, send

log = logging.getLogger(__name__)

_CONTEXT = multiprocessing.get_context("spawn")
# Restarts of a child that keeps dying wait longer each time, up to this.
MAX_RESTART_DELAY_SECONDS = 30.0
# A child that ran this long counts as healthy: its next restart is quick again.
HEALTHY_SECONDS = 60.0
# How long a scrape waits for the child's metrics before answering without them.
METRICS_WAIT_SECONDS = 2.0
# How long the child may take beyond its shutdown grace before it is killed.
STOP_MARGIN_SECONDS = 15.0


class WorkerSupervisor:
    """Runs the embedded worker as a supervised child process of the server."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.settings = node.settings
        self.process: BaseProcess | None = None
        # How many children were started (the first, then each restart).
        self.starts = 0
        self._sock: socket.socket | None = None
        self._metrics_in: Connection | None = None
        self._metrics_lock = threading.Lock()
        self._stopping = threading.Event()
        # Held while a child is started and while stopping begins: a restart
        # racing with the stop must not leave a child nobody stops.
        self._life = threading.Lock()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ life cycle

    def start(self) -> None:
        """Start the child and the thread that watches it."""
        self._spawn()
        wakeup = self.node.wakeup
        wakeup.forward = self._forward
        self.node.store.metrics.relayed = self._child_metrics
        self._thread = threading.Thread(target=self._supervise, name="datamill-supervisor")
        self._thread.start()

    def stop(self) -> None:
        """Stop the child gracefully (its shutdown grace applies), reap it; kill it if it hangs."""
        with self._life:
            self._stopping.set()
            process = self.process
        self.node.wakeup.forward = None
        if process is not None and process.is_alive():
            with contextlib.suppress(ProcessLookupError):
                process.terminate()  # SIGTERM: the worker's graceful shutdown
            process.join(self.settings.shutdown_grace_seconds + STOP_MARGIN_SECONDS)
            if process.is_alive():
                log.error("the worker child did not stop in time; killing it")
                process.kill()
                process.join()
        if self._thread is not None:
            self._thread.join()
        self.node.store.metrics.relayed = None
        self._close_links()

    def _spawn(self) -> None:
        server_end, child_end = socket.socketpair()
        metrics_in, metrics_out = _CONTEXT.Pipe(duplex=False)
        process = _CONTEXT.Process(
            target=child_main,
            args=(self.settings, child_end, metrics_out, os.getpid()),
            name="datamill-worker",
        )
        process.start()
        child_end.close()
        metrics_out.close()
        with self._metrics_lock:
            self._close_links()
            self._sock, self._metrics_in, self.process = server_end, metrics_in, process
        self.starts += 1
        log.info("embedded worker started in process %d", process.pid)

    def _close_links(self) -> None:
        for link in (self._sock, self._metrics_in):
            if link is not None:
                link.close()

    def _supervise(self) -> None:
        delay = 1.0
        while not self._stopping.is_set():
            started = time.monotonic()
            self._relay_until_exit()
            process = self.process
            assert process is not None
            process.join()
            if self._stopping.is_set():
                return
            log.error(
                "the embedded worker (process %d) ended with code %s; restarting it",
                process.pid,
                process.exitcode,
            )
            delay = 1.0 if time.monotonic() - started >= HEALTHY_SECONDS else delay
            if self._stopping.wait(delay):
                return
            delay = min(delay * 2, MAX_RESTART_DELAY_SECONDS)
            try:
                with self._life:
                    if self._stopping.is_set():
                        return
                    self._spawn()
            except Exception:
                log.exception("could not start the embedded worker; trying again")

    def _relay_until_exit(self) -> None:
        """Relay the child's messages until it exits (or closes its end)."""
        process, sock = self.process, self._sock
        assert process is not None and sock is not None
        metrics = self.node.store.metrics
        listeners = self.node.store.db.run_change_listeners
        while True:
            ready = wait([sock, process.sentinel])
            if process.sentinel in ready and sock not in ready:
                return
            try:
                received = sock.recv(4096)
            except OSError:
                received = b""
            if not received:
                return
            if RUNS in received:
                for listener in list(listeners):
                    listener()
            if BEAT in received:
                metrics.relayed_heartbeat()

    # ------------------------------------------------------------ messages

    def _forward(self, message: str) -> None:
        sock = self._sock
        if sock is not None:
            send(sock, STOP if message == "stop" else WORK)

    def _child_metrics(self) -> list[Metric]:
        """The child's metric families now; none if it does not answer in time."""
        with self._metrics_lock:
            sock, metrics_in = self._sock, self._metrics_in
            if sock is None or metrics_in is None:
                return []
            try:
                while metrics_in.poll():  # a late answer to an earlier scrape
                    metrics_in.recv()
                send(sock, METRICS)
                if not metrics_in.poll(METRICS_WAIT_SECONDS):
                    return []
                families: list[Metric] = metrics_in.recv()
            except (OSError, EOFError):
                return []
            return families
