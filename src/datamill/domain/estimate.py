"""Estimating the remaining time of a running execution."""

from __future__ import annotations


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
