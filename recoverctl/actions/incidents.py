"""Use cases of incidents: list them, show one with its timeline, acknowledge (from the CLI or an
acknowledgement link), resolve by hand, and draft the post-incident report."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from recoverctl.catalog import Catalog, actor, incidents
from recoverctl.catalog.incidents import Incident, TimelineEntry
from recoverctl.catalog.wal import with_wal_gaps
from recoverctl.config import Config
from recoverctl.errors import UsageError
from recoverctl.incidents import ack_links
from recoverctl.incidents.escalation import announce_resolution
from recoverctl.incidents.report import REPORT_FORMATS, ReportFacts, render_report

_SERVICE_TYPES = ("service",)
_SOURCE_TYPES = ("source",)


def iso(at: float | None) -> str | None:
    """Return `at` (Unix seconds) as ISO 8601 UTC with milliseconds, or None."""
    return None if at is None else datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class IncidentView:
    """An incident as `recoverctl incidents` lists it."""

    id: int
    state: str
    severity: str
    kind: str
    title: str
    service: str | None
    source: str | None
    subject: str | None
    opened_at: str
    acknowledged_at: str | None
    acknowledged_by: str | None
    resolved_at: str | None
    resolved_by: str | None
    resolution: str | None
    escalation_level: int
    time_to_acknowledge_s: float | None
    time_to_resolve_s: float | None

    @classmethod
    def of(cls, i: Incident) -> IncidentView:
        def since_open(at: float | None) -> float | None:
            return None if at is None else round(at - i.opened_at, 3)

        return cls(
            id=i.id,
            state=i.state,
            severity=i.severity,
            kind=i.kind,
            title=i.title,
            service=i.subject if i.subject_type in _SERVICE_TYPES else None,
            source=i.subject if i.subject_type in _SOURCE_TYPES else None,
            subject=i.subject,
            opened_at=iso(i.opened_at) or "",
            acknowledged_at=iso(i.acknowledged_at),
            acknowledged_by=i.acknowledged_by,
            resolved_at=iso(i.resolved_at),
            resolved_by=i.resolved_by,
            resolution=i.resolution,
            escalation_level=i.escalation_level,
            time_to_acknowledge_s=since_open(i.acknowledged_at),
            time_to_resolve_s=since_open(i.resolved_at),
        )


@dataclass(frozen=True)
class TimelineItem:
    """One moment of the timeline: when (and how long after opening), what, and its details."""

    at: str
    offset_s: float
    kind: str
    summary: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class IncidentDetail:
    """An incident with its whole timeline (`recoverctl incidents show N`)."""

    incident: IncidentView
    timeline: list[TimelineItem]

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self.incident), "timeline": [asdict(t) for t in self.timeline]}


def _items(incident: Incident, entries: list[TimelineEntry]) -> list[TimelineItem]:
    return [
        TimelineItem(iso(e.at) or "", round(e.at - incident.opened_at, 3), e.kind, e.summary, e.details)
        for e in entries
    ]


def list_incidents(catalog: Catalog, *, state: str | None = None, limit: int = 100) -> list[IncidentView]:
    """Return incidents, newest first; `state` "active" means open, acknowledged or reopened."""
    states = incidents.ACTIVE_STATES if state == "active" else (state,) if state else None
    return [IncidentView.of(i) for i in incidents.list_incidents(catalog, states=states, limit=limit)]


def show_incident(catalog: Catalog, incident_id: int) -> IncidentDetail:
    """Return incident `incident_id` with its timeline; raise NotFoundError."""
    incident = incidents.get_incident(catalog, incident_id)
    entries = with_wal_gaps(catalog, incident, incidents.timeline(catalog, incident_id))
    return IncidentDetail(IncidentView.of(incident), _items(incident, entries))


def acknowledge_incident(
    catalog: Catalog, incident_id: int, by: str | None, via: str = "cli"
) -> IncidentView:
    """Acknowledge incident `incident_id` as `by` (default: who runs this), which stops its
    escalation; return it. Raise NotFoundError, or IncidentStateError when it is resolved."""
    who = by or actor()
    incident = incidents.acknowledge(catalog, incident_id, who, via)
    catalog.audit("incident.acknowledge", f"incident:{incident_id}", "succeeded", {"via": via}, who=who)
    return IncidentView.of(incident)


def resolve_incident(
    cfg: Config, catalog: Catalog, incident_id: int, note: str, by: str | None = None
) -> IncidentView:
    """Resolve incident `incident_id` by hand with `note`, telling the channels its escalation
    reached; return it. Raise NotFoundError, or IncidentStateError when it is resolved already."""
    if not note.strip():
        raise UsageError("a resolution note is required", hint='--note "what was done"')
    who = by or actor()
    incident = incidents.resolve(catalog, incident_id, who, note)
    catalog.audit("incident.resolve", f"incident:{incident_id}", "succeeded", {"note": note}, who=who)
    announce_resolution(cfg, catalog, incident)
    return IncidentView.of(incident)


@dataclass(frozen=True)
class AckLinkCheck:
    """Whether an acknowledgement link is valid, and for which incident."""

    incident: IncidentView | None
    problem: str | None


def check_ack_link(cfg: Config, catalog: Catalog, incident_id: int, token: str) -> AckLinkCheck:
    """Return the incident an acknowledgement link names when its token is valid, else why not
    (nothing is changed)."""
    key = ack_links.ack_key(cfg)
    if key is None:
        return AckLinkCheck(None, "acknowledgement links are not enabled on this server")
    problem = ack_links.token_problem(key, incident_id, token)
    if problem is not None:
        return AckLinkCheck(None, problem)
    return AckLinkCheck(IncidentView.of(incidents.get_incident(catalog, incident_id)), None)


def acknowledge_by_link(
    cfg: Config, catalog: Catalog, incident_id: int, token: str, by: str | None, peer: str
) -> AckLinkCheck:
    """Acknowledge incident `incident_id` through an acknowledgement link; return the incident,
    or why the link does not acknowledge it."""
    checked = check_ack_link(cfg, catalog, incident_id, token)
    if checked.problem is not None:
        return checked
    who = (by or "").strip()[:100] or f"link from {peer}"
    try:
        return AckLinkCheck(acknowledge_incident(catalog, incident_id, who, via="link"), None)
    except incidents.IncidentStateError as e:
        return AckLinkCheck(checked.incident, e.message)


@dataclass(frozen=True)
class IncidentReport:
    """A drafted post-incident report: its format, text and where it was written (if anywhere)."""

    incident_id: int
    format: str
    text: str
    path: str | None

    def to_json(self) -> dict[str, Any]:
        return {"incident_id": self.incident_id, "format": self.format, "path": self.path}


def draft_report(catalog: Catalog, incident_id: int, fmt: str, output: Path | None) -> IncidentReport:
    """Draft the post-incident report of incident `incident_id` in `fmt` (md, html or json),
    written to `output` when given; return it. Raise NotFoundError, UsageError."""
    if fmt not in REPORT_FORMATS:
        raise UsageError(f"unknown report format '{fmt}'", hint=f"use one of: {', '.join(REPORT_FORMATS)}")
    detail = show_incident(catalog, incident_id)
    facts = ReportFacts.gather(catalog, detail.incident, detail.timeline)
    text = render_report(facts, detail.to_json(), fmt)
    if output is not None:
        output.write_text(text)
    return IncidentReport(incident_id, fmt, text, str(output) if output is not None else None)
