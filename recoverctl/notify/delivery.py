"""Deliver catalog events to the channels their severity routes to, recording every delivery.

Events are claimed one by one (delivered=false → true in one UPDATE), so several processes
calling deliver_pending on one catalog never send an event twice. Info events are not sent one
by one: the daily summary collects them. A failing channel is recorded and never raised.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from recoverctl.catalog import Catalog, notifications
from recoverctl.config import Config
from recoverctl.errors import RecoverctlError
from recoverctl.notify import DeliveryError, Message, Notifier, build_notifier

log = logging.getLogger(__name__)


@dataclass
class Delivery:
    channel: str
    channel_type: str
    status: str  # sent / failed / suppressed (min_interval)
    attempts: int
    http_status: int | None = None
    error: str | None = None
    event_id: int | None = None


@dataclass
class DeliveryReport:
    """What one pass over the undelivered events did."""

    events: int
    collected_for_summary: int
    sent: int
    failed: int
    deliveries: list[Delivery]


def channels_for(cfg: Config, severity: str) -> list[str]:
    """Return the channel names `notifications.routes` sends `severity` to."""
    return list(getattr(cfg.notifications.routes, severity, []) or [])


def send_to_channels(
    cfg: Config, catalog: Catalog | None, message: Message, channels: list[str]
) -> list[Delivery]:
    """Send `message` to each named channel; record each delivery; return them. Never raises."""
    results: list[Delivery] = []
    for name in channels:
        channel = cfg.notifications.channels[name]
        delivery = Delivery(name, channel.type, "failed", 0, event_id=message.event_id)
        if (
            catalog is not None
            and channel.min_interval > 0
            and _sent_within(catalog, name, channel.min_interval)
        ):
            delivery.status = "suppressed"
            delivery.error = f"min_interval {channel.min_interval:g}s: the channel was used moments ago"
            results.append(delivery)
            _record(catalog, message, delivery)
            continue
        notifier: Notifier | None = None
        try:
            notifier = build_notifier(name, channel)
            receipt = notifier.send(message)
            delivery.status, delivery.attempts, delivery.http_status = (
                "sent",
                receipt.attempts,
                receipt.http_status,
            )
        except DeliveryError as e:
            delivery.attempts, delivery.http_status, delivery.error = e.attempts, e.http_status, str(e)
        except RecoverctlError as e:
            delivery.error = f"{e.message} ({e.hint})" if e.hint else e.message
        except Exception as e:
            # A notifier bug must not take the job down with it; the traceback goes to the log.
            log.exception("notifier %s crashed", name)
            delivery.error = f"unexpected {type(e).__name__}: {e}"
        finally:
            if notifier is not None:
                notifier.close()
        if delivery.status == "failed":
            log.warning("notification to %s failed: %s", name, delivery.error)
        results.append(delivery)
        if catalog is not None:
            _record(catalog, message, delivery)
    return results


def _sent_within(catalog: Catalog, channel: str, seconds: float) -> bool:
    last = notifications.last_sent_at(catalog, channel)
    return last is not None and time.time() - last < seconds


def _record(catalog: Catalog, message: Message, d: Delivery) -> None:
    record = notifications.NotificationRecord(
        message.event_id,
        d.channel,
        d.channel_type,
        message.severity,
        d.status,
        d.attempts,
        d.http_status,
        d.error,
    )
    try:
        notifications.record_notification(catalog, record)
    except RecoverctlError as e:
        log.error("could not record the delivery to %s: %s", d.channel, e)


def _message(event: notifications.PendingEvent) -> Message:
    return Message(
        severity=event.severity,
        kind=event.kind,
        summary=event.summary,
        subject=event.subject,
        details=event.details,
        dedup_key=event.dedup_key,
        at=event.at,
        event_id=event.id,
    )


def deliver_pending(cfg: Config, catalog: Catalog, *, limit: int = 200) -> DeliveryReport:
    """Send undelivered events to their routes and mark them delivered; return counts and deliveries.

    Info events are marked delivered without sending (the daily summary reports them).
    """
    sent: list[Delivery] = []
    events = collected = 0
    for event in notifications.pending_events(catalog, limit):
        if not notifications.claim_event(catalog, event.id):
            continue  # another process took it
        events += 1
        if event.severity not in ("critical", "warning"):
            collected += 1
            continue
        sent += send_to_channels(cfg, catalog, _message(event), channels_for(cfg, event.severity))
    return DeliveryReport(
        events=events,
        collected_for_summary=collected,
        sent=sum(d.status == "sent" for d in sent),
        failed=sum(d.status == "failed" for d in sent),
        deliveries=sent,
    )
