"""The Prometheus metrics of one node (server, worker or both in one process).

Each Store holds one `Metrics` with a registry of its own rather than the
process-wide default registry, so several nodes in one process (tests) keep
their numbers apart. Label values come from small fixed sets (job kinds,
statuses, route templates, error classes), never from user input, so the
number of time series stays bounded.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import event
from sqlalchemy.engine import Engine, ExceptionContext

# Runs take from milliseconds (a small import) to hours (the default limit is 6 h).
RUN_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 1800, 3600, 21600)
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)


class Metrics:
    """Counters, gauges and histograms of one node, in their own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.runs_started = Counter(
            "datamill_runs_started", "Runs this node's worker started.", ["kind"], registry=r
        )
        self.runs_finished = Counter(
            "datamill_runs_finished",
            "Runs this node's worker ended, by final status.",
            ["kind", "status"],
            registry=r,
        )
        self.run_duration = Histogram(
            "datamill_run_duration_seconds",
            "From a worker starting a run to the run ending.",
            ["kind"],
            buckets=RUN_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            "datamill_run_queue_wait_seconds",
            "From a run being queued to a worker starting it.",
            ["kind"],
            buckets=RUN_BUCKETS,
            registry=r,
        )
        self.handed_back = Counter(
            "datamill_runs_handed_back",
            "Runs this node's worker returned to the queue (shutdown, lost claim answer,"
            " store failure before the start).",
            registry=r,
        )
        self.slots = Gauge(
            "datamill_worker_slots",
            "Worker slots of this node, busy or idle.",
            ["state"],
            registry=r,
        )
        self.heartbeat_age = Gauge(
            "datamill_worker_heartbeat_age_seconds",
            "Seconds since this node's worker last wrote its heartbeat.",
            registry=r,
        )
        self.heartbeat_age.set_function(self._own_heartbeat_age)
        self.store_errors = Counter(
            "datamill_store_errors",
            "Errors the metadata database raised, by SQLAlchemy error class.",
            ["error"],
            registry=r,
        )
        self.http_requests = Counter(
            "datamill_http_requests",
            "HTTP requests answered, by route template and status code.",
            ["method", "route", "status"],
            registry=r,
        )
        self.http_duration = Histogram(
            "datamill_http_request_duration_seconds",
            "Time to answer an HTTP request, by route template.",
            ["route"],
            buckets=HTTP_BUCKETS,
            registry=r,
        )
        self.trigger_requests = Counter(
            "datamill_trigger_requests",
            "Requests to trigger jobs (single, sequential, legacy), by status code.",
            ["route", "status"],
            registry=r,
        )
        self._lock = threading.Lock()
        self._busy = 0
        self._slots_total = 0
        self._last_heartbeat: float | None = None
        self._queue_watched = False
        # Called after each heartbeat of this process's worker (a worker child tells its server).
        self.heartbeat_listeners: list[Callable[[], None]] = []
        # The server's worker child (worker/supervisor.py): its heartbeats as it
        # tells them, and its metric families read at scrape time.
        self._relayed_heartbeat: float | None = None
        self.relayed: Callable[[], list[Metric]] | None = None
        # What /metrics and the metrics port expose: this registry and the child's.
        self.exposed: CollectorRegistry = _Exposed(self)
        # The slot gauges' children, looked up once: they are set twice per run.
        self._busy_slots = self.slots.labels("busy")
        self._idle_slots = self.slots.labels("idle")
        self._busy_slots.set(0)
        self._idle_slots.set(0)

    # ------------------------------------------------------------ worker slots

    def slots_added(self, count: int) -> None:
        """A worker with `count` slots started in this process."""
        with self._lock:
            self._slots_total += count
            self._last_heartbeat = time.monotonic()
            self._publish_slots()

    def slots_removed(self, count: int) -> None:
        """A worker with `count` slots stopped in this process."""
        with self._lock:
            self._slots_total = max(0, self._slots_total - count)
            self._publish_slots()

    def slot_taken(self) -> None:
        """A slot started a run."""
        with self._lock:
            self._busy += 1
            self._publish_slots()

    def slot_freed(self) -> None:
        """A slot is done with its run."""
        with self._lock:
            self._busy = max(0, self._busy - 1)
            self._publish_slots()

    def _publish_slots(self) -> None:
        self._busy_slots.set(self._busy)
        self._idle_slots.set(max(0, self._slots_total - self._busy))

    @property
    def has_worker(self) -> bool:
        """Whether this node runs a worker: in this process, or as the server's worker child."""
        return self._slots_total > 0 or self.relayed is not None

    def heartbeat(self) -> None:
        """The worker of this process wrote its heartbeat."""
        self._last_heartbeat = time.monotonic()
        for listener in self.heartbeat_listeners:
            listener()

    def relayed_heartbeat(self) -> None:
        """The server's worker child wrote its heartbeat."""
        self._relayed_heartbeat = time.monotonic()

    def seconds_since_heartbeat(self) -> float:
        """Seconds since this node's worker (own or child) last beat; 0 without a worker.

        A worker child that has not beaten yet counts from when it was started.
        """
        if self.relayed is not None:
            last = self._relayed_heartbeat
            if last is None:
                self._relayed_heartbeat = last = time.monotonic()
            return time.monotonic() - last
        return self._own_heartbeat_age()

    def _own_heartbeat_age(self) -> float:
        # The gauge: the child reports its own, and the families are summed.
        last = self._last_heartbeat
        return 0.0 if last is None else time.monotonic() - last

    # ------------------------------------------------------------ store

    def watch_store_errors(self, engine: Engine) -> None:
        """Count every error the metadata database raises through `engine`."""

        def count(context: ExceptionContext) -> None:
            error = context.sqlalchemy_exception
            name = type(error).__name__ if error is not None else "Error"
            self.store_errors.labels(name).inc()

        event.listen(engine, "handle_error", count)

    def watch_queue(self, depth: Callable[[], dict[str, int]]) -> None:
        """Report the queue depth by status at scrape time, read by `depth` (once)."""
        with self._lock:
            if self._queue_watched:
                return
            self._queue_watched = True
        self.registry.register(_QueueDepth(depth))


