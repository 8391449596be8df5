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
cooldown and cap checks cannot race, on SQLite BEGIN IMMEDIATE already does that.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from pydantic import TypeAdapter, ValidationError
from sqlalchemy.engine import Connection
from tenacity import retry, retry_if_exception_type, stop_after_attempt

from recoverctl.actions.job_kinds import JOB_KINDS, AlertJobPayload
from recoverctl.catalog import Catalog
from recoverctl.catalog import jobs as jobq
from recoverctl.catalog import tables as t
from recoverctl.config import Condition, Config, Policy, parse_duration

log = logging.getLogger(__name__)

DECISIONS = ("acted", "deduplicated", "suppressed", "ignored", "rejected")
SOURCES = ("alertmanager", "grafana", "generic")
# A rollback interrupted by a crash, or failed at a step on an engine, host or catalog that did not
# answer, is resumed by the same job (never a second rollback) up to 3 more times; other kinds
# run at most once. All attempts are one job, so the cap and the cooldown count it once.
MAX_ATTEMPTS = {"rollback": 4}
_DATETIME = TypeAdapter(datetime)
_INTAKE_LOCK_ID = 0x7265636F  # "reco": the PostgreSQL advisory lock serialising intake
# Parameters apart from the statement: one cached compiled INSERT for every batch of decisions.
_INSERT_ALERTS = t.alerts.insert().returning(t.alerts.c.id, sort_by_parameter_order=True)


@dataclass
class AlertIn:
    """One alert as any webhook source delivers it, normalised."""

    source: str
    status: str  # firing / resolved
    labels: dict[str, str]
    annotations: dict[str, str] = field(default_factory=dict)
    values: dict[str, float | None] = field(default_factory=dict)
    fingerprint: str | None = None
    starts_at: str | None = None
    group_key: str | None = None

    @property
    def alertname(self) -> str | None:
        return self.labels.get("alertname")

    def stable_fingerprint(self) -> str:
        """Return the sender's fingerprint, or a hash of the labels when it sent none."""
        if self.fingerprint:
            return self.fingerprint
        canon = json.dumps(self.labels, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canon.encode()).hexdigest()[:16]

    def incident_key(self) -> str:
        return f"{self.source}:{self.stable_fingerprint()}:{self.starts_at or ''}"


@dataclass
class Decision:
    decision: str
    reason: str
    policy: str | None = None
    service: str | None = None
    job_id: int | None = None
    take_incident: bool = False
    escalate: bool = False


# --- policy evaluation (pure) ---------------------------------------------------------------------


def match_policy(policies: list[Policy], alert: AlertIn) -> Policy | None:
    """Return the first policy whose `match` labels all equal the alert's labels, or None."""
    for policy in policies:
        if all(alert.labels.get(k) == v for k, v in policy.match.items()):
            return policy
    return None


def parse_number(raw: object) -> float:
    """Given 0.07, '7%', '12.5', '130s' or '2m', return a float (percent as a fraction); raise ValueError."""
    if isinstance(raw, bool) or raw is None:
        raise ValueError(f"not a number: {raw!r}")
    if isinstance(raw, int | float):
        return float(raw)
    text = str(raw).strip()
    if text.endswith("%"):
        return float(text[:-1]) / 100.0
    try:
        return float(text)
    except ValueError:
        return parse_duration(text)


def lookup_value(alert: AlertIn, ref: str) -> float | None:
    """Given 'value:NAME', 'annotation:NAME', 'label:NAME' or NAME, return the number or None."""
    kind, _, name = ref.partition(":")
    if not name:
        kind, name = "", ref
    by_kind: dict[str, list[dict[str, Any]]] = {
        "value": [alert.values],
        "annotation": [alert.annotations],
        "label": [alert.labels],
        "": [alert.values, alert.annotations, alert.labels],
    }
    places = by_kind.get(kind, [])
    for place in places:
        if name in place and place[name] is not None:
            try:
                return parse_number(place[name])
            except ValueError:
                return None
    return None


_OPS = {
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    "==": lambda a, b: a == b,
}


