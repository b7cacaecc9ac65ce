"""Cron schedules in the server's time zone."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from croniter import croniter


def is_valid_cron(expression: str) -> bool:
    """Whether a cron expression can be scheduled."""
    return bool(croniter.is_valid(expression))


def next_fire_time(expression: str, after_utc: dt.datetime, zone: str | None) -> dt.datetime:
    """The first slot of `expression` strictly after `after_utc`, as a naive UTC time.

    The expression is read in the server's zone, so "0 6 * * *" means six in
    the morning there, across daylight saving changes.
    """
    tz = ZoneInfo(zone) if zone else None
    start = after_utc.replace(tzinfo=dt.UTC)
    local = start.astimezone(tz) if tz else start.astimezone()
    following: dt.datetime = croniter(expression, local).get_next(dt.datetime)
    return following.astimezone(dt.UTC).replace(tzinfo=None)
