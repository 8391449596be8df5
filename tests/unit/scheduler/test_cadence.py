"""The verify schedule's allowance: the longest gap between occurrences plus jitter and timeout."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from recoverctl.config import parse_config
from recoverctl.scheduler.cadence import longest_gap, max_age_of_last, runs_command

# A Wednesday.
NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC).timestamp()
HOUR = 3600.0


def _cfg(*schedules: dict[str, Any]) -> Any:
    return parse_config({"schedules": list(schedules)}, env={})


def test_weekday_schedule_has_its_longest_gap_over_the_weekend() -> None:
    cfg = _cfg({"name": "v", "cron": "0 3 * * 1-5", "job": "verify", "timezone": "Europe/Berlin"})
    assert longest_gap(cfg.schedules, NOW) == 72 * HOUR


def test_two_verify_schedules_merge_and_other_jobs_do_not_count() -> None:
    cfg = _cfg(
        {"name": "nightly", "cron": "0 3 * * *", "job": "verify --read-data-subset 5%", "timeout": "1h"},
        {"name": "noon", "cron": "0 15 * * *", "job": "--verbose verify", "jitter": "5m", "timeout": "30m"},
        {"name": "hourly-backup", "cron": "0 * * * *", "job": "backup files --source docs"},
        {"name": "off", "cron": "* * * * *", "job": "verify", "enabled": False, "timeout": "9h"},
    )
    assert [s.name for s in cfg.schedules if runs_command(s, "verify")] == ["nightly", "noon"]
    # 03:00 → 15:00 → 03:00: twelve hours apart at most, plus 5 min jitter and the 1 h timeout.
    assert max_age_of_last(cfg, "verify", NOW) == 12 * HOUR + 300 + HOUR


def test_no_verify_schedule_gives_no_allowance() -> None:
    cfg = _cfg({"name": "b", "cron": "0 * * * *", "job": "backup files --source docs"})
    assert max_age_of_last(cfg, "verify", NOW) is None
    assert longest_gap([], NOW) is None
