"""Escalation levels in force, which notifications are due when, acknowledgement tokens, and the
`escalation:` section's validation."""

from __future__ import annotations

from typing import Any

import pytest

from recoverctl.config import parse_config
from recoverctl.errors import ConfigError
from recoverctl.incidents.ack_links import ack_key, ack_link, make_token, token_problem
from recoverctl.incidents.policy import Level, due_steps, levels

CHANNELS: dict[str, Any] = {
    "sms": {
        "type": "sms",
        "account_sid": "AC1",
        "auth_token": "t",
        "from": "+15550000000",
        "to": ["+15550000001"],
    },
    "slack-alerts": {"type": "slack", "webhook_url": "http://127.0.0.1:9/a"},
    "slack-monitoring": {"type": "slack", "webhook_url": "http://127.0.0.1:9/m"},
    "managers": {"type": "email", "host": "127.0.0.1", "from": "r@x.test", "to": ["boss@x.test"]},
}


def _steps(in_force: list[Level], at: float) -> list[tuple[int, int]]:
    return [(s.level, s.repeat) for s in due_steps(in_force, 1000.0, 1000.0 + at)]


def test_issue_example_levels_and_repeats_fall_due_in_order() -> None:
    in_force = [Level(1, 0.0, ["a"]), Level(2, 5.0, ["b"], repeat=10.0)]
    assert _steps(in_force, 0) == [(1, 0)]
    assert _steps(in_force, 4.9) == [(1, 0)]
    assert _steps(in_force, 5.0) == [(1, 0), (2, 0)]
    assert _steps(in_force, 14.9) == [(1, 0), (2, 0)]
    assert _steps(in_force, 15.0) == [(1, 0), (2, 0), (2, 1)]
    # Missed repeats collapse into the newest one.
    assert _steps(in_force, 47.0) == [(1, 0), (2, 0), (2, 4)]


def test_a_passed_level_stops_repeating_when_the_next_one_starts() -> None:
    in_force = [Level(1, 0.0, ["a"], repeat=1.0), Level(2, 10.0, ["b"])]
    assert _steps(in_force, 9.5) == [(1, 0), (1, 9)]
    assert _steps(in_force, 30.0) == [(1, 0), (2, 0)]


def test_runbook_defaults_route_by_severity_then_critical_then_management() -> None:
    cfg = parse_config(
        {
            "notifications": {
                "channels": CHANNELS,
                "routes": {"critical": ["sms", "slack-alerts"], "warning": ["slack-monitoring"]},
            }
        }
    )
    assert [(x.level, x.after, x.routes) for x in levels(cfg, "critical")] == [
        (1, 0.0, ["sms", "slack-alerts"]),
        (2, 3600.0, ["sms", "slack-alerts"]),
        (3, 14400.0, ["managers"]),
    ]
    assert [x.routes for x in levels(cfg, "warning")][:2] == [
        ["slack-monitoring"],
        ["slack-monitoring", "sms", "slack-alerts"],
    ]


@pytest.mark.parametrize(
    ("escalation", "message"),
    [
        ([{"level": 1, "after": "0s", "routes": ["nope"]}], r"unknown channel\(s\) nope"),
        (
            [{"level": 1, "after": "1h", "routes": ["sms"]}, {"level": 2, "after": "5m", "routes": ["sms"]}],
            "later",
        ),
        ([{"level": 1, "after": "0s", "routes": []}], "at least 1"),
        ([{"level": 1, "after": "0s", "routes": ["sms"], "repeat": "0s"}], "greater than 0"),
    ],
)
def test_escalation_section_is_validated(escalation: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config({"notifications": {"channels": CHANNELS}, "escalation": escalation})


def test_ack_tokens_are_bound_to_the_incident_and_expire() -> None:
    key = b"k" * 32
    token = make_token(key, 7, ttl=60, now=1000.0)
    assert token_problem(key, 7, token, now=1059.0) is None
    assert token_problem(key, 8, token, now=1059.0) == "this link was not issued for this incident"
    assert "expired" in (token_problem(key, 7, token, now=1061.0) or "")
    assert token_problem(b"x" * 32, 7, token, now=1000.0) is not None
    assert token_problem(key, 7, "garbage", now=1000.0) == "malformed link"


def test_ack_links_need_a_secret_and_use_the_public_url() -> None:
    assert ack_link(parse_config({}), 1) is None
    cfg = parse_config({"incidents": {"ack_secret": "s" * 32, "public_url": "https://rc.example.com/"}})
    link = ack_link(cfg, 3, now=1000.0)
    assert link is not None and link.startswith("https://rc.example.com/incidents/3/ack?token=")
    key = ack_key(cfg)
    assert key is not None and token_problem(key, 3, link.split("token=")[1], now=1000.0) is None


def test_without_routes_the_runbook_routes_are_served_by_the_channels_that_exist() -> None:
    channels = {
        **CHANNELS,
        "slack-alerts": {"type": "slack", "webhook_url": "http://127.0.0.1:9/a", "channel": "#alerts"},
        "slack-monitoring": {
            "type": "slack",
            "webhook_url": "http://127.0.0.1:9/m",
            "channel": "#monitoring",
        },
    }
    cfg = parse_config({"notifications": {"channels": channels}})
    assert levels(cfg, "critical")[0].routes == ["sms", "slack-alerts"]
    assert levels(cfg, "warning")[0].routes == ["managers", "slack-monitoring"]
    assert levels(cfg, "critical")[2].routes == ["managers"]
