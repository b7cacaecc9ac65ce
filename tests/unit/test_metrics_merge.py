"""A server and its worker child expose one node's metrics: samples summed, not repeated."""

from __future__ import annotations

import time

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from datamill.observability.metrics import Metrics


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_the_childs_families_are_summed_into_the_servers_sample_by_sample() -> None:
    server, child = Metrics(), Metrics()
    server.store_errors.labels("OperationalError").inc(2)
    time.sleep(0.01)  # the child's series is created later
    child.store_errors.labels("OperationalError").inc(3)
    child.store_errors.labels("IntegrityError").inc()
    child.runs_finished.labels("import", "COMPLETED").inc()
    child.slots_added(2)
    server.relayed = lambda: list(child.registry.collect())

    text = generate_latest(server.exposed).decode()
    samples = _samples(text)
    errors = "datamill_store_errors_total"
    assert samples[(errors, (("error", "OperationalError"),))] == 5
    assert samples[(errors, (("error", "IntegrityError"),))] == 1
    assert (
        samples[("datamill_runs_finished_total", (("kind", "import"), ("status", "COMPLETED")))]
        == 1
    )
    assert samples[("datamill_worker_slots", (("state", "idle"),))] == 2
    # A series' creation time is the earlier one, not a sum of timestamps.
    created = samples[("datamill_store_errors_created", (("error", "OperationalError"),))]
    own = _samples(generate_latest(server.registry).decode())
    assert created == own[("datamill_store_errors_created", (("error", "OperationalError"),))]
    # Each family once, as one process would expose it.
    types = [line for line in text.splitlines() if line.startswith("# TYPE ")]
    assert len(types) == len(set(types))


def test_without_a_worker_child_the_servers_own_registry_is_exposed() -> None:
    server = Metrics()
    server.store_errors.labels("OperationalError").inc()
    assert generate_latest(server.exposed) == generate_latest(server.registry)
    assert not server.has_worker
