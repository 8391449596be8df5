"""Cron expressions in an explicit time zone: validation and occurrences.

Five fields are standard cron; a sixth field is seconds (croniter's convention), which lets tests
and very frequent checks run at second granularity.
"""

from __future__ import annotations

import math
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter


def check_expression(expr: str) -> str | None:
    """Given a cron expression, return None when valid, else a sentence saying what is wrong."""
    fields = expr.split()
    if len(fields) not in (5, 6):
        return (
            f"invalid cron expression '{expr}': expected 5 fields (minute hour day month weekday) "
            f"or 6 (plus seconds), got {len(fields)}"
        )
    try:
        croniter(expr)
    except (ValueError, KeyError) as e:
        return f"invalid cron expression '{expr}': {e}"
    return None


def check_timezone(name: str) -> str | None:
    """Given an IANA time zone name, return None when known, else a sentence saying so."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return f"unknown time zone '{name}' (use an IANA name such as UTC or Europe/Berlin)"
    return None


def previous(expr: str, tz: str, at: float) -> float:
    """Return the latest occurrence at or before `at` (Unix seconds)."""
    # Occurrences fall on whole seconds and get_prev is strictly-before: start one second later.
    start = datetime.fromtimestamp(math.floor(at) + 1, ZoneInfo(tz))
    return float(croniter(expr, start).get_prev(float))


def following(expr: str, tz: str, at: float) -> float:
    """Return the first occurrence strictly after `at` (Unix seconds)."""
    return float(croniter(expr, datetime.fromtimestamp(at, ZoneInfo(tz))).get_next(float))


def between(expr: str, tz: str, after: float, until: float, limit: int = 10_000) -> list[float]:
    """Return the occurrences in (after, until], oldest first, at most `limit` of them."""
    out: list[float] = []
    it = croniter(expr, datetime.fromtimestamp(after, ZoneInfo(tz)))
    while len(out) < limit:
        t = float(it.get_next(float))
        if t > until:
            break
        out.append(t)
    return out
