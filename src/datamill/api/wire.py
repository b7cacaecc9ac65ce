"""Rendering for the wire: pretty JSON, Datameer timestamps, failure bodies."""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any
from zoneinfo import ZoneInfo

from starlette.responses import Response

from datamill.domain.status import JobStatus

# Datameer's v1 API spelled this one status in mixed case, and monitoring
# plugins match that exact string on the older /rest job routes (spec §5).
_V1_SPELLING = {JobStatus.COMPLETED_WITH_WARNINGS: "COMPLETED_WITH_Warnings"}


class PrettyJSONResponse(Response):
    """JSON with a 2-space indent, one member per line, as shell clients grep it."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        """Serialise the content."""
        return json.dumps(content, indent=2, ensure_ascii=False).encode("utf-8")


def failure(status_code: int, reason: str, headers: dict[str, str] | None = None) -> Response:
    """The failure body every error uses."""
    return PrettyJSONResponse(
        {"status": "failure", "reason": reason}, status_code=status_code, headers=headers
    )


class Clock:
    """Formats stored UTC times in the server's zone."""

    def __init__(self, zone: str | None) -> None:
        self._zone = ZoneInfo(zone) if zone else None

    def local(self, value: dt.datetime) -> dt.datetime:
        """A stored naive-UTC time in the server's zone."""
        aware = value.replace(tzinfo=dt.UTC)
        return aware.astimezone(self._zone) if self._zone else aware.astimezone()

    def datameer(self, value: dt.datetime | None) -> str | None:
        """'Sep 28, 2018 6:44:56 PM' (MMM d, yyyy h:mm:ss a), or None."""
        if value is None:
            return None
        local = self.local(value)
        hour = local.hour % 12 or 12
        return (
            f"{local.strftime('%b')} {local.day}, {local.year} "
            f"{hour}:{local.minute:02d}:{local.second:02d} {'AM' if local.hour < 12 else 'PM'}"
        )


def epoch_millis(value: dt.datetime | None) -> int | None:
    """Epoch milliseconds of a stored naive-UTC time, or None."""
    if value is None:
        return None
    return int(value.replace(tzinfo=dt.UTC).timestamp() * 1000)


def v1_status(status: JobStatus) -> str:
    """A status as the older /rest job routes spell it (COMPLETED_WITH_Warnings)."""
    return _V1_SPELLING.get(status, status.value)


_SLASHES = re.compile(r"/{2,}")


def tolerant_path(path: str) -> str:
    """The path with doubled slashes folded and a trailing one dropped, as Datameer accepts."""
    path = _SLASHES.sub("/", path)
    if len(path) > 1:
        path = path.rstrip("/") or "/"
    return path
