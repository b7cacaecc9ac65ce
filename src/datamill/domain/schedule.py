"""Cron schedules in the server's time zone.

A cron is user input: whatever it says, computing its next slot must neither
raise nor search for long. So only the standard five fields (or a macro such
as `@daily`) are accepted, and a schedule must have a slot within
`SEARCH_YEARS`; `next_fire_time` answers None, never an exception, when there
is none, and the scheduler then disables that one schedule.
"""

from __future__ import annotations

import datetime as dt
import re
from zoneinfo import ZoneInfo

from croniter import croniter

MAX_CRON_LENGTH = 128  # the width of the stored column
SEARCH_YEARS = 5
# @reboot is left out: a job server has no boot of its own to run at.
MACROS = frozenset(
    {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}
)
# Digits, letters (month and day names, L, W), and `* , - / #`: anything else
# (Unicode digits, control characters) is refused before croniter reads it.
_ALLOWED = re.compile(r"[0-9A-Za-z*,\-/# ]+")


def cron_problem(expression: str) -> str | None:
    """Why `expression` cannot be a schedule, or None when it can."""
    problem = _form_problem(expression)
    if problem is None and _next(expression, dt.datetime.now(dt.UTC)) is None:
        problem = f"{expression!r} has no date within {SEARCH_YEARS} years"
    return problem


def _form_problem(expression: str) -> str | None:
    if len(expression) > MAX_CRON_LENGTH:
        return f"a cron expression has at most {MAX_CRON_LENGTH} characters"
    text = expression.strip()
    if text.lower() in MACROS:
        return None
    if text.startswith("@"):
        return f"{text!r} is not supported; use five fields or one of {', '.join(sorted(MACROS))}"
    if not _ALLOWED.fullmatch(text):
        return "a cron expression holds only digits, names, spaces and * , - / # L W"
    fields = text.split()
    if len(fields) != 5:
        # croniter reads a sixth field as seconds and a seventh as the year;
        # schedules are checked every heartbeat (seconds) and a year makes a
        # schedule that ends, so only the standard five are accepted.
        return (
            f"a cron expression has exactly 5 fields (minute hour day month weekday),"
            f" not {len(fields)}"
        )
    try:
        valid = bool(croniter.is_valid(text))
    except Exception:  # croniter raises odd errors for odd text
        valid = False
    if not valid:
        return f"{expression!r} is not a valid cron expression"
    return None


def is_valid_cron(expression: str) -> bool:
    """Whether a cron expression can be scheduled."""
    return cron_problem(expression) is None


def next_fire_time(expression: str, after_utc: dt.datetime, zone: str | None) -> dt.datetime | None:
    """The first slot of `expression` strictly after `after_utc`, as a naive UTC time.

    The expression is read in the server's zone, so "0 6 * * *" means six in
    the morning there, across daylight saving changes. None when there is no
    slot within SEARCH_YEARS, or the expression cannot be read at all.
    """
    tz = ZoneInfo(zone) if zone else None
    start = after_utc.replace(tzinfo=dt.UTC)
    local = start.astimezone(tz) if tz else start.astimezone()
    following = _next(expression, local)
    if following is None:
        return None
    return following.astimezone(dt.UTC).replace(tzinfo=None)


def _next(expression: str, start: dt.datetime) -> dt.datetime | None:
    # A cron stored before these checks existed (a year field, say) is
    # judged by them too: it has no next date, so its schedule is disabled.
    if _form_problem(expression) is not None:
        return None
    expression = expression.strip()
    if expression.lower() in MACROS:
        expression = expression.lower()
    try:
        iterator = croniter(expression, start, max_years_between_matches=SEARCH_YEARS)
        following: dt.datetime = iterator.get_next(dt.datetime)
    except Exception:
        # Stored before these checks existed (a year field, say), or an
        # expression croniter cannot step through: no next date.
        return None
    if following.year > start.year + SEARCH_YEARS:
        return None
    return following
