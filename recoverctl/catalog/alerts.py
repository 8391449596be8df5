"""Alert decisions as the catalog keeps them: one `alerts` row per decision (or per group of
refused requests), the incidents they took, and the escalations they raised.

Functions ending in `_in` work inside the caller's transaction (`with catalog.begin() as conn`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from recoverctl.catalog import Catalog, insert_event_in
from recoverctl.catalog import jobs as jobq
from recoverctl.catalog import tables as t

# Parameters apart from the statement: one cached compiled INSERT for every batch of decisions.
_INSERT_ALERTS = t.alerts.insert().returning(t.alerts.c.id, sort_by_parameter_order=True)


@dataclass(frozen=True)
class Handled:
    """The decision that took an incident's key: what its repeats are deduplicated against."""

    decision: str
    job_id: int | None
    service: str | None


@dataclass(frozen=True)
class StoredDecision:
    """One stored decision as `serve` answers and `recoverctl alerts` lists it."""

    id: int
    received_at: str  # ISO 8601, UTC, milliseconds
    source: str
    alertname: str | None
    service: str | None
    fingerprint: str | None
    starts_at: str | None
    status: str | None
    policy: str | None
    decision: str
    reason: str | None
    job_id: int | None

    def to_json(self) -> dict[str, Any]:
        """The decision as `serve` answers it; built by hand, on the webhook's hot path, where
        `dataclasses.asdict` (a deep copy) costs more than the decision."""
        return {
            "id": self.id,
            "received_at": self.received_at,
            "source": self.source,
            "alertname": self.alertname,
            "service": self.service,
            "fingerprint": self.fingerprint,
            "starts_at": self.starts_at,
            "status": self.status,
            "policy": self.policy,
            "decision": self.decision,
            "reason": self.reason,
            "job_id": self.job_id,
        }


@dataclass(frozen=True)
class AlertJob:
    """A job an alert queued: when, for the cooldown and the cap."""

    id: int
    created_at: float


def _stored(row: dict[str, Any]) -> StoredDecision:
    return StoredDecision(
        id=row["id"],
        received_at=datetime.fromtimestamp(row["received_at"], UTC).isoformat(timespec="milliseconds"),
        source=row["source"],
        alertname=row["alertname"],
        service=row["service"],
        fingerprint=row["fingerprint"],
        starts_at=row["starts_at"],
        status=row["status"],
        policy=row["policy"],
        decision=row["decision"],
        reason=row["reason"],
        job_id=row["job_id"],
    )


def handled_in(conn: Connection, incident_key: str) -> Handled | None:
    """Return the decision that took `incident_key`, or None when no decision took it."""
    seen = conn.execute(
        sa.select(t.alerts.c.job_id, t.alerts.c.decision, t.alerts.c.service).where(
            t.alerts.c.incident_key == incident_key
        )
    ).first()
    return None if seen is None else Handled(seen.decision, seen.job_id, seen.service)


def recent_alert_jobs_in(conn: Connection, kind: str, target: str, since: float) -> list[AlertJob]:
    """Return the jobs of `kind` on `target` that alerts queued since `since`, newest first."""
    rows = conn.execute(
        sa.select(t.jobs)
        .where(t.jobs.c.kind == kind, t.jobs.c.created_at >= since)
        .order_by(t.jobs.c.created_at.desc())
    ).all()
    jobs = [jobq.Job.from_row(r) for r in rows]
    return [
        AlertJob(j.id, j.created_at)
        for j in jobs
        if j.payload.get("origin") == "alert" and j.payload.get("target") == target
    ]


def insert_decisions_in(conn: Connection, rows: list[dict[str, Any]]) -> list[StoredDecision]:
    """Insert `alerts` rows with ONE statement (multi-row INSERT … RETURNING id, in order); return
    them as stored."""
    if not rows:
        return []
    ids = conn.execute(_INSERT_ALERTS, rows).scalars().all()
    return [_stored({**row, "id": alert_id}) for row, alert_id in zip(rows, ids, strict=True)]


def record_escalation_in(
    conn: Connection, at: float, subject: str | None, summary: str, details: dict[str, Any], dedup_key: str
) -> int:
    """Queue a critical `alert.escalated` event (an automatic action was withheld) and record it on
    its incident, as `Catalog.emit_event` does for every other event; return the event id."""
    return insert_event_in(conn, at, "alert.escalated", "critical", subject, summary, details, dedup_key)


def record_rejections(
    catalog: Catalog, decisions: list[dict[str, Any]], audits: list[dict[str, Any]]
) -> None:
    """Store `rejected` decision rows and their audit-log rows in one transaction."""
    with catalog.begin() as conn:
        conn.execute(t.alerts.insert(), decisions)
        conn.execute(t.audit_log.insert(), audits)


def list_decisions(
    catalog: Catalog,
    *,
    limit: int = 100,
    since: float | None = None,
    decision: str | None = None,
    service: str | None = None,
) -> list[StoredDecision]:
    """Return stored decisions, newest first, optionally filtered (`since`: seconds back from now)."""
    q = sa.select(t.alerts).order_by(t.alerts.c.id.desc()).limit(limit)
    if since is not None:
        q = q.where(t.alerts.c.received_at >= time.time() - since)
    if decision is not None:
        q = q.where(t.alerts.c.decision == decision)
    if service is not None:
        q = q.where(t.alerts.c.service == service)
    with catalog.begin() as conn:
        rows = conn.execute(q).all()
    return [_stored(dict(r._mapping)) for r in rows]


def decision_counts_in(conn: Connection) -> dict[str, int]:
    """Return how many stored decisions the catalog holds of each kind (acted, suppressed, ...)."""
    rows = conn.execute(sa.select(t.alerts.c.decision, sa.func.count()).group_by(t.alerts.c.decision))
    return {str(decision): int(n) for decision, n in rows.all()}
