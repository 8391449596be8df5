"""Alert intake: turn webhook alerts into at most one safe action per incident.

Each alert gets exactly one decision, stored in the `alerts` table with its reason:

- ``acted``: a job was queued (the incident key is taken, so repeats deduplicate);
- ``deduplicated``: the incident was already handled, or an active job for the same target absorbs it;
- ``suppressed``: min firing time, conditions, release age, cooldown, cap (then escalated), dry-run;
- ``ignored``: no policy matches, the alert resolved, or the target is unknown;
- ``rejected``: requests were refused (auth, size, malformed) — see `record_rejections`: one row
  per (source, reason, peer) group and interval, with the count.

An incident is (source, fingerprint, startsAt): Alertmanager replicas in a cluster deliver the same
pair, so the unique `incident_key` turns HA duplicates into one action. The decisions and the job of
one request commit in one transaction; on PostgreSQL intake is serialised with an advisory lock so
cooldown and cap checks cannot race, on SQLite BEGIN IMMEDIATE already does that. The decision
rules themselves are policy and live in `recoverctl/alerting/`; this use case runs them, queues
the jobs and stores the decisions.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from tenacity import retry, retry_if_exception_type, stop_after_attempt

from recoverctl.actions.job_kinds import JOB_KINDS, AlertJobPayload
from recoverctl.alerting.alert import AlertIn, Decision
from recoverctl.alerting.decide import IncidentMemory, decide
from recoverctl.alerting.policy import match_policy
from recoverctl.catalog import Catalog, incident_alerts
from recoverctl.catalog import alerts as alert_rows
from recoverctl.catalog import jobs as jobq
from recoverctl.catalog.alerts import Handled, StoredDecision
from recoverctl.config import Config, Policy

__all__ = [
    "DECISIONS",
    "SOURCES",
    "AlertIn",
    "IncidentMemory",
    "RejectionTally",
    "StoredDecision",
    "intake",
    "intake_batch",
    "list_decisions",
    "record_rejections",
]

log = logging.getLogger(__name__)

DECISIONS = ("acted", "deduplicated", "suppressed", "ignored", "rejected")
SOURCES = ("alertmanager", "grafana", "generic")
# A rollback interrupted by a crash, or failed at a step on an engine, host or catalog that did not
# answer, is resumed by the same job (never a second rollback) up to 3 more times; other kinds
# run at most once. All attempts are one job, so the cap and the cooldown count it once.
MAX_ATTEMPTS = {"rollback": 4}
_INTAKE_LOCK_ID = 0x7265636F  # "reco": the PostgreSQL advisory lock serialising intake


def _job_payload(policy: Policy, alert: AlertIn, target: str) -> dict[str, Any]:
    return AlertJobPayload(
        action=policy.action,
        target=target,
        policy=policy.name,
        severity=policy.severity,
        source=alert.source,
        alertname=alert.alertname,
        fingerprint=alert.stable_fingerprint(),
        starts_at=alert.starts_at,
        incident_key=alert.incident_key(),
        labels=alert.labels,
        summary=alert.annotations.get("summary") or alert.annotations.get("description"),
    ).to_json()


def _decision_row(alert: AlertIn, d: Decision, now: float, incident_key: str | None) -> dict[str, Any]:
    return {
        "received_at": now,
        "source": alert.source,
        "alertname": alert.alertname,
        "service": d.service or alert.labels.get("service"),
        "fingerprint": alert.stable_fingerprint(),
        "starts_at": alert.starts_at,
        "group_key": alert.group_key,
        "status": alert.status,
        "policy": d.policy,
        "decision": d.decision,
        "reason": d.reason,
        "job_id": d.job_id,
        "incident_key": incident_key,
        "labels": alert.labels,
    }


def intake(
    cfg: Config, catalog: Catalog, alerts: list[AlertIn], *, force_dry_run: bool = False
) -> list[StoredDecision]:
    """Decide every alert, queue at most one job per incident and store each decision.

    Return the stored decisions (the `alerts` rows). Everything commits in one transaction, so a
    failure leaves nothing half-written. Raise CatalogError when the catalog is unreachable.
    """
    return intake_batch(cfg, catalog, [alerts], force_dry_run=force_dry_run)[0]


@retry(retry=retry_if_exception_type(sa.exc.IntegrityError), stop=stop_after_attempt(5), reraise=True)
def intake_batch(
    cfg: Config,
    catalog: Catalog,
    requests: list[list[AlertIn]],
    *,
    force_dry_run: bool = False,
    memory: IncidentMemory | None = None,
) -> list[list[StoredDecision]]:
    """Like `intake` for several requests at once, in order, in ONE transaction (one commit).

    A busy server groups concurrent requests this way: the commit (an fsync) dominates the cost
    of a decision, and deciding them in order inside one transaction keeps deduplication exact.
    With `memory`, repeats of incidents it holds are decided without reading the catalog, and it
    learns the incidents this batch took once they are committed.
    """
    taken: dict[str, Handled] = {}
    with catalog.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:id)"), {"id": _INTAKE_LOCK_ID})
        rows: list[dict[str, Any]] = []
        sizes: list[int] = []
        notes: list[_IncidentNote] = []
        for alerts in requests:
            batch_rows = _decide(conn, cfg, alerts, force_dry_run, memory, taken, notes)
            rows.extend(batch_rows)
            sizes.append(len(batch_rows))
        stored = alert_rows.insert_decisions_in(conn, rows)
        incident_alerts.record_alerts_in(conn, [n.note(d.id) for n, d in zip(notes, stored, strict=True)])
    if memory is not None:
        memory.remember(taken)
    results: list[list[StoredDecision]] = []
    start = 0
    for size in sizes:
        results.append(stored[start : start + size])
        start += size
    if log.isEnabledFor(logging.INFO):
        for d in stored:
            log.info("alert %s from %s: %s (%s)", d.alertname, d.source, d.decision, d.reason)
    return results


class _Known:
    """This batch's taken incidents (not yet in the table), then the memory of committed ones."""

    def __init__(self, taken: dict[str, Handled], memory: IncidentMemory | None):
        self.taken = taken
        self.memory = memory

    def get(self, key: str) -> Handled | None:
        found = self.taken.get(key)
        if found is None and self.memory is not None:
            found = self.memory.get(key)
        return found


