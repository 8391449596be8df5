"""Use case: send a test notification (`recoverctl notify test`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from recoverctl.catalog import Catalog, notifications
from recoverctl.config import Config
from recoverctl.errors import ConfigError
from recoverctl.notify import Message
from recoverctl.notify.base import SEVERITIES
from recoverctl.notify.delivery import Delivery, channels_for, send_to_channels


@dataclass(frozen=True)
class PlannedDelivery:
    """A channel a dry run would send to."""

    channel: str
    channel_type: str
    status: str = "would-send"

    # Read like a Delivery by renderers; not part of the JSON (they are not fields).
    attempts: ClassVar[int] = 0
    error: ClassVar[str | None] = None


@dataclass(frozen=True)
class TestNotification:
    """The outcome of `notify test`: per channel, what was (or would be) sent."""

    # Not a test case, though its name starts with Test.
    __test__ = False

    dry_run: bool
    severity: str
    results: list[Delivery] | list[PlannedDelivery]


def send_test(
    cfg: Config, catalog: Catalog, channel: str | None, severity: str, dry_run: bool
) -> TestNotification:
    """Send a test message to one channel or to the route of `severity`; return per-channel results.

    Raise ConfigError when the channel is unknown or nothing is routed for `severity`.
    """
    if severity not in SEVERITIES:
        raise ConfigError(f"unknown severity '{severity}'", hint="use critical, warning or info")
    known = cfg.notifications.channels
    if channel is not None:
        if channel not in known:
            raise ConfigError(
                f"unknown notification channel '{channel}'",
                hint=f"configured channels: {', '.join(sorted(known)) or '(none)'}",
            )
        names = [channel]
    else:
        names = channels_for(cfg, severity)
        if not names:
            raise ConfigError(
                f"no channels are routed for severity '{severity}'",
                hint=f"add notifications.routes.{severity}: [<channel>] or pass --channel",
            )
    summary = f"test notification from recoverctl ({severity}); no action needed"
    if dry_run:
        return TestNotification(True, severity, [PlannedDelivery(n, known[n].type) for n in names])
    event_id = catalog.emit_event("notify.test", severity, None, summary, {"test": True}, None)
    # Sent right here: the delivery loop must not send it a second time.
    notifications.claim_event(catalog, event_id)
    message = Message(
        severity=severity,
        kind="notify.test",
        summary=summary,
        details={"test": True},
        event_id=event_id,
        dedup_key=f"recoverctl/notify.test/{event_id}",
    )
    results = send_to_channels(cfg, catalog, message, names)
    return TestNotification(False, severity, results)