def check_condition(alert: AlertIn, cond: Condition) -> tuple[bool, str]:
    """Return (holds, explanation) for one condition on the alert's values."""
    value = lookup_value(alert, cond.value_from)
    if value is None:
        return False, f"{cond.value_from} missing or not a number"
    what = cond.value_from
    if cond.baseline_from:
        baseline = lookup_value(alert, cond.baseline_from)
        if not baseline:
            return False, f"{cond.baseline_from} missing or zero"
        value = value / baseline - 1.0
        what = f"{cond.value_from} vs {cond.baseline_from}"
    holds = bool(_OPS[cond.op](value, cond.threshold))
    return holds, f"{what}={value:g} {'' if holds else 'not '}{cond.op} {cond.threshold:g}"


def conditions_hold(alert: AlertIn, policy: Policy) -> tuple[bool, str]:
    if not policy.conditions:
        return True, ""
    results = [check_condition(alert, c) for c in policy.conditions]
    ok = (all if policy.conditions_mode == "all" else any)(r[0] for r in results)
    return ok, "; ".join(r[1] for r in results)


def firing_seconds(alert: AlertIn, now: float) -> float | None:
    if not alert.starts_at:
        return None
    try:
        started = _DATETIME.validate_python(alert.starts_at)
    except ValidationError:
        return None
    return now - started.timestamp()


def resolve_target(cfg: Config, policy: Policy, alert: AlertIn) -> tuple[str | None, str]:
    """Return (target, '') or (None, why it is ignored) for the policy's action."""
    label_value = alert.labels.get(policy.service_from_label) if policy.service_from_label else None
    if policy.service_from_label and label_value is None and policy.service is None:
        return None, f"alert has no '{policy.service_from_label}' label to name the service"
    service = label_value or policy.service
    if policy.action == "rollback":
        if service is None:
            return None, "policy names no service (set service or service_from_label)"
        if service not in cfg.services:
            return None, f"unknown service '{service}' (not in services:)"
        return service, ""
    if policy.action == "backup":
        source = policy.source or service
        if source is None or source not in cfg.sources:
            return None, f"unknown source '{source}' (not in sources:)"
        return source, ""
    if policy.action == "drill":
        if not policy.playbook:
            return None, "policy names no playbook"
        return policy.playbook, ""
    return service or alert.alertname or "alert", ""


# --- catalog reads inside the intake transaction --------------------------------------------------


def _recent_jobs(conn: Connection, kind: str, target: str, since: float) -> list[dict[str, Any]]:
    rows = conn.execute(
        sa.select(t.jobs)
        .where(t.jobs.c.kind == kind, t.jobs.c.created_at >= since)
        .order_by(t.jobs.c.created_at.desc())
    ).all()
    jobs = [jobq.job_dict(r) for r in rows]
    return [j for j in jobs if j["payload"].get("origin") == "alert" and j["payload"].get("target") == target]


def _release_check(conn: Connection, policy: Policy, service: str, now: float) -> str | None:
    """Return why a rollback of `service` must not start, or None.

    Mirrors the rollback action's choice: from the newest live release to the newest older good one.
    """
    rows = conn.execute(
        sa.select(t.releases.c.id, t.releases.c.version, t.releases.c.status, t.releases.c.created_at)
        .where(t.releases.c.service == service)
        .order_by(t.releases.c.id.desc())
    ).all()
    current = next((r for r in rows if r.status == "live"), None)
    if current is None:
        return f"service '{service}' has no live release to roll back from"
    if not any(r.id < current.id and r.status == "good" for r in rows):
        failed = [r.version for r in rows if r.id < current.id and r.status in ("failed", "rolled-back")]
        extra = f" (earlier releases failed: {', '.join(failed)})" if failed else ""
        return f"no earlier good release of '{service}' to roll back onto{extra}"
    if policy.max_release_age is not None and now - current.created_at > policy.max_release_age:
        return (
            f"current release {current.version} is {now - current.created_at:.0f}s old, over "
            f"max_release_age {policy.max_release_age:.0f}s: an old release is not the cause"
        )
    return None


@dataclass(frozen=True)
class Handled:
    """The decision that took an incident's key: what its repeats are deduplicated against."""

    decision: str
    job_id: int | None
    service: str | None


