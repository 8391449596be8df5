"""Deliver catalog events to the channels their severity routes to, recording every delivery.

Events are claimed one by one (delivered=false → true in one UPDATE), so several processes
calling deliver_pending on one catalog never send an event twice. Info events are not sent one
by one: the daily summary collects them. A failing channel is recorded and never raised.

Without `notifications.routes` the runbook's routes apply (`RUNBOOK_ROUTES`, `default_routes`).
Status pages are not told of events: `notify_status` tells them a service's state, which incidents
drive (degraded when one opens, operational when it resolves: `incidents.escalation.post_status`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from recoverctl.catalog import Catalog, incident_escalations, incident_notices, notifications
from recoverctl.config import Config
from recoverctl.errors import RecoverctlError
from recoverctl.notify import DeliveryError, Message, Notifier, build_notifier, status_page
from recoverctl.notify.routing import channels_for

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


def send_to_channels(
    cfg: Config, catalog: Catalog | None, message: Message, channels: list[str]
) -> list[Delivery]:
    """Send `message` to each named channel; record each delivery; return them. Never raises."""
    results: list[Delivery] = []
    for name in channels:
        channel = cfg.notifications.channels[name]
        if channel.type == "status_page" and not status_page.covers(channel, message):
            continue  # not about a service this page shows: nothing to tell its users
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

    Info events are not sent to routes (the daily summary reports them). The event that opened
    an incident is not sent again to the channels its escalation reached first (and its level-1
    escalation skips those this delivery reached first: `incidents.escalation`).
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
        channels = channels_for(cfg, event.severity)
        opened = incident_notices.incident_opened_by(catalog, event.id)
        if opened is not None:
            # Its level-1 escalation told these channels already: one first message per channel.
            told = incident_escalations.notified_channels(catalog, opened)
            channels = [c for c in channels if c not in told]
        sent += send_to_channels(cfg, catalog, _message(event), channels)
    return DeliveryReport(
        events=events,
        collected_for_summary=collected,
        sent=sum(d.status == "sent" for d in sent),
        failed=sum(d.status == "failed" for d in sent),
        deliveries=sent,
    )


def status_pages_for(cfg: Config, message: Message, *, by_incident: bool = False) -> list[str]:
    """Return the status page channels to tell about `message`: those covering its service when it
    carries a state (with `by_incident`, only the pages incidents drive: `on_events`)."""
    return [
        name
        for name, ch in cfg.notifications.channels.items()
        if ch.type == "status_page"
        and (ch.on_events or not by_incident)
        and not status_page.is_probe(message)
        and status_page.covers(ch, message)
    ]


def _status_message(service: str, state: str, message: str | None, incident_key: str | None) -> Message:
    details: dict[str, object] = {status_page.STATE_DETAIL: state}
    if message:
        details[status_page.TEXT_DETAIL] = message
    severity = {"operational": "info", "major_outage": "critical"}.get(state, "warning")
    return Message(
        severity=severity,
        kind=f"status.{state}",
        summary=message or f"{service} is {state.replace('_', ' ')}",
        subject=service,
        details=details,
        dedup_key=incident_key,
    )


def status_pages_covering(cfg: Config, service: str, *, by_incident: bool = False) -> list[str]:
    """Return the status page channels that show `service` (with `by_incident`, only `on_events`
    ones)."""
    probe = _status_message(service, "operational", None, None)
    return status_pages_for(cfg, probe, by_incident=by_incident)


def notify_status(
    cfg: Config,
    catalog: Catalog | None,
    service: str,
    state: str,
    message: str | None = None,
    *,
    incident_key: str | None = None,
    by_incident: bool = False,
) -> list[Delivery]:
    """Tell every status page covering `service` that it is now `state` (operational,
    degraded_performance, partial_outage or major_outage); return the deliveries (recorded in
    the catalog when one is given). `message` replaces the page's configured text for `state`;
    `incident_key` ties the deliveries to one incident; `by_incident` leaves out the pages that
    incidents do not drive (`on_events: false`). Raise ValueError for an unknown state; a failing
    page is recorded, never raised.
    """
    if state not in status_page.STATES:
        raise ValueError(f"unknown status page state '{state}' (one of {', '.join(status_page.STATES)})")
    msg = _status_message(service, state, message, incident_key)
    return send_to_channels(cfg, catalog, msg, status_pages_for(cfg, msg, by_incident=by_incident))
