from __future__ import annotations

import pytest

from recoverctl import cron
from recoverctl.config import Schedule, parse_config
from recoverctl.errors import ConfigError, UsageError
from recoverctl.scheduler.install import crontab_lines, merge_crontab, on_calendar

T = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC


def test_previous_counts_an_occurrence_exactly_at_now_as_due() -> None:
    assert cron.previous("* * * * * *", "UTC", T) == T
    assert cron.previous("* * * * * */5", "UTC", T + 4.9) == T
    assert cron.previous("* * * * * */5", "UTC", T + 5) == T + 5
    assert cron.previous("0 * * * *", "UTC", T) == T - 13 * 60 - 20


def test_time_zone_shifts_occurrences() -> None:
    # 02:00 in Berlin (UTC+1 in November) is 01:00 UTC.
    due = cron.following("0 2 * * *", "Europe/Berlin", T)
    assert due == cron.following("0 1 * * *", "UTC", T)


def test_between_lists_missed_occurrences_oldest_first() -> None:
    assert cron.between("* * * * * */10", "UTC", T, T + 35) == [T + 10, T + 20, T + 30]


@pytest.mark.parametrize(
    ("cron_expr", "tz", "expected"),
    [
        ("61 * * * *", "UTC", "invalid cron expression '61 * * * *'"),
        ("* * *", "UTC", "expected 5 fields"),
        ("0 * * * *", "Mars/Olympus", "unknown time zone 'Mars/Olympus'"),
    ],
)
def test_bad_schedule_is_a_config_error_naming_it(cron_expr: str, tz: str, expected: str) -> None:
    data = {"schedules": [{"name": "nightly", "cron": cron_expr, "timezone": tz, "job": "catalog info"}]}
    with pytest.raises(ConfigError) as e:
        parse_config(data, env={})
    assert "schedule 'nightly'" in e.value.message
    assert expected in e.value.message


def test_route_to_unknown_channel_and_bad_phone_number_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="unknown channel 'pager'"):
        parse_config({"notifications": {"routes": {"critical": ["pager"]}}}, env={})
    sms = {"type": "sms", "account_sid": "AC1", "auth_token": "t", "from": "+15550001111", "to": ["0170 123"]}
    with pytest.raises(ConfigError, match=r"not an E\.164 phone number"):
        parse_config({"notifications": {"channels": {"sms": sms}}}, env={})


def _schedule(expr: str, **kw: object) -> Schedule:
    return Schedule.model_validate({"name": "s", "cron": expr, "job": "catalog info", **kw})


@pytest.mark.parametrize(
    ("expr", "tz", "calendar"),
    [
        ("0 * * * *", "UTC", "*-*-* *:0:0 UTC"),
        ("15 2 * * *", "Europe/Berlin", "*-*-* 2:15:0 Europe/Berlin"),
        ("*/15 8-18 * * 1-5", "UTC", "Mon..Fri *-*-* 8..18:0,15,30,45:0 UTC"),
        ("0 6 * * 0", "UTC", "Sun *-*-* 6:0:0 UTC"),
        ("0 0 1 jan,jul *", "UTC", "*-1,7-1 0:0:0 UTC"),
        ("* * * * * */20", "UTC", "*-*-* *:*:0,20,40 UTC"),
    ],
)
def test_cron_translates_to_systemd_calendar(expr: str, tz: str, calendar: str) -> None:
    assert on_calendar(_schedule(expr, timezone=tz)) == calendar


def test_cron_cannot_express_seconds_or_day_or_weekday() -> None:
    cfg = parse_config(
        {"schedules": [{"name": "fast", "cron": "* * * * * */5", "job": "catalog info"}]}, env={}
    )
    with pytest.raises(UsageError, match="second granularity"):
        crontab_lines(cfg)
    with pytest.raises(UsageError, match="OR weekday"):
        on_calendar(_schedule("0 0 1 * 1"))


def test_crontab_block_replaces_the_previous_one_and_keeps_other_lines() -> None:
    cfg = parse_config(
        {"schedules": [{"name": "d", "cron": "0 3 * * *", "job": "verify --read-data-subset 5%"}]}, env={}
    )
    block = crontab_lines(cfg)
    assert "verify --read-data-subset 5\\%" not in block  # the job itself is not on the line
    assert "run-job d" in block
    merged = merge_crontab("MAILTO=ops\n1 1 * * * other\n" + block, block)
    assert merged.count("# BEGIN recoverctl") == 1
    assert merged.startswith("MAILTO=ops\n1 1 * * * other\n")