class IncidentMemory:
    """Incidents whose key a committed decision took, newest `size` kept.

    A taken key is never released (decisions are not deleted), so a repeat found here is decided
    as `deduplicated` without reading the catalog; a miss falls back to the catalog, which stays
    the authority (another `serve` process may have taken the key). Filled only after a commit.
    """

    def __init__(self, size: int = 20_000):
        self.size = size
        self._handled: OrderedDict[str, Handled] = OrderedDict()

    def get(self, key: str) -> Handled | None:
        return self._handled.get(key)

    def remember(self, taken: dict[str, Handled]) -> None:
        self._handled.update(taken)
        while len(self._handled) > self.size:
            self._handled.popitem(last=False)


def _handled(conn: Connection, key: str) -> Handled | None:
    seen = conn.execute(
        sa.select(t.alerts.c.job_id, t.alerts.c.decision, t.alerts.c.service).where(
            t.alerts.c.incident_key == key
        )
    ).first()
    return None if seen is None else Handled(seen.decision, seen.job_id, seen.service)


def decide(
    conn: Connection,
    cfg: Config,
    alert: AlertIn,
    now: float,
    force_dry_run: bool,
    known: Callable[[str], Handled | None] | None = None,
) -> Decision:
    """Return the decision for one alert, reading the catalog through `conn` (nothing written).

    `known(incident_key)` answers for incidents handled that the catalog may not show yet (this
    batch's unwritten decisions) or need not be asked about (an `IncidentMemory`).
    """
    policy = match_policy(cfg.policies, alert)
    if policy is None:
        return Decision("ignored", "no policy matches the alert's labels")
    name = policy.name
    if alert.status != "firing":
        return Decision("ignored", f"alert {alert.status}: no action", policy=name)
    key = alert.incident_key()
    seen = (known(key) if known is not None else None) or _handled(conn, key)
    if seen is not None:
        return Decision(
            "deduplicated",
            f"incident already {seen.decision}" + (f" (job {seen.job_id})" if seen.job_id else ""),
            policy=name,
            service=seen.service,
            job_id=seen.job_id,
        )
    if policy.action not in JOB_KINDS:
        return Decision(
            "ignored", f"action '{policy.action}' cannot run from alerts in this build", policy=name
        )
    target, why = resolve_target(cfg, policy, alert)
    if target is None:
        return Decision("ignored", why, policy=name)
    d = Decision("suppressed", "", policy=name, service=target)
    firing = firing_seconds(alert, now)
    if policy.min_firing and (firing is None or firing < policy.min_firing):
        d.reason = f"firing {firing or 0:.0f}s, less than min_firing {policy.min_firing:.0f}s"
        return d
    ok, explanation = conditions_hold(alert, policy)
    if not ok:
        d.reason = f"conditions not met: {explanation}"
        return d
    running = jobq.active_job(conn, policy.action, target)
    if running is not None:
        return Decision(
            "deduplicated",
            f"{policy.action} of '{target}' already {running['state']} (job {running['id']}) absorbs it",
            policy=name,
            service=target,
            job_id=running["id"],
            take_incident=True,
        )
    if policy.action == "rollback":
        blocked = _release_check(conn, policy, target, now)
        if blocked:
            d.reason = blocked
            return d
    horizon = max(policy.cooldown, policy.max_actions.window if policy.max_actions else 0.0)
    recent = _recent_jobs(conn, policy.action, target, now - horizon)
    if recent and now - recent[0]["created_at"] < policy.cooldown:
        d.reason = (
            f"cooldown: last {policy.action} of '{target}' {now - recent[0]['created_at']:.0f}s ago "
            f"(job {recent[0]['id']}), cooldown {policy.cooldown:.0f}s"
        )
        return d
    cap = policy.max_actions
    if cap is not None:
        in_window = [j for j in recent if now - j["created_at"] < cap.window]
        if len(in_window) >= cap.count:
            d.reason = (
                f"cap: {len(in_window)} automatic {policy.action}(s) of '{target}' in the last "
                f"{cap.window:.0f}s (max {cap.count}); escalated to a human"
            )
            d.take_incident = True
            d.escalate = True
            return d
    if force_dry_run or policy.mode == "dry-run":
        d.reason = f"dry-run: would {policy.action} '{target}'"
        d.take_incident = True
        return d
    return Decision("acted", f"{policy.action} '{target}' queued", policy=name, service=target)


