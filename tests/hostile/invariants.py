"""What must be true of a store once every execution has settled, whatever happened before.

The hostile tests kill processes and cut database connections at random
moments, then call `settled_problems` and require that it finds nothing.
Callers sweep unnamed data folders first (housekeeping's job, which waits for
them to age so that a publish still committing keeps its folder).
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import re
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from datamill.bootstrap import Node
from datamill.domain.status import ACTIVE_STATUSES, JobStatus
from datamill.engine.windows import is_idle_window
from datamill.store import tables as t
from datamill.store.queue import WORKER_LOST

E = t.executions

_CANCELED = re.compile(
    r"Canceled without starting: (?P<path>.+) \(execution (?P<id>\d+)\) of the same "
    r"sequential plan ended (?P<status>[A-Z_]+)\."
)


@dataclasses.dataclass
class Report:
    """Violations found, and what the executions ended as."""

    problems: list[str] = dataclasses.field(default_factory=list)
    statuses: dict[str, int] = dataclasses.field(default_factory=dict)
    lost: int = 0

    def assert_clean(self, logs: str = "") -> None:
        """Fail with every problem found (and the process logs, if given)."""
        if self.problems:
            pytest.fail(
                "after settling:\n- "
                + "\n- ".join(self.problems)
                + (f"\n\nprocess logs:\n{logs}" if logs else "")
            )


def active_count(node: Node) -> int:
    """How many executions are QUEUED, WAITING_FOR_OTHER_JOB or RUNNING."""
    active = [s.value for s in ACTIVE_STATUSES]
    with node.store.db.read() as conn:
        return int(
            conn.execute(
                sa.select(sa.func.count()).select_from(E).where(E.c.status.in_(active))
            ).scalar_one()
        )


def wait_until_settled(node: Node, timeout: float, logs: Callable[[], str] | None = None) -> None:
    """Poll (bounded) until no execution is active any more."""
    deadline = time.monotonic() + timeout
    while active_count(node):
        if time.monotonic() > deadline:
            with node.store.db.read() as conn:
                stuck = conn.execute(
                    sa.select(E.c.id, E.c.status, E.c.worker_id).where(
                        E.c.status.in_([s.value for s in ACTIVE_STATUSES])
                    )
                ).all()
            extra = logs() if logs is not None else ""
            raise AssertionError(f"still active after {timeout}s: {stuck}\n{extra}")
        time.sleep(0.2)


def settled_problems(
    node: Node,
    *,
    allowed_errors: tuple[str, ...] = (WORKER_LOST,),
    max_attempts: int = 1,
    handed_back: Mapping[int, int] | None = None,
) -> Report:
    """Check every execution, data row and data folder of a settled store.

    An execution may be claimed `max_attempts` times, plus once more for each
    time a worker handed it back at a graceful shutdown (`handed_back`).
    """
    handed_back = handed_back or {}
    report = Report()
    problems = report.problems
    with node.store.db.read() as conn:
        runs = {
            r.id: r
            for r in conn.execute(
                sa.select(E, t.files.c.path).join(t.files, t.files.c.id == E.c.file_id)
            ).all()
        }
        upstreams: dict[int, set[int]] = defaultdict(set)
        for edge in conn.execute(sa.select(t.execution_dependencies)).all():
            upstreams[edge.execution_id].add(edge.upstream_execution_id)
        data_rows = conn.execute(sa.select(t.data)).all()
    data_of: dict[int, list[Any]] = defaultdict(list)
    for row in data_rows:
        data_of[row.execution_id].append(row)

    for run in runs.values():
        status = JobStatus(run.status)
        report.statuses[status.value] = report.statuses.get(status.value, 0) + 1
        where = f"execution {run.id} ({run.path}, {status.value})"
        if not status.is_terminal:
            problems.append(f"{where} is not terminal")
            continue
        if run.attempts > max_attempts + handed_back.get(run.id, 0):
            problems.append(
                f"{where} was claimed {run.attempts} times, handed back "
                f"{handed_back.get(run.id, 0)} times"
            )
        if (run.attempts == 0) != (run.started_at is None):
            problems.append(f"{where}: attempts {run.attempts} but started_at {run.started_at}")
        if run.finished_at is None:
            problems.append(f"{where} has no finished_at")
        if status.is_success:
            if len(data_of[run.id]) != 1:
                problems.append(f"{where} has {len(data_of[run.id])} data rows")
        elif data_of[run.id]:
            problems.append(f"{where} has data rows although it did not succeed")
        if status is JobStatus.ERROR:
            message = run.error_message or ""
            if message == WORKER_LOST:
                report.lost += 1
            if not any(message.startswith(a) for a in allowed_errors):
                problems.append(f"{where} says {message!r}")
            if run.started_at is None:
                problems.append(f"{where} ended in ERROR without having started")
        if status is JobStatus.CANCELED:
            problems.extend(_canceled_problems(where, run, runs, upstreams))

    problems.extend(_ordering_problems(runs, upstreams))
    _check_folders(node, data_rows, report)
    return report


def _canceled_problems(
    where: str, run: Any, runs: dict[int, Any], upstreams: dict[int, set[int]]
) -> list[str]:
    found = []
    if run.started_at is not None:
        found.append(f"{where} was canceled after it had started")
    match = _CANCELED.fullmatch(run.error_message or "")
    if match is None:
        return [*found, f"{where} does not name its failed upstream: {run.error_message!r}"]
    upstream_id = int(match["id"])
    upstream = runs.get(upstream_id)
    if upstream_id not in upstreams[run.id] or upstream is None:
        found.append(f"{where} names execution {upstream_id}, which is not its upstream")
    elif (
        upstream.status != match["status"]
        or upstream.path != match["path"]
        or match["status"] not in ("ERROR", "CANCELED")
    ):
        found.append(
            f"{where} says {upstream_id} ended {match['status']}, "
            f"but it is {upstream.status} ({upstream.path})"
        )
    return found


def _ordering_problems(runs: dict[int, Any], upstreams: dict[int, set[int]]) -> list[str]:
    found = []
    by_config: dict[int, list[Any]] = defaultdict(list)
    for run in runs.values():
        if run.started_at is not None:
            by_config[run.job_configuration_id].append(run)
    for config_runs in by_config.values():
        config_runs.sort(key=lambda r: r.started_at)
        for first, then in itertools.pairwise(config_runs):
            end = first.finished_at
            if end is None or end > then.started_at:
                found.append(
                    f"executions {first.id} and {then.id} of one configuration overlap: "
                    f"{first.started_at}..{end} and {then.started_at}.."
                )
    for execution_id, ups in upstreams.items():
        run = runs[execution_id]
        if run.started_at is None:
            continue
        for upstream_id in ups:
            up = runs[upstream_id]
            if not JobStatus(up.status).is_success or (
                up.finished_at is None or up.finished_at > run.started_at
            ):
                found.append(
                    f"plan member {execution_id} started at {run.started_at} before its "
                    f"upstream {upstream_id} succeeded ({up.status}, {up.finished_at})"
                )
    return found


def _check_folders(node: Node, data_rows: list[Any], report: Report) -> None:
    data_root = Path(node.settings.resolved_data_root)
    named = set()
    for row in data_rows:
        where = f"data {row.id} of execution {row.execution_id}"
        location = row.location
        if location:
            named.add(os.path.realpath(location))
        if row.deleted:
            if not location and (data_root / str(row.id)).exists():
                report.problems.append(f"{where} was removed but its folder is still there")
            continue
        if not location or not os.path.isdir(location):
            report.problems.append(f"{where} is visible but its folder {location!r} is missing")
            continue
        for sheet in row.sheets:
            if not os.path.isfile(os.path.join(location, f"{sheet}.parquet")):
                report.problems.append(f"{where} is visible but misses {sheet}.parquet")
    for entry in sorted(os.listdir(data_root)):
        path = os.path.realpath(data_root / entry)
        if entry == ".staging" or path in named:
            continue
        report.problems.append(f"{data_root / entry} is in the data root but no data row names it")
    staging = Path(node.settings.staging_root)
    leftovers = sorted(os.listdir(staging)) if staging.is_dir() else []
    # An engine's idle window (empty folders, kept between runs) is no leftover.
    leftovers = [name for name in leftovers if not is_idle_window(str(staging / name))]
    if leftovers:
        report.problems.append(f"staging leftovers of ended executions: {leftovers}")
