"""Which channels a severity goes to: `notifications.routes`, or without it the runbook's routes.

The runbook ("Notification Channels"): critical → SMS, phone call and Slack #alerts (PagerDuty
too where one is configured); warning → email and Slack #monitoring; info → the daily summary,
which goes out by email (and to Slack #monitoring where there is one). A Slack channel serves
#alerts or #monitoring when its `channel:` says so, or else when its name contains "alerts" or
"monitoring".
"""

from __future__ import annotations

from dataclasses import dataclass

from recoverctl.config import Channel, Config


@dataclass(frozen=True)
class RunbookRoute:
    """One channel the runbook asks for at one severity."""

    severity: str
    what: str  # how the runbook says it: "SMS", "Slack #alerts", ...
    channel_type: str
    slack_room: str | None = None
    optional: bool = False  # "where configured": no complaint when there is none


RUNBOOK_ROUTES: tuple[RunbookRoute, ...] = (
    RunbookRoute("critical", "SMS", "sms"),
    RunbookRoute("critical", "voice", "voice"),
    RunbookRoute("critical", "Slack #alerts", "slack", "#alerts"),
    RunbookRoute("critical", "PagerDuty", "pagerduty", optional=True),
    RunbookRoute("warning", "email", "email"),
    RunbookRoute("warning", "Slack #monitoring", "slack", "#monitoring"),
    RunbookRoute("info", "daily summary by email", "email"),
    RunbookRoute("info", "daily summary to Slack #monitoring", "slack", "#monitoring", optional=True),
)


def slack_room(name: str, channel: Channel) -> str | None:
    """Return '#alerts' or '#monitoring' when the Slack channel `name` posts there, else its
    `channel:` (or None)."""
    room = getattr(channel, "channel", None)
    if room:
        return "#" + str(room).lstrip("#")
    for known in ("alerts", "monitoring"):
        if known in name.lower():
            return f"#{known}"
    return None


def serves(route: RunbookRoute, name: str, channel: Channel) -> bool:
    """Return True when the channel `name` is one the runbook route asks for."""
    if channel.type != route.channel_type:
        return False
    return route.slack_room is None or slack_room(name, channel) == route.slack_room


def routes_configured(cfg: Config) -> bool:
    """Return True when the config names its own `notifications.routes`."""
    return "routes" in cfg.notifications.model_fields_set


def default_routes(cfg: Config, severity: str) -> list[str]:
    """Return the configured channels the runbook routes `severity` to, in the runbook's order."""
    names: list[str] = []
    for route in RUNBOOK_ROUTES:
        if route.severity == severity:
            names += [n for n, ch in cfg.notifications.channels.items() if serves(route, n, ch)]
    return list(dict.fromkeys(names))


def channels_for(cfg: Config, severity: str) -> list[str]:
    """Return the channel names `severity` is sent to: `notifications.routes`, or the runbook's."""
    if routes_configured(cfg):
        return list(getattr(cfg.notifications.routes, severity, []) or [])
    return default_routes(cfg, severity)


def _missing(route: RunbookRoute) -> str:
    if route.slack_room:
        return f"no slack channel posting to {route.slack_room} (channel: '{route.slack_room}')"
    if route.channel_type in ("sms", "voice"):
        return f"no twilio channel configured (type: {route.channel_type})"
    return f"no {route.channel_type} channel configured"


def unserved_routes(cfg: Config) -> list[str]:
    """Return, one line each, the runbook routes no channel serves (in `notifications.routes`
    when the config has them, else among the configured channels)."""
    channels = cfg.notifications.channels
    out: list[str] = []
    for route in RUNBOOK_ROUTES:
        names = channels_for(cfg, route.severity)
        if route.optional or any(serves(route, n, channels[n]) for n in names):
            continue
        elsewhere = [n for n, ch in channels.items() if serves(route, n, ch)]
        why = (
            f"routes.{route.severity} names none of {', '.join(elsewhere)}" if elsewhere else _missing(route)
        )
        out.append(f"{route.severity} → {route.what}: {why}")
    return out