# --- writes ---------------------------------------------------------------------------------------


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


def _insert_decisions(conn: Connection, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Insert the decision rows with ONE statement (multi-row INSERT … RETURNING id, in order)."""
    if not rows:
        return []
    ids = conn.execute(_INSERT_ALERTS, rows).scalars().all()
    return [_public({**row, "id": alert_id}) for row, alert_id in zip(rows, ids, strict=True)]


def _escalate(conn: Connection, alert: AlertIn, d: Decision, now: float) -> None:
    conn.execute(
        t.events.insert().values(
            at=now,
            kind="alert.escalated",
            severity="critical",
            subject=d.service,
            summary=f"{alert.alertname} on '{d.service}': automatic action withheld, {d.reason}",
            details={"policy": d.policy, "incident_key": alert.incident_key(), "labels": alert.labels},
            dedup_key=f"escalate:{alert.incident_key()}",
            delivered=False,
        )
    )


def intake(
    cfg: Config, catalog: Catalog, alerts: list[AlertIn], *, force_dry_run: bool = False
) -> list[dict[str, Any]]:
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
) -> list[list[dict[str, Any]]]:
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
        for alerts in requests:
            batch_rows = _decide(conn, cfg, alerts, force_dry_run, memory, taken)
            rows.extend(batch_rows)
            sizes.append(len(batch_rows))
        stored = _insert_decisions(conn, rows)
    if memory is not None:
        memory.remember(taken)
    results: list[list[dict[str, Any]]] = []
    start = 0
    for size in sizes:
        results.append(stored[start : start + size])
        start += size
    if log.isEnabledFor(logging.INFO):
        for row in stored:
            log.info(
                "alert %s from %s: %s (%s)", row["alertname"], row["source"], row["decision"], row["reason"]
            )
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


def _decide(
    conn: Connection,
    cfg: Config,
    alerts: list[AlertIn],
    force_dry_run: bool,
    memory: IncidentMemory | None,
    taken: dict[str, Handled],
) -> list[dict[str, Any]]:
    """Decide one request's alerts (jobs and escalations written now); return the decision rows."""
    rows: list[dict[str, Any]] = []
    now = time.time()
    known = _Known(taken, memory)
    for alert in alerts:
        d = decide(conn, cfg, alert, now, force_dry_run, known.get)
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
            _escalate(conn, alert, d, now)
        key = alert.incident_key() if d.take_incident else None
        if key is not None:
            taken[key] = Handled(d.decision, d.job_id, d.service)
        rows.append(_decision_row(alert, d, now, key))
    return rows


@dataclass
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
    with catalog.begin() as conn:
        conn.execute(t.alerts.insert(), decisions)
        conn.execute(t.audit_log.insert(), audits)


def _public(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "received_at": datetime.fromtimestamp(row["received_at"], UTC).isoformat(timespec="milliseconds"),
        "source": row["source"],
        "alertname": row["alertname"],
        "service": row["service"],
        "fingerprint": row["fingerprint"],
        "starts_at": row["starts_at"],
        "status": row["status"],
        "policy": row["policy"],
        "decision": row["decision"],
        "reason": row["reason"],
        "job_id": row["job_id"],
    }


def list_decisions(
    catalog: Catalog,
    *,
    limit: int = 100,
    since: float | None = None,
    decision: str | None = None,
    service: str | None = None,
) -> list[dict[str, Any]]:
    """Return stored decisions, newest first, optionally filtered."""
    q = sa.select(t.alerts).order_by(t.alerts.c.id.desc()).limit(limit)
    if since is not None:
        q = q.where(t.alerts.c.received_at >= time.time() - since)
    if decision is not None:
        q = q.where(t.alerts.c.decision == decision)
    if service is not None:
        q = q.where(t.alerts.c.service == service)
    with catalog.begin() as conn:
        rows = conn.execute(q).all()
    return [_public(dict(r._mapping)) for r in rows]
