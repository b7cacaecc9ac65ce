"""Estimating the remaining time of a running execution, and when a queued one starts."""

from __future__ import annotations

import bisect
import dataclasses
import heapq


def remaining_seconds(
    elapsed: float, progress: float | None, earlier_mean: float | None
) -> float | None:
    """Seconds a run probably still needs, from its progress and earlier runs' durations.

    Early on, progress says little (a run may spend its first seconds planning),
    so earlier runs weigh most; as progress grows, the run's own pace takes over.
    """
    by_history = max(earlier_mean - elapsed, 0.0) if earlier_mean is not None else None
    by_pace = None
    if progress is not None and progress > 0.0:
        by_pace = elapsed * (1.0 - progress) / progress
    if by_pace is None:
        return by_history
    if by_history is None:
        return by_pace
    weight = min(max(progress or 0.0, 0.0), 1.0)
    return weight * by_pace + (1.0 - weight) * by_history


def format_duration(seconds: float) -> str:
    """Datameer's short duration: '11s', '3m 20s', '1h 5m 0s'."""
    total = max(round(seconds), 0)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes}m {secs}s"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


# ---------------------------------------------------------------- queue position


@dataclasses.dataclass(frozen=True, slots=True)
class QueueShape:
    """The slots runs start in: per worker, across all workers, and how they are shared."""

    slots_per_worker: int = 2
    max_running: int = 0  # 0: no global limit
    fair_shares: bool = True

    def slots(self, workers: int) -> int:
        """Runs that may run at once with `workers` workers alive."""
        total = workers * self.slots_per_worker
        return min(total, self.max_running) if self.max_running else total


@dataclasses.dataclass(frozen=True, slots=True)
class Busy:
    """A running run: its job, its user and the seconds it probably still needs."""

    id: int
    config_id: int
    user: str
    remaining: float | None


@dataclasses.dataclass(frozen=True, slots=True)
class Pending:
    """A run not started yet: QUEUED, or WAITING on the runs `waits_on` (ids)."""

    id: int
    config_id: int
    user: str
    duration: float | None
    waits_on: tuple[int, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class Spot:
    """Where a pending run stands: 1 = the next to start; seconds until it probably does."""

    position: int
    starts_in: float | None


def expected_starts(
    running: list[Busy], pending: list[Pending], slots: int, fair_shares: bool = True
) -> dict[int, Spot]:
    """Each pending run's place in the start order and its expected start, by simulation.

    Replays the worker's claim rule on the estimates: the oldest startable run
    (no run of its job running, none older of its job waiting) takes a free
    slot; with fair shares a user holding fewer slots goes first; a WAITING
    run joins the queue when its last upstream ends. Durations are the jobs'
    recent means; a job that never ran counts as the mean of the others (0 if
    none is known), a running run past its estimate as ending now. With no
    slot (no worker alive) the order is still given, the times are not.
    """
    known = [p.duration for p in pending if p.duration is not None]
    fallback = sum(known) / len(known) if known else 0.0
    sim = _Simulation(max(slots, 1), fair_shares)
    for run in running:
        sim.occupy(run.id, run.config_id, run.user, max(run.remaining or 0.0, 0.0))
    order = sim.run(pending, fallback)
    return {
        run_id: Spot(index + 1, starts_at if slots > 0 else None)
        for index, (run_id, starts_at) in enumerate(order)
    }


class _Simulation:
    """Slots over simulated time (seconds from now), as the worker's claims fill them."""

    def __init__(self, slots: int, fair_shares: bool) -> None:
        self.slots = slots
        self.fair_shares = fair_shares
        self.now = 0.0
        self.ends: list[tuple[float, int, int, str]] = []  # heap: end, run, job, user
        self.busy_jobs: set[int] = set()
        self.held: dict[str, int] = {}

    def occupy(self, run_id: int, config_id: int, user: str, seconds: float) -> None:
        heapq.heappush(self.ends, (self.now + seconds, run_id, config_id, user))
        self.busy_jobs.add(config_id)
        self.held[user] = self.held.get(user, 0) + 1

    def run(self, pending: list[Pending], fallback: float) -> list[tuple[int, float]]:
        """(run id, start) in the order the runs start."""
        in_snapshot = {p.id for p in pending} | {run_id for _, run_id, _, _ in self.ends}
        # Upstreams not in the snapshot have ended already.
        blocked = {p.id: {u for u in p.waits_on if u in in_snapshot} for p in pending}
        dependents: dict[int, list[Pending]] = {}
        for run in pending:
            for upstream in blocked[run.id]:
                dependents.setdefault(upstream, []).append(run)
        queued = sorted((p for p in pending if not blocked[p.id]), key=lambda p: p.id)
        left = len(pending)
        order: list[tuple[int, float]] = []
        while left:
            chosen = self._claim(queued) if len(self.ends) < self.slots else None
            if chosen is not None:
                queued.remove(chosen)
                left -= 1
                order.append((chosen.id, self.now))
                duration = chosen.duration if chosen.duration is not None else fallback
                self.occupy(chosen.id, chosen.config_id, chosen.user, duration)
                continue
            if not self.ends:
                break  # cannot happen: every upstream of a pending run runs or is pending
            ended = self._end_next()
            for run in dependents.get(ended, ()):
                blocked[run.id].discard(ended)
                if not blocked[run.id]:
                    bisect.insort(queued, run, key=lambda p: p.id)
        return order

    def _end_next(self) -> int:
        end, run_id, config_id, user = heapq.heappop(self.ends)
        self.now = max(self.now, end)
        self.busy_jobs.discard(config_id)
        self.held[user] -= 1
        if not self.held[user]:
            del self.held[user]
        return run_id

    def _claim(self, queued: list[Pending]) -> Pending | None:
        """store/queue.py's claim: the oldest startable run, or a fairer user's."""
        startable: list[Pending] = []
        seen_jobs: set[int] = set()
        for run in queued:  # oldest first
            if run.config_id not in seen_jobs and run.config_id not in self.busy_jobs:
                startable.append(run)
            seen_jobs.add(run.config_id)
        if not startable:
            return None
        oldest = startable[0]
        mine = self.held.get(oldest.user, 0)
        if not self.fair_shares or not mine or all(r.user == oldest.user for r in queued):
            return oldest
        for run in startable:
            if run.user not in self.held:
                return run
        for level in sorted({n for n in self.held.values() if n < mine}):
            for run in startable:
                if self.held.get(run.user) == level:
                    return run
        return oldest