@dataclasses.dataclass(frozen=True)
class _IncidentNote:
    """An alert and its decision, waiting for the id of its stored row."""

    alert: AlertIn
    decision: Decision
    severity: str
    at: float

    def note(self, alert_id: int) -> incident_alerts.AlertNote:
        a, d = self.alert, self.decision
        return incident_alerts.AlertNote(
            alert_id=alert_id,
            at=self.at,
            source=a.source,
            alertname=a.alertname,
            service=d.service or a.labels.get("service"),
            fingerprint=a.stable_fingerprint(),
            group_key=a.group_key,
            status=a.status,
            policy=d.policy,
            decision=d.decision,
            reason=d.reason,
            job_id=d.job_id,
            escalated=d.escalate,
            severity=self.severity,
            values={k: v for k, v in a.values.items() if v is not None},
            summary=a.annotations.get("summary") or a.annotations.get("description"),
        )


def _decide(
    conn: Connection,
    cfg: Config,
    alerts: list[AlertIn],
    force_dry_run: bool,
    memory: IncidentMemory | None,
    taken: dict[str, Handled],
    notes: list[_IncidentNote],
) -> list[dict[str, Any]]:
    """Decide one request's alerts (jobs and escalations written now); return the decision rows
    and add each alert to `notes` for its incident."""
    rows: list[dict[str, Any]] = []
    now = time.time()
    known = _Known(taken, memory)
    for alert in alerts:
        d = decide(conn, cfg, alert, now, force_dry_run, known.get, runnable=JOB_KINDS)
        if d.decision == "acted":
            policy = match_policy(cfg.policies, alert)
            assert policy is not None and d.service is not None
            d.job_id = jobq.enqueue(
                conn,
                policy.action,
                _job_payload(policy, alert, d.service),
                target=d.service,
                max_attempts=MAX_ATTEMPTS.get(policy.action, 1),
            )
            d.reason = f"{d.reason} as job {d.job_id}"
            d.take_incident = True
        if d.escalate:
            alert_rows.record_escalation_in(
                conn,
                now,
                d.service,
                f"{alert.alertname} on '{d.service}': automatic action withheld, {d.reason}",
                {"policy": d.policy, "incident_key": alert.incident_key(), "labels": alert.labels},
                f"escalate:{alert.incident_key()}",
            )
        key = alert.incident_key() if d.take_incident else None
        if key is not None:
            taken[key] = Handled(d.decision, d.job_id, d.service)
        rows.append(_decision_row(alert, d, now, key))
        severity = next((p.severity for p in cfg.policies if p.name == d.policy), "warning")
        notes.append(_IncidentNote(alert, d, severity, now))
    return rows


@dataclasses.dataclass
class RejectionTally:
    """How many requests of one (source, outcome, reason, peer) group were refused, and when."""

    count: int
    first_at: float
    last_at: float


def record_rejections(catalog: Catalog, tallies: dict[tuple[str, str, str, str], RejectionTally]) -> None:
    """Store each (source, outcome, reason, peer) group of refused requests as one `rejected`
    decision and one audit-log entry, in one transaction; raise CatalogError when unreachable."""
    decisions: list[dict[str, Any]] = []
    audits: list[dict[str, Any]] = []
    for (source, outcome, reason, peer), tally in tallies.items():
        many = f"{tally.count} requests" if tally.count > 1 else "1 request"
        decisions.append(
            {
                "received_at": tally.first_at,
                "source": source,
                "decision": "rejected",
                "reason": f"{many} from {peer} refused ({outcome}): {reason}",
                "labels": {"peer": peer, "outcome": outcome, "count": str(tally.count)},
            }
        )
        audits.append(
            {
                "at": tally.last_at,
                "actor": f"webhook:{peer}",
                "action": "webhook.rejected",
                "target": f"/hooks/{source}" if source in SOURCES else f"/{source}",
                "outcome": outcome,
                "details": {
                    "count": tally.count,
                    "reason": reason,
                    "peer": peer,
                    "first_at": tally.first_at,
                    "last_at": tally.last_at,
                },
            }
        )
    if not decisions:
        return
    alert_rows.record_rejections(catalog, decisions, audits)


def list_decisions(
    catalog: Catalog,
    *,
    limit: int = 100,
    since: float | None = None,
    decision: str | None = None,
    service: str | None = None,
) -> list[StoredDecision]:
    """Return stored decisions, newest first, optionally filtered (`since`: seconds back from now)."""
    return alert_rows.list_decisions(catalog, limit=limit, since=since, decision=decision, service=service)
