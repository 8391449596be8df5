"""Events (everything worth telling someone about) and the audit log, as the reporting side reads
them. They are written by `Catalog.emit_event` and `Catalog.audit`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from recoverctl.catalog import Catalog, as_record
from recoverctl.catalog import tables as t

# Severities that count as problems in a summary.
PROBLEM_SEVERITIES = ("critical", "warning")


@dataclass(frozen=True)
class EventRecord:
    """One event, without its details."""

    id: int
    at: float
    kind: str
    severity: str
    subject: str | None
    summary: str


def info_events_since(catalog: Catalog, since: float) -> list[EventRecord]:
    """Return the info events since `since`, oldest first, leaving out the summaries themselves."""
    q = (
        sa.select(t.events)
        .where(t.events.c.at >= since, t.events.c.severity == "info", ~t.events.c.kind.like("summary.%"))
        .order_by(t.events.c.at)
    )
    with catalog.begin() as conn:
        return [as_record(EventRecord, r) for r in conn.execute(q)]


def problem_counts_since(catalog: Catalog, since: float) -> dict[str, int]:
    """Return how many critical and warning events there were since `since`, by severity
    (notification tests left out)."""
    q = (
        sa.select(t.events.c.severity, sa.func.count())
        .where(
            t.events.c.at >= since,
            t.events.c.severity.in_(PROBLEM_SEVERITIES),
            t.events.c.kind != "notify.test",
        )
        .group_by(t.events.c.severity)
    )
    with catalog.begin() as conn:
        return {severity: n for severity, n in conn.execute(q).all()}


def mark_delivered(catalog: Catalog, event_id: int) -> None:
    """Mark event `event_id` delivered, so the event deliverer leaves it alone."""
    with catalog.begin() as conn:
        conn.execute(t.events.update().where(t.events.c.id == event_id).values(delivered=True))


@dataclass(frozen=True)
class AuditEntry:
    """One row of the audit log: who did what to which target, and how it ended."""

    id: int
    at: float
    actor: str
    action: str
    target: str | None
    outcome: str
    details: dict[str, Any] | None


def audit_entries(
    catalog: Catalog, *, since: float | None = None, action: str | None = None, limit: int | None = None
) -> list[AuditEntry]:
    """Return audit log entries, oldest first: at or after `since`, of `action` (that action, or
    the actions under it: 'rollback' also gives 'rollback.start'), the newest `limit` of them."""
    q = sa.select(t.audit_log)
    if since is not None:
        q = q.where(t.audit_log.c.at >= since)
    if action:
        q = q.where(
            sa.or_(
                t.audit_log.c.action == action, t.audit_log.c.action.startswith(f"{action}.", autoescape=True)
            )
        )
    q = q.order_by(t.audit_log.c.at.desc(), t.audit_log.c.id.desc())
    if limit is not None:
        q = q.limit(limit)
    with catalog.begin() as conn:
        rows = [as_record(AuditEntry, r) for r in conn.execute(q)]
    return rows[::-1]
