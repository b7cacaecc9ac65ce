"""The embedded worker of `datamill serve`, in a child process of the server.

The server runs its worker here rather than in threads of its own process so
that HTTP and the worker's store work do not share one interpreter lock
(docs/decisions.md, "The embedded worker is a child process"). The child is
the `datamill worker` code path plus one socket to its server, which carries
single bytes:

- server -> child: `WORK` (a run was queued or became startable), `STOP` (a
  running execution was asked to stop), `METRICS` (send your metrics, on the
  metrics pipe);
- child -> server: `RUNS` (a commit here changed a run: the server's waiting
  requests re-read, as they would for a commit of their own process on
  SQLite), `BEAT` (the worker wrote its heartbeat: the server's /ready).

The child stops gracefully on SIGTERM (the server's supervisor stops it so)
and never on SIGINT: a Ctrl-C in a terminal reaches the whole process group,
and the server decides. It dies at once with its server (a server killed
outright: the node crashed as one process would), or, where the kernel cannot
arrange that, stops when the socket closes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
from multiprocessing.connection import Connection

from datamill.settings import Settings

log = logging.getLogger(__name__)

WORK = b"w"
STOP = b"s"
METRICS = b"m"
RUNS = b"r"
BEAT = b"b"


def send(sock: socket.socket, message: bytes) -> None:
    """Send one message byte; dropped if the peer is gone or its buffer is full.

    A full buffer holds plenty of unread messages of each kind already, and
    every message means "look again", so a dropped one changes nothing.
    """
    with contextlib.suppress(OSError):
        sock.send(message, socket.MSG_DONTWAIT)


def child_main(
    settings: Settings, sock: socket.socket, metrics_out: Connection, server_pid: int
) -> None:
    """Entry point of the worker child: run a worker until the server says stop or goes away."""
    from datamill.bootstrap import open_node
    from datamill.observability.logs import configure_logging
    from datamill.worker.horse import die_with, name_process
    from datamill.worker.worker import Worker

    # A server killed outright takes its worker (and so its engine children)
    # with it, as when they were one process: its runs are lost, found by the
    # next worker's reconciliation, and never run twice.
    name_process(b"datamill-worker")
    die_with(server_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    configure_logging(settings.log_format, settings.log_level)
    node = open_node(settings)
    if node.store.db.is_sqlite:
        # PostgreSQL tells the server's waiters itself (NOTIFY); SQLite cannot.
        node.store.db.run_change_listeners.append(lambda: send(sock, RUNS))
    node.store.metrics.heartbeat_listeners.append(lambda: send(sock, BEAT))
    runner = Worker(node.store, settings, node.wakeup)

    def listen() -> None:
        while True:
            try:
                received = sock.recv(4096)
            except OSError:
                received = b""
            if not received:  # the server is gone: stop as if told to
                done.set()
                return
            if WORK in received:
                node.wakeup.notify_work()
            if STOP in received:
                node.wakeup.notify_stop()
            for _ in range(received.count(METRICS)):
                try:
                    metrics_out.send(list(node.store.metrics.registry.collect()))
                except OSError:
                    log.warning("could not send the worker's metrics to the server")

    threading.Thread(target=listen, name="datamill-server-link", daemon=True).start()
    runner.start()
    log.info("embedded worker %s running in process %d", runner.id, os.getpid())
    done.wait()
    runner.shutdown()
    node.store.close()
