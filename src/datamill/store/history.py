"""Dropping old execution history."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from datamill.domain.status import TERMINAL_STATUSES
from datamill.store import tables as t
from datamill.store.runlog import delete_logs

E, D, G = t.executions, t.data, t.execution_gaps
# pg_advisory_xact_lock(GAPS_LOCK, 0): one writer of execution_gaps at a time.
GAPS_LOCK = 7374


def drop_history_before(conn: Connection, cutoff: dt.datetime) -> int:
    """Delete ended executions that finished before `cutoff`; returns how many.

    The newest execution of each job stays, so its status never falls back to
    "never ran", and so does every execution whose data files still exist.
    The run numbers of the deleted executions are recorded in execution_gaps,
    in the same transaction, so history pages stay exact.
    """
    if conn.dialect.name == "postgresql":
        # Two housekeepers must not merge gaps of one job at once. Taken before
        # any row lock, so it cannot be part of a deadlock.
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:space, 0)"), {"space": GAPS_LOCK})
    newest = sa.select(sa.func.max(E.c.id)).group_by(E.c.job_configuration_id)
    # Data whose files are still there (visible, or marked but not yet removed)
    # keeps its execution; rows of data already removed go with it.
    stored = sa.select(D.c.execution_id).where(D.c.location != "")
    doomed = [
        row.id
        for row in conn.execute(
            sa.select(E.c.id).where(
                E.c.status.in_([s.value for s in TERMINAL_STATUSES]),
                E.c.finished_at < cutoff,
                E.c.id.not_in(newest),
                E.c.id.not_in(stored),
            )
        )
    ]
    deleted_runs: dict[int, list[int]] = defaultdict(list)
    for start in range(0, len(doomed), 500):
        chunk = doomed[start : start + 500]
        dep = t.execution_dependencies
        conn.execute(
            sa.delete(dep).where(
                sa.or_(dep.c.execution_id.in_(chunk), dep.c.upstream_execution_id.in_(chunk))
            )
        )
        removed = sa.select(D.c.id).where(D.c.execution_id.in_(chunk))
        inputs = t.execution_inputs
        conn.execute(
            sa.delete(inputs).where(
                sa.or_(inputs.c.execution_id.in_(chunk), inputs.c.data_id.in_(removed))
            )
        )
        conn.execute(sa.delete(D).where(D.c.execution_id.in_(chunk)))
        delete_logs(conn, chunk)
        # Only the rows this statement really deleted count (on PostgreSQL a
        # concurrent job deletion may have taken some first).
        gone = conn.execute(
            sa.delete(E)
            .where(E.c.id.in_(chunk))
            .returning(E.c.job_configuration_id, E.c.run_number)
        )
        for config_id, run_number in gone:
            deleted_runs[config_id].append(run_number)
    for config_id in sorted(deleted_runs):
        record_gaps(conn, config_id, deleted_runs[config_id])
    return len(doomed)


def _ranges(numbers: list[int]) -> list[tuple[int, int]]:
    """Distinct numbers as sorted maximal ranges: [7, 1, 3, 2] -> [(1, 3), (7, 7)]."""
    ranges: list[tuple[int, int]] = []
    numbers = sorted(numbers)
    first = previous = numbers[0]
    for number in numbers[1:]:
        if number != previous + 1:
            ranges.append((first, previous))
            first = number
        previous = number
    ranges.append((first, previous))
    return ranges


def _merged(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Ranges [first, last] merged where they touch or overlap, sorted."""
    merged: list[tuple[int, int]] = []
    for first, last in sorted(ranges):
        if merged and first <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], last))
        else:
            merged.append((first, last))
    return merged


def record_gaps(conn: Connection, config_id: int, run_numbers: list[int]) -> None:
    """Add just-deleted runs of one configuration to its gaps.

    The gaps that touch the new ones or lie among them are merged with them
    and rewritten, kept_before counted afresh from the gap below; each gap
    further up only has its kept_before lowered by the number of runs deleted.
    Housekeeping mostly deletes the oldest runs, so this usually rewrites one
    row and moves none.
    """
    if not run_numbers:
        return
    new = _ranges(run_numbers)
    low, high = new[0][0], new[-1][1]
    mine = G.c.job_configuration_id == config_id
    below = conn.execute(
        sa.select(G.c.first_run, G.c.last_run, G.c.kept_before)
        .where(mine, G.c.first_run < low)
        .order_by(G.c.first_run.desc())
        .limit(1)
    ).first()
    window = [
        (row.first_run, row.last_run)
        for row in conn.execute(
            sa.select(G.c.first_run, G.c.last_run).where(
                mine, G.c.first_run >= low, G.c.first_run <= high + 1
            )
        )
    ]
    rewrite_from = low
    if below is not None and below.last_run == low - 1:
        # It ends just under the lowest new run: merged and rewritten too.
        window.append((below.first_run, below.last_run))
        rewrite_from = below.first_run
        deleted_below = below.first_run - 1 - below.kept_before
    elif below is not None:
        deleted_below = below.last_run - below.kept_before
    else:
        deleted_below = 0
    conn.execute(
        sa.update(G)
        .where(mine, G.c.first_run > high + 1)
        .values(kept_before=G.c.kept_before - len(run_numbers))
    )
    if window:
        conn.execute(
            sa.delete(G).where(mine, G.c.first_run >= rewrite_from, G.c.first_run <= high + 1)
        )
    rows = []
    for first, last in _merged([*window, *new]):
        rows.append(
            {
                "job_configuration_id": config_id,
                "first_run": first,
                "last_run": last,
                "kept_before": first - 1 - deleted_below,
            }
        )
        deleted_below += last - first + 1
    conn.execute(sa.insert(G), rows)
