"""How often the schedules run a command: the oldest its last run may be before a run was missed.

`/metrics` exports it for `verify` so a Prometheus rule can compare the last verify's age with
the schedule instead of with a fixed number that goes wrong when the schedule changes.
"""

from __future__ import annotations

import shlex
from itertools import pairwise

from recoverctl.config import Config, Schedule
from recoverctl.cron import following

# Occurrences looked at per schedule: enough to see a whole week of a daily or hourly cron
# (weekday-only schedules have their longest gap over the weekend) at a few milliseconds' cost.
OCCURRENCES = 200


def runs_command(schedule: Schedule, command: str) -> bool:
    """Given a schedule, return True when it is enabled and its job runs `command` (the first
    word of its job line that is not an option)."""
    if not schedule.enabled:
        return False
    try:
        words = shlex.split(schedule.job)
    except ValueError:
        return False
    first = next((w for w in words if not w.startswith("-")), None)
    return first == command


def longest_gap(schedules: list[Schedule], now: float) -> float | None:
    """Given schedules, return the longest time between two consecutive occurrences of any of
    them over their next OCCURRENCES runs; None when fewer than two occurrences are known."""
    per_schedule: list[list[float]] = []
    for s in schedules:
        times: list[float] = []
        at = now
        for _ in range(OCCURRENCES):
            at = following(s.cron, s.timezone, at)
            times.append(at)
        per_schedule.append(times)
    if not per_schedule:
        return None
    # Beyond the soonest schedule's last computed occurrence the merged list has holes.
    horizon = min(times[-1] for times in per_schedule)
    merged = sorted({t for times in per_schedule for t in times if t <= horizon})
    if len(merged) < 2:
        return None
    return max(b - a for a, b in pairwise(merged))


def max_age_of_last(cfg: Config, command: str, now: float) -> float | None:
    """Given a command name (e.g. 'verify'), return the oldest the last successful run of it may
    be while the schedules keep up: the longest gap between their occurrences plus the longest
    jitter and timeout (a run starts up to `jitter` late and may take up to `timeout`); None
    when no enabled schedule runs it."""
    schedules = [s for s in cfg.schedules if runs_command(s, command)]
    gap = longest_gap(schedules, now)
    if gap is None:
        return None
    return gap + max(s.jitter for s in schedules) + max(s.timeout for s in schedules)