class _QueueDepth(Collector):
    """Queue depth by status, read from the store when Prometheus scrapes."""

    def __init__(self, depth: Callable[[], dict[str, int]]) -> None:
        self._depth = depth

    def describe(self) -> Iterable[Metric]:
        """The family without reading the store (at registration)."""
        return [_family()]

    def collect(self) -> Iterable[Metric]:
        """The current depth; nothing when the store cannot be read (counted as its error)."""
        try:
            counts = self._depth()
        except Exception:
            # The store error is counted by the engine's error hook; the
            # scrape still returns every other metric.
            return []
        family = _family()
        for status, count in sorted(counts.items()):
            family.add_metric([status], count)
        return [family]


class _Exposed(CollectorRegistry):
    """A node's registry with its worker child's families summed in (see Metrics.relayed)."""

    def __init__(self, metrics: Metrics) -> None:
        super().__init__(auto_describe=False)
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        """Own families; with a worker child, the child's added sample by sample."""
        own = list(self._metrics.registry.collect())
        relayed = self._metrics.relayed
        if relayed is None:
            return own
        return merge_families(own, relayed())


def merge_families(own: list[Metric], other: list[Metric]) -> list[Metric]:
    """Two processes' families as one node's: equal samples summed (`_created`: the earlier)."""
    by_name = {family.name: family for family in own}
    merged = list(own)
    for family in other:
        mine = by_name.get(family.name)
        if mine is None:
            merged.append(family)
            continue
        values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        for sample in [*mine.samples, *family.samples]:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            seen = values.get(key)
            if seen is None:
                values[key] = sample.value
            elif sample.name.endswith("_created"):
                values[key] = min(seen, sample.value)
            else:
                values[key] = seen + sample.value
        combined = Metric(mine.name, mine.documentation, mine.type, mine.unit)
        for (name, labels), value in values.items():
            combined.add_sample(name, dict(labels), value)
        merged[merged.index(mine)] = combined
    return merged


def _family() -> GaugeMetricFamily:
    return GaugeMetricFamily(
        "datamill_queue_depth",
        "Executions not yet ended, by status, across all workers (read from the store).",
        labels=["status"],
    )


def serve_metrics(metrics: Metrics, host: str, port: int) -> None:
    """Serve the metrics without credentials on a port of their own (a daemon thread)."""
    start_http_server(port, addr=host, registry=metrics.exposed)
