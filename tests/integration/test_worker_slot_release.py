"""A run retried at once and claimed by the worker's other slot stays that slot's (commit 107a0f6).

CI once found a retried run at attempt 3 instead of 2: with retryDelay 0
the requeued run was claimed by the second slot before the first slot had
let go of it, the first slot's release dropped the second claim, and the
next heartbeat found the run RUNNING on this worker but held by no slot,
and handed it back while it ran. The interleaving is forced here, no
threads or timing: the first slot's run is a hook that ends the run with a
passing failure and lets the other slot claim the retry, then the slot's
own release and a heartbeat follow, as real code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from datamill.bootstrap import Node
from datamill.domain.retry import RetryPolicy
from datamill.domain.status import JobStatus
from datamill.worker import worker as worker_module
from datamill.worker.worker import Worker
from tests.helpers import admin, define, execution, orders_import, write_orders_csv

IMP = "/Data/ImportJobs/o.imp"


def test_the_first_slots_release_keeps_the_other_slots_claim_of_the_retry(
    node: Node, files_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = write_orders_csv(files_root / "in", rows=3)
    define(node, IMP, {**orders_import(source), "retries": 1, "retryDelay": 0})
    run = node.jobs.trigger(IMP, admin(node))
    worker = Worker(node.store, node.settings, node.wakeup)
    retried: list[Any] = []

    def ends_retryable_and_the_other_slot_claims(execution: Any, *_: Any) -> Any:
        # The first slot's run failed in passing: back to the queue at once ...
        verdict = node.store.queue.retry_later(
            execution, worker.id, "connection refused", RetryPolicy(retries=1, delay_seconds=0)
        )
        assert verdict is not None and verdict.retry
        # ... and the second slot claims it before the first slot lets go.
        _, claimed = worker._claiming(
            lambda prepare: (None, node.store.queue.claim_and_prepare(worker.id, prepare))
        )
        assert claimed is not None and claimed[0].id == execution.id
        retried.append(claimed[0])
        return None  # no horse to reuse

    monkeypatch.setattr(worker, "_run", ends_retryable_and_the_other_slot_claims)
    # The first slot: claims the run, runs it (the hook), lets go of its claim.
    assert worker._claim_and_run(object(), worker_module._Slot()) is None  # type: ignore[arg-type]
    assert [r.attempts for r in retried] == [2]
    # The heartbeat must find the retry held by the second slot: nothing to hand back.
    worker._beat()
    now = execution(node, run.id)
    assert (now.status, now.worker_id, now.attempts) == (JobStatus.RUNNING, worker.id, 2)
    assert now.started_at is not None
    # The second claim's pending log is its own, kept for its run.
    assert run.id in worker._logs
