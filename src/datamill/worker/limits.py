"""How long a run may take and how much it may stage: the limits the worker enforces."""

from __future__ import annotations

import contextlib
import dataclasses
import os
from typing import Any

import pydantic

from datamill.domain.definitions import RunLimits
from datamill.engine.objects import COPIES
from datamill.engine.windows import run_output_folders
from datamill.settings import Settings

# The engine's spill folder when the operator chose none: spill is the
# engine's to bound (its memory limit), not the run's output.
_SPILL_FOLDER = ".duckdb_tmp"


@dataclasses.dataclass(frozen=True, slots=True)
class EffectiveLimits:
    """The bounds one run is held to."""

    time_seconds: int
    output_bytes: int

    def time_exceeded(self) -> str:
        """The failure reason of a run stopped by its time limit."""
        return f"ran longer than its time limit of {self.time_seconds} s"

    def output_exceeded(self, staged: int) -> str:
        """The failure reason of a run stopped by its output limit."""
        return (
            f"wrote more than its output limit of {self.output_bytes} bytes"
            f" ({staged} bytes staged); nothing was published"
        )


# Made once (the model is frozen): most jobs set no limits of their own, and
# building an empty model per run showed in the worker's profile.
_NO_OWN_LIMITS = RunLimits()


def effective_limits(definition: dict[str, Any], settings: Settings) -> EffectiveLimits:
    """The job's own limits, else the defaults, never above the operator's maxima.

    The maxima apply again here because they may have been lowered after
    the job was saved.
    """
    own = _NO_OWN_LIMITS
    raw = definition.get("limits")
    if isinstance(raw, dict):
        # Refused when saved; should a stored one not validate, the defaults hold.
        with contextlib.suppress(pydantic.ValidationError):
            own = RunLimits.model_validate(raw)
    time_seconds = own.time_seconds or settings.run_time_limit_seconds
    output_bytes = own.output_bytes or settings.run_output_limit_bytes
    return EffectiveLimits(
        time_seconds=min(time_seconds, settings.run_time_limit_max_seconds),
        output_bytes=min(output_bytes, settings.run_output_limit_max_bytes),
    )


def run_bytes(staging: str, pid: int) -> int:
    """Bytes a running run has written so far, spill left out.

    Imports and exports write into the run's staging folder; a workbook
    writes into the output folder of its child's window (engine/workbooks.py)
    and moves the kept sheets to staging only at the end, so both count.
    The window's links to the run's inputs lie beside that output folder,
    not in it, and are not counted.
    """
    # A child runs one run at a time: what its window holds is this run's.
    windows = run_output_folders(os.path.dirname(staging), pid)
    return staged_bytes(staging) + sum(staged_bytes(folder) for folder in windows)


def staged_bytes(folder: str) -> int:
    """Bytes of the files below a run's staging folder, spill left out."""
    total = 0
    pending = [folder]
    while pending:
        try:
            entries = os.scandir(pending.pop())
        except OSError:  # removed meanwhile (the engine drops its work folder)
            continue
        with entries:
            for entry in entries:
                try:
                    if entry.is_dir(follow_symlinks=False):
                        # Spill, and copies of object-store sources (inputs, not output).
                        if entry.name not in (_SPILL_FOLDER, COPIES):
                            pending.append(entry.path)
                    else:
                        total += entry.stat(follow_symlinks=False).st_size
                except OSError:
                    continue
    return total
