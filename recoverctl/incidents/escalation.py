"""The escalation loop: one pass (`tick`) resolves incidents whose alerts and actions are healthy
again, opens incidents for sources whose RPO exposure is past target or whose WAL archiving
fails, tells status pages the state incidents give their services, and sends every escalation
notification that is due.

Several runners (scheduler loops, workers) may run it at once on one catalog: a notification is
sent by the runner that inserted its (incident, level, repeat) row; a runner killed before sending
leaves its row claimed until the lease expires, then another runner sends it. A runner killed
after the channel accepted the message but before it recorded that may have it sent again after
the lease: the only window in which a notification can go twice (never none).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from recoverctl.catalog import Catalog, incident_escalations, incident_notices, incidents, recovery
from recoverctl.catalog.incident_escalations import EscalationClaim
from recoverctl.catalog.incidents import Incident, TimelineEntry
from recoverctl.config import Config, Tier
from recoverctl.errors import RecoverctlError
from recoverctl.incidents.ack_links import ack_link
from recoverctl.incidents.policy import Step, due_steps, levels
from recoverctl.notify import Message
from recoverctl.notify.delivery import Delivery, notify_status, send_to_channels, status_pages_covering
from recoverctl.units import human_duration

log = logging.getLogger(__name__)


@dataclass
class TickReport:
    """What one pass did."""

    resolved: list[int] = field(default_factory=list)
    opened: list[int] = field(default_factory=list)
    sent: list[tuple[int, int, int]] = field(default_factory=list)  # (incident, level, repeat)
    status: list[tuple[int, str]] = field(default_factory=list)  # (incident, state posted)


def tick(
    cfg: Config, catalog: Catalog, owner: str, *, check_sources: bool = True, now: float | None = None
) -> TickReport:
    """Run one pass of the escalation loop as runner `owner`, at `now` (default: the clock);
    return what it did. Raise CatalogError when the catalog is unreachable (the caller retries)."""
    report = TickReport()
    lease = cfg.incidents.claim_lease
    if check_sources:
        report.opened = check_recovery_points(cfg, catalog, time.time())
    report.resolved = resolve_healthy(cfg, catalog)
    report.status = post_status(cfg, catalog)
    for claim in incident_escalations.take_over_expired(catalog, owner, lease):
        incident = incidents.get_incident(catalog, claim.incident_id)
        step = next(
            (s for s in _steps(cfg, incident, float("inf")) if s.level == claim.level),
            Step(claim.level, claim.repeat, claim.due_at, []),
        )
        _send(cfg, catalog, incident, claim, step.routes, owner)
        report.sent.append((claim.incident_id, claim.level, claim.repeat))
    now = time.time() if now is None else now
    escalating = incident_escalations.escalating(catalog)
    taken = incident_escalations.escalation_steps_taken(catalog, [i.id for i in escalating])
    for incident in escalating:
        for step in _steps(cfg, incident, now):
            if (step.level, step.repeat) in taken[incident.id]:
                continue
            mine = incident_escalations.claim_escalation(
                catalog, incident.id, step.level, step.repeat, step.due_at, owner, lease
            )
            if mine is None:
                continue  # another runner sends it, or the incident was just acknowledged
            _send(cfg, catalog, incident, mine, step.routes, owner)
            report.sent.append((incident.id, step.level, step.repeat))
    return report


def _steps(cfg: Config, incident: Incident, now: float) -> list[Step]:
    return due_steps(levels(cfg, incident.severity), incident.opened_at, now)


def _send(
    cfg: Config, catalog: Catalog, incident: Incident, claim: EscalationClaim, routes: list[str], owner: str
) -> None:
    """Send escalation step `claim` of `incident` to `routes`, record it on the timeline and mark
    it sent."""
    link = ack_link(cfg, incident.id)
    again = f" (repeat {claim.repeat})" if claim.repeat else ""
    summary = f"incident #{incident.id} escalated to level {claim.level}{again}: {incident.title}"
    details: dict[str, Any] = {
        "incident_id": incident.id,
        "level": claim.level,
        "repeat": claim.repeat,
        "routes": routes,
        "state": incident.state,
    }
    if link:
        details["url"] = link  # every channel shows it as the message's link
    told: list[str] = []
    if (claim.level, claim.repeat) == (1, 0):
        # The incident's first event may have reached some channels by its route already.
        told = incident_notices.first_event_channels(catalog, incident.id)
    rest = [r for r in routes if r not in told]
    deliveries = _tell(cfg, catalog, incident, "incident.escalated", summary, details, rest) if rest else []
    result: dict[str, Any] = {
        "deliveries": [{"channel": d.channel, "status": d.status, "attempts": d.attempts} for d in deliveries]
    }
    if told:
        result["told_by_first_event"] = told
    if not deliveries:
        result["note"] = (
            "the incident's first event reached this level's channels already"
            if told
            else "no notification channel is routed for this level"
        )
    incident_escalations.finish_escalation(catalog, claim, owner, result)
    log.info("%s: %s", summary, ", ".join(f"{d.channel} {d.status}" for d in deliveries) or "no channels")


def _tell(
    cfg: Config,
    catalog: Catalog,
    incident: Incident,
    kind: str,
    summary: str,
    details: dict[str, Any],
    routes: list[str],
) -> list[Delivery]:
    """Record the event `kind` of `incident` and send it to `routes`; return the deliveries."""
    event_id = incident_escalations.incident_event(catalog, incident, kind, summary, details)
    message = Message(
        severity=incident.severity,
        kind=kind,
        summary=summary,
        subject=incident.subject,
        details=details,
        dedup_key=f"recoverctl/incident/{incident.id}",
        event_id=event_id,
    )
    known = [r for r in routes if r in cfg.notifications.channels]
    return send_to_channels(cfg, catalog, message, known)


def announce_resolution(cfg: Config, catalog: Catalog, incident: Incident) -> list[Delivery]:
    """Tell every channel an escalation of `incident` (or its first event) reached that it is
    resolved (PagerDuty resolves its incident of the same key); return the deliveries."""
    channels = list(
        dict.fromkeys(
            [
                *incident_escalations.notified_channels(catalog, incident.id),
                *incident_notices.first_event_channels(catalog, incident.id),
            ]
        )
    )
    if not channels:
        return []
    summary = f"incident #{incident.id} resolved by {incident.resolved_by}: {incident.resolution}"
    details = {"incident_id": incident.id, "resolve": True}
    return _tell(cfg, catalog, incident, "incident.resolved", summary, details, channels)


def post_status(cfg: Config, catalog: Catalog) -> list[tuple[int, str]]:
    """Tell the status pages covering each incident's service the state the incident gives it
    (degraded while open, major outage once its rollback failed, operational when resolved), each
    state once per incident; return the (incident, state) pairs posted.

    Incidents are the only driver of status pages: events about a service join its incident, so
    users read one "degraded" and one "operational" per incident, not one per event. A runner
    killed between the claim and the send leaves that state unposted (never posted twice)."""
    if not any(ch.type == "status_page" and ch.on_events for ch in cfg.notifications.channels.values()):
        return []
    posted: list[tuple[int, str]] = []
    for due in incident_notices.status_notices_due(catalog):
        service = due.incident.subject
        if not service or not status_pages_covering(cfg, service, by_incident=True):
            continue
        said = f"status pages told {service} is {due.state.replace('_', ' ')}"
        if not incident_notices.claim_status_notice(catalog, due.incident.id, due.state, said):
            continue
        key = f"recoverctl/incident/{due.incident.id}"
        notify_status(cfg, catalog, service, due.state, incident_key=key, by_incident=True)
        posted.append((due.incident.id, due.state))
    return posted


def resolve_healthy(cfg: Config, catalog: Catalog) -> list[int]:
    """Resolve every active incident whose alerts are resolved and whose actions ended healthy;
    return their ids."""
    done: list[int] = []
    for p in incidents.progress_of_active(catalog):
        if not p.healthy:
            continue
        why = "its alerts resolved" if p.incident.kind == "alert" else "recovery reported"
        if p.rollback_state == "succeeded":
            why += " and the rollback was verified healthy"
        try:
            resolved = incidents.resolve(catalog, p.incident.id, "recoverctl", why, automatic=True)
        except incidents.IncidentStateError:
            continue  # another runner resolved it a moment ago
        announce_resolution(cfg, catalog, resolved)
        done.append(p.incident.id)
    return done


def check_recovery_points(cfg: Config, catalog: Catalog, now: float) -> list[int]:
    """Open an incident for every configured source whose RPO exposure is past its tier's target
    or whose newest WAL archive attempt failed; note the recovery on an open one when it is back
    under target. Return the ids of the incidents opened."""
    opened: list[int] = []
    for name, source in cfg.sources.items():
        tier: Tier = getattr(source, "tier", "critical")
        target = cfg.targets.for_tier(tier).rpo
        severity = "critical" if tier == "critical" else "warning"
        wal = recovery.wal_progress(catalog, name)
        exposure = recovery.rpo_exposure(catalog, name, now).exposure_s
        if wal is not None and wal.failing:
            title = f"WAL archiving of '{name}' fails (segment {wal.last_failed_segment})"
            found, new = incidents.open_for_subject(
                catalog,
                "wal.archive_failed",
                severity,
                name,
                "source",
                title,
                {"segment": wal.last_failed_segment},
            )
            opened += [found] if new else []
        elif exposure is not None and exposure > target:
            title = (
                f"RPO exposure of '{name}' is {human_duration(exposure)}, "
                f"past its {tier} target of {human_duration(target)}"
            )
            found, new = incidents.open_for_subject(
                catalog,
                "rpo.exceeded",
                severity,
                name,
                "source",
                title,
                {"exposure_s": round(exposure, 1), "target_s": target, "tier": tier},
            )
            opened += [found] if new else []
        elif exposure is not None:
            _note_recovered(catalog, name, exposure, target)
    return opened


def _note_recovered(catalog: Catalog, source: str, exposure: float, target: float) -> None:
    for inc in incidents.list_incidents(catalog, states=incidents.ACTIVE_STATES):
        if inc.subject == source and inc.kind in ("rpo.exceeded", "wal.archive_failed"):
            incidents.note(
                catalog,
                inc.id,
                TimelineEntry(
                    time.time(),
                    "rpo.recovered",
                    f"RPO exposure of '{source}' back to {human_duration(exposure)} "
                    f"(target {human_duration(target)})",
                    {"exposure_s": round(exposure, 1), "target_s": target},
                ),
            )


@dataclass
class EscalationPace:
    """How often a long-running process runs the escalation pass: every `every` seconds, with
    sources' recovery points checked every `incidents.rpo_check_every`."""

    cfg: Config
    catalog: Catalog
    owner: str
    every: float = 1.0
    _next_pass: float = 0.0
    _next_sources: float = 0.0

    def run_if_due(self, now: float | None = None) -> TickReport | None:
        """Run a pass when one is due; return its report, or None. Errors are logged, never raised:
        escalation must not take the worker or the scheduler down."""
        now = time.monotonic() if now is None else now
        if now < self._next_pass:
            return None
        self._next_pass = now + self.every
        sources = now >= self._next_sources
        if sources:
            self._next_sources = now + self.cfg.incidents.rpo_check_every
        try:
            return tick(self.cfg, self.catalog, self.owner, check_sources=sources)
        except RecoverctlError as e:
            log.warning("incident escalation pass failed, retrying: %s", e)
            return None
        except Exception:
            # A bug here must not stop the worker's jobs or the scheduler's schedules.
            log.exception("incident escalation pass crashed")
            return None
