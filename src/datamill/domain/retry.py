"""Retry policies: how often a run is started again after its worker died or a passing failure.

Pure: the definition models bound the numbers a job may set, the worker and
the store ask `policy_of` what a run's job allows.
"""

from __future__ import annotations

import dataclasses
from typing import Any

# Bounds on what a job may set (docs/jobs.md, "Retries"): more than ten
# attempts of one run hide a broken job; a day is longer than any sensible
# wait for a machine or a database to come back.
MAX_RETRIES = 10
MAX_RETRY_DELAY_SECONDS = 86_400


@dataclasses.dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How many times a run may be started again, and how long each retry waits first."""

    retries: int
    delay_seconds: int

    def allows_another(self, attempts: int) -> bool:
        """Whether a run that was claimed `attempts` times may be claimed once more."""
        return attempts <= self.retries


def policy_of(definition: dict[str, Any], default: RetryPolicy) -> RetryPolicy:
    """The retry policy a stored definition sets, members it leaves out taken from `default`.

    Read raw, as housekeeping reads minKeepCount: a value stored before a bound
    existed, or beyond it, is clamped rather than failing the caller.
    """
    return RetryPolicy(
        retries=_bounded(definition.get("retries"), default.retries, MAX_RETRIES),
        delay_seconds=_bounded(
            definition.get("retryDelay"), default.delay_seconds, MAX_RETRY_DELAY_SECONDS
        ),
    )


def _bounded(raw: Any, default: int, most: int) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int):
        return default
    return max(0, min(most, raw))


def attempts_text(attempts: int) -> str:
    """'after 3 attempts' / 'after 1 attempt': how a final failure names the attempts made."""
    return f"after {attempts} attempt{'s' if attempts != 1 else ''}"
