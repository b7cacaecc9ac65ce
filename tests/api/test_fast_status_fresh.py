"""The status fast path keeps nothing of a run's state between polls: each poll reads it afresh.

What it does keep (a rendered body per state of a run, the mean of a set
of stored run times) is keyed by the values the poll has just read, so any
change in the store shows on the very next poll. Each step here is answered
by the fast path and compared byte for byte with the FastAPI route.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from datamill.api.app import create_app
from datamill.bootstrap import Node
from datamill.domain.records import Execution
from datamill.domain.status import JobStatus
from datamill.store import tables as t
from datamill.store.queue import Outcome
from datamill.worker.housekeeping import drop_old_history
from tests.api.test_fast_status import ADMIN, Pair, _auth, _job, _status, freeze_clock
from tests.helpers import admin, password_hash


@pytest.fixture
def pair(node: Node) -> Iterator[Pair]:
    """Both apps, started."""
    made = Pair(node)
    with made.fast, made.slow:
        yield made


def _member(text: str, name: str) -> str:
    return text.split(f'"{name}": ')[1].split("\n")[0].rstrip(",")


def _running_for(
    node: Node, file_id: int, seconds: float, monkeypatch: pytest.MonkeyPatch
) -> Execution:
    """A new run of the job, claimed; both paths' clock fixed `seconds` after its start."""
    node.jobs.trigger(str(file_id), admin(node))
    running = node.store.queue.claim_next_execution("w1")
    assert running is not None and running.started_at is not None
    frozen = running.started_at + dt.timedelta(seconds=seconds)
    freeze_clock(monkeypatch, frozen)
    return running


def _poll(pair: Pair, file_id: int) -> str:
    answered, (code, _, _, text) = pair.both(_status(file_id), ADMIN)
    assert answered and code == 200, text
    return text


def test_a_running_estimate_follows_history_progress_and_the_end(
    pair: Pair, node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    file_id = _job(node)
    for _ in range(3):
        node.jobs.trigger(str(file_id), admin(node))
        claimed = node.store.queue.claim_next_execution("w1")
        assert claimed is not None
        node.store.queue.finish(claimed, "w1", Outcome(JobStatus.COMPLETED, success_count=1))
    # Each earlier run took 100 s.
    e = t.executions
    with node.store.db.write() as conn:
        for run_id, finished in conn.execute(sa.select(e.c.id, e.c.finished_at)).all():
            started = finished - dt.timedelta(seconds=100)
            conn.execute(sa.update(e).where(e.c.id == run_id).values(started_at=started))
    running = _running_for(node, file_id, 10, monkeypatch)

    # 100 s by history, 10 s gone.
    assert _member(_poll(pair, file_id), "estimate-time") == '"1m 30s"'
    # The history is dropped: no mean any more, no progress yet.
    assert drop_old_history(node.store, days=0) == 3
    assert _member(_poll(pair, file_id), "estimate-time") == '"0s"'
    # Progress: by pace alone, 10 s for the first quarter.
    node.store.queue.report_progress(running.id, 0.25, [])
    text = _poll(pair, file_id)
    assert _member(text, "estimate-time") == '"30s"' and _member(text, "job-progress") == '"25"'
    # The end shows at once.
    node.store.queue.finish(running, "w1", Outcome(JobStatus.COMPLETED, success_count=1))
    text = _poll(pair, file_id)
    assert _member(text, "job-status") == '"COMPLETED"' and "estimate-time" not in text


def test_long_estimates_are_written_as_the_route_writes_them(
    pair: Pair, node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Hours, minutes and seconds: the fast path writes these members without json.dumps.
    file_id = _job(node)
    running = _running_for(node, file_id, 3661, monkeypatch)
    node.store.queue.report_progress(running.id, 0.01, [])
    text = _poll(pair, file_id)
    assert _member(text, "estimate-time") == '"100h 40m 39s"'
    assert _member(text, "job-progress") == '"1"'


def test_a_commit_by_another_process_shows_on_the_next_poll(pair: Pair, node: Node) -> None:
    # A `datamill worker` or a CLI command on the same SQLite file commits
    # from another process: the kept rows must not outlive that commit.
    if not node.store.db.is_sqlite:
        pytest.skip("rows are kept between polls only on SQLite")
    node.store.users.create("cid", password_hash("pw-cid"), roles=("ADMIN",))
    file_id = _job(node)
    cid = _auth("cid", "pw-cid")
    answered, (code, _, _, text) = pair.both(_status(file_id), cid)
    assert answered and code == 200 and '"job-status": "_NONE"' in text
    path = make_url(node.settings.database_url).database
    assert path is not None

    def commit_elsewhere(sql: str) -> None:
        script = f"import sqlite3; c = sqlite3.connect({path!r}); c.execute({sql!r}); c.commit()"
        subprocess.run([sys.executable, "-c", script], check=True)

    commit_elsewhere("UPDATE user_roles SET role_name = 'ANALYST' WHERE user_name = 'cid'")
    answered, (code, _, _, text) = pair.both(_status(file_id), cid)
    assert not answered and code == 404 and '"status": "failure"' in text
    commit_elsewhere("UPDATE user_roles SET role_name = 'ADMIN' WHERE user_name = 'cid'")
    node.jobs.trigger(str(file_id), admin(node))
    assert pair.both(_status(file_id), cid)[1][0] == 200
    commit_elsewhere("UPDATE executions SET status = 'CANCELED'")
    answered, (code, _, _, text) = pair.both(_status(file_id), cid)
    assert answered and code == 200 and '"job-status": "CANCELED"' in text


def _scope(path: str) -> dict[str, Any]:
    """What the fast path reads of a request (it answers before any route is matched)."""
    token = base64.b64encode(b"admin:secret")
    headers = [(b"host", b"testserver"), (b"authorization", b"Basic " + token)]
    return {"type": "http", "method": "GET", "path": path, "query_string": b"", "headers": headers}


def test_polls_of_one_loop_batch_read_the_data_version_once(node: Node) -> None:
    # Requests answered in one batch of the event loop's callbacks were all
    # received before it started, so one read of the version serves them;
    # the next batch reads it again and sees what was committed meanwhile.
    if not node.store.db.is_sqlite:
        pytest.skip("rows are kept between polls only on SQLite")
    app = create_app(node.settings, node.jobs)
    fast = app.fast_status  # type: ignore[attr-defined]
    file_id = _job(node)
    app.state.authenticator.authenticate("admin", "secret")  # signed in a moment ago

    async def poll() -> tuple[int, bytes]:
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await app(_scope(_status(file_id)), receive, send)
        return sent[0]["status"], sent[1]["body"]

    async def polls() -> None:
        reads, answered = fast._kept.version_reads, fast.answered
        batch = await asyncio.gather(*(poll() for _ in range(4)))
        assert all(code == 200 and b'"job-status": "_NONE"' in body for code, body in batch)
        assert fast.answered == answered + 4
        assert fast._kept.version_reads == reads + 1
        # A commit after the batch: the very next poll reads the version again.
        node.jobs.trigger(str(file_id), admin(node))
        assert node.store.queue.claim_next_execution("w1") is not None
        code, body = await poll()
        assert code == 200 and b'"job-status": "RUNNING"' in body
        assert fast._kept.version_reads == reads + 2

    asyncio.run(polls())
