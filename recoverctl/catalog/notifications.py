"""Delivering events: which events are still to be sent, claiming one for sending, and the record
of every delivery attempt to a channel."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from recoverctl.catalog import Catalog
from recoverctl.catalog import tables as t


@dataclass(frozen=True)
class PendingEvent:
    """An event not yet handed to the notification layer."""

    id: int
    at: float
    kind: str
    severity: str
    subject: str | None
    summary: str
    details: dict[str, Any]
    dedup_key: str | None


@dataclass(frozen=True)
class NotificationRecord:
    """One delivery attempt of an event (or of a message without one) to one channel."""

    event_id: int | None
    channel: str
    channel_type: str
    severity: str
    status: str  # sent / failed / suppressed
    attempts: int
    http_status: int | None = None
    error: str | None = None


@dataclass(frozen=True)
class FailedDelivery:
    """A delivery attempt that failed: to which channel (name and type), when, and why."""

    channel: str
    channel_type: str
    at: float
    error: str | None


def pending_events(catalog: Catalog, limit: int) -> list[PendingEvent]:
    """Return up to `limit` undelivered events, oldest first."""
    with catalog.begin() as conn:
        rows = conn.execute(
            sa.select(t.events).where(t.events.c.delivered.is_(False)).order_by(t.events.c.id).limit(limit)
        ).all()
    return [
        PendingEvent(r.id, r.at, r.kind, r.severity, r.subject, r.summary, dict(r.details or {}), r.dedup_key)
        for r in rows
    ]


def claim_event(catalog: Catalog, event_id: int) -> bool:
    """Mark event `event_id` delivered; return False when another process already had it."""
    with catalog.begin() as conn:
        claimed = conn.execute(
            t.events.update()
            .where(t.events.c.id == event_id, t.events.c.delivered.is_(False))
            .values(delivered=True)
        ).rowcount
    return claimed == 1


def last_sent_at(catalog: Catalog, channel: str) -> float | None:
    """Return when `channel` last delivered a message successfully, or None."""
    with catalog.begin() as conn:
        last = conn.execute(
            sa.select(sa.func.max(t.notifications.c.at)).where(
                t.notifications.c.channel == channel, t.notifications.c.status == "sent"
            )
        ).scalar()
    return float(last) if last is not None else None


def record_notification(catalog: Catalog, record: NotificationRecord) -> None:
    """Append one delivery attempt to the notifications table, stamped now."""
    with catalog.begin() as conn:
        conn.execute(
            t.notifications.insert().values(
                event_id=record.event_id,
                at=time.time(),
                channel=record.channel,
                channel_type=record.channel_type,
                severity=record.severity,
                status=record.status,
                attempts=record.attempts,
                http_status=record.http_status,
                error=record.error,
            )
        )


def failed_deliveries_since(catalog: Catalog, since: float) -> list[FailedDelivery]:
    """Return the delivery attempts that failed at or after `since`, oldest first."""
    with catalog.begin() as conn:
        rows = conn.execute(
            sa.select(t.notifications)
            .where(t.notifications.c.at >= since, t.notifications.c.status == "failed")
            .order_by(t.notifications.c.at)
        ).all()
    return [FailedDelivery(r.channel, r.channel_type, r.at, r.error) for r in rows]
