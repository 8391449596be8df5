"""Alerts on incidents: an alert the intake decided on opens, joins, adopts or resolves one.

Kept apart from `catalog/incidents.py` (the incidents and their timelines) because it is the
intake's side of them: one call per intake batch, in the intake's transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Connection

from recoverctl.catalog import tables as t
from recoverctl.catalog.incidents import (
    TimelineEntry,
    active_about_in,
    add_entry_in,
    open_in,
    recently_resolved_in,
)


@dataclass(frozen=True)
class AlertNote:
    """What alert intake decided about one alert, as its incident records it."""

    alert_id: int
    at: float
    source: str
    alertname: str | None
    service: str | None
    fingerprint: str
    group_key: str | None
    status: str  # firing / resolved
    policy: str | None
    decision: str
    reason: str | None
    job_id: int | None
    escalated: bool
    severity: str
    values: dict[str, Any]
    summary: str | None


def record_alerts_in(conn: Connection, notes: list[AlertNote]) -> list[int | None]:
    """Record each alert on its incident: an acted-on or escalated firing alert opens one (or
    reopens its group's recently resolved one), any other alert of an active incident's group or
    service joins it. Return per alert the incident id, or None."""
    return [_record_alert_in(conn, n) for n in notes]


def _record_alert_in(conn: Connection, n: AlertNote) -> int | None:
    if n.status == "firing" and n.decision == "deduplicated":
        return None  # a repeat (an HA replica, a re-send): its first delivery is on the timeline
    incident_id = active_about_in(conn, n.service, n.group_key)
    opens = n.status == "firing" and (n.decision == "acted" or n.escalated)
    if incident_id is not None and opens:
        _adopt_in(conn, incident_id, n)
    if incident_id is None and opens:
        incident_id = recently_resolved_in(conn, n.group_key, n.at)
        if incident_id is not None:
            conn.execute(t.incidents.update().where(t.incidents.c.id == incident_id).values(state="reopened"))
            add_entry_in(conn, incident_id, TimelineEntry(n.at, "reopened", f"{n.alertname} fired again"))
    if incident_id is None and opens:
        title = f"{n.alertname or 'alert'} on {n.service}" + (f": {n.summary}" if n.summary else "")
        incident_id = open_in(
            conn,
            at=n.at,
            kind="alert",
            severity=n.severity,
            title=title,
            subject=n.service,
            subject_type="service",
            group_key=n.group_key,
            details={"alertname": n.alertname, "policy": n.policy},
        )
    if incident_id is None:
        return None
    measured = ", ".join(f"{k}={v}" for k, v in n.values.items()) or n.summary or "-"
    add_entry_in(
        conn,
        incident_id,
        TimelineEntry(
            at=n.at,
            kind=f"alert.{n.status}",
            summary=f"{n.alertname} {n.status} from {n.source} (rule {n.policy or '-'}; measured {measured})",
            details={
                "alertname": n.alertname,
                "rule": n.policy,
                "fingerprint": n.fingerprint,
                "values": n.values,
                "measured": n.summary,
                "source": n.source,
            },
            alert_id=n.alert_id,
        ),
    )
    if n.status == "firing":
        add_entry_in(
            conn,
            incident_id,
            TimelineEntry(
                at=n.at,
                kind="decision",
                summary=f"{n.decision}: {n.reason or ''}".strip(),
                details={"decision": n.decision, "policy": n.policy, "escalated": n.escalated},
                alert_id=n.alert_id,
                job_id=n.job_id,
            ),
        )
    return incident_id


def _adopt_in(conn: Connection, incident_id: int, n: AlertNote) -> None:
    """Make the incident its `alert.escalated` event opened a moment ago (same intake) the alert's:
    it then resolves with its alerts and reopens with its group."""
    conn.execute(
        t.incidents.update()
        .where(t.incidents.c.id == incident_id, t.incidents.c.kind == "alert.escalated")
        .values(kind="alert", group_key=n.group_key, details={"alertname": n.alertname, "policy": n.policy})
    )
