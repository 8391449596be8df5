"""Notification channels behind one small protocol, and the registry that builds them from config.

A new channel is one module with a class taking (name, channel config) plus one line in _FACTORIES.
Every notifier built here is wrapped once in the retry layer (notify/retry.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from recoverctl.notify.base import DeliveryError, Message, Notifier, Receipt
from recoverctl.notify.retry import RetryingNotifier


def _slack(name: str, cfg: Any) -> Notifier:
    from recoverctl.notify.slack import SlackNotifier

    return SlackNotifier(name, cfg)


def _email(name: str, cfg: Any) -> Notifier:
    from recoverctl.notify.email import EmailNotifier

    return EmailNotifier(name, cfg)


def _twilio(name: str, cfg: Any) -> Notifier:
    from recoverctl.notify.twilio import TwilioNotifier

    return TwilioNotifier(name, cfg)


def _pagerduty(name: str, cfg: Any) -> Notifier:
    from recoverctl.notify.pagerduty import PagerDutyNotifier

    return PagerDutyNotifier(name, cfg)


def _webhook(name: str, cfg: Any) -> Notifier:
    from recoverctl.notify.webhook import WebhookNotifier

    return WebhookNotifier(name, cfg)


def _status_page(name: str, cfg: Any) -> Notifier:
    from recoverctl.notify.status_page import StatusPageNotifier

    return StatusPageNotifier(name, cfg)


_FACTORIES: dict[str, Callable[[str, Any], Notifier]] = {
    "slack": _slack,
    "email": _email,
    "sms": _twilio,
    "voice": _twilio,
    "pagerduty": _pagerduty,
    "webhook": _webhook,
    "status_page": _status_page,
}


def build_notifier(name: str, channel: Any) -> Notifier:
    """Given a channel name and its config model, return a retry-wrapped notifier."""
    return RetryingNotifier(_FACTORIES[channel.type](name, channel), channel.retry)


__all__ = ["DeliveryError", "Message", "Notifier", "Receipt", "build_notifier"]
