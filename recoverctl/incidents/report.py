"""The post-incident report (runbook "Post-Incident Review"): timeline, impact, resolution steps,
and root-cause and preventive sections pre-filled with what recoverctl knows, marked as a draft.
Markdown and HTML come from the Jinja2 templates beside this module; the HTML is self-contained
(inline CSS, no external URL)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import jinja2

from recoverctl.catalog import Catalog, drills, rollbacks
from recoverctl.units import human_duration

REPORT_FORMATS = ("md", "html", "json")


@dataclass(frozen=True)
class Impact:
    """What the incident cost, as far as recoverctl measured it."""

    first_signal_at: str
    resolved_at: str | None
    duration_s: float | None
    time_to_acknowledge_s: float | None
    time_to_recover_s: float | None  # opening to the verified rollback (or to the resolution)
    service: str | None
    versions: list[str]  # "v2 → v1" per rollback
    sources: list[str]
    data_lost: list[str]


@dataclass(frozen=True)
class ReportFacts:
    """Everything the report says beyond the timeline."""

    impact: Impact
    steps: list[str]
    root_cause: list[str] = field(default_factory=list)
    prevention: list[str] = field(default_factory=list)

    @classmethod
    def gather(cls, catalog: Catalog, incident: Any, timeline: list[Any]) -> ReportFacts:
        """Given an incident view and its timeline items (attributes as `actions.incidents`
        returns them), read what the catalog knows about its rollbacks, drills and sources."""
        rollback_ids = sorted({int(t.details["rollback_id"]) for t in timeline if "rollback_id" in t.details})
        versions, data_lost, root, prevent = [], [], [], []
        steps: list[tuple[float, str]] = []  # (when, what), put in time order below
        recovered_at: float | None = None
        for rid in rollback_ids:
            rb = rollbacks.get_rollback(catalog, rid)
            plan = rb.plan or {}
            versions.append(f"{plan.get('from_version')} → {plan.get('to_version')} ({rb.state})")
            root.append(
                f"release {plan.get('from_version')} of {rb.service} was rolled back: {rb.reason or '-'}"
            )
            prevent.append(f"keep {plan.get('from_version')} out of production until its fix is verified")
            if rb.schema_mode == "pitr":
                point = (plan.get("schema") or {}).get("restore_point")
                data_lost.append(f"writes after restore point {point} were discarded by the PITR rollback")
            elif rb.schema_mode == "downgrade":
                data_lost.append("schema downgraded: data in dropped columns/tables is gone")
            for s in rollbacks.list_steps(catalog, rid):
                took = f" ({s.finished_at - s.started_at:.2f} s)" if s.started_at and s.finished_at else ""
                steps.append((s.started_at or 0.0, f"rollback #{rid}: {s.name} — {s.state}{took}"))
                if s.name == "verify" and s.state == "done" and s.finished_at:
                    recovered_at = s.finished_at
        sources = [incident.source] if incident.source else []
        for t in timeline:
            if "exposure_s" in t.details:
                target = t.details.get("target_s")
                data_lost.append(f"RPO exposure {t.details['exposure_s']} s at {t.at} (target {target} s)")
            if t.kind == "drill.failed":
                data_lost.append(f"drill measured RPO {t.details.get('rpo_s')} s")
            if t.kind.startswith("alert.firing"):
                root.append(f"alert {t.details.get('alertname')} (rule {t.details.get('rule')}): {t.summary}")
            if t.kind in ("acknowledged", "resolved", "decision"):
                steps.append((_epoch(t.at) or 0.0, f"{t.at}: {t.summary}"))
        for source in sources:
            for d in drills.newest_drills(catalog, source=source, limit=5):
                if d.verdict == "fail":
                    root.append(f"drill '{d.name}' of {source} missed its targets: {d.reason}")
        opened = _epoch(incident.opened_at)
        ttr = None
        if recovered_at is not None and opened is not None:
            ttr = round(recovered_at - opened, 3)
        elif incident.time_to_resolve_s is not None:
            ttr = incident.time_to_resolve_s
        impact = Impact(
            first_signal_at=incident.opened_at,
            resolved_at=incident.resolved_at,
            duration_s=incident.time_to_resolve_s,
            time_to_acknowledge_s=incident.time_to_acknowledge_s,
            time_to_recover_s=ttr,
            service=incident.service,
            versions=versions,
            sources=sources,
            data_lost=data_lost or ["none known to recoverctl"],
        )
        prevent.append("add or tighten the alert rule / drill that would have caught this earlier")
        return cls(impact, [what for _, what in sorted(steps, key=lambda x: x[0])], root, prevent)


def _epoch(iso_text: str | None) -> float | None:
    from datetime import datetime

    return datetime.fromisoformat(iso_text).timestamp() if iso_text else None


_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("recoverctl.incidents", "templates"),
    autoescape=jinja2.select_autoescape(enabled_extensions=("html", "html.j2"), default_for_string=False),
    trim_blocks=True,
    lstrip_blocks=True,
    undefined=jinja2.StrictUndefined,
)
_ENV.filters["duration"] = human_duration


def render_report(facts: ReportFacts, incident: dict[str, Any], fmt: str) -> str:
    """Given the report's facts and the incident's JSON (with its timeline), return the report as
    Markdown, self-contained HTML or JSON."""
    if fmt == "json":
        return (
            json.dumps({"draft": True, "incident": incident, **asdict(facts)}, indent=2, default=str) + "\n"
        )
    template = _ENV.get_template("report.md.j2" if fmt == "md" else "report.html.j2")
    return template.render(incident=incident, facts=facts, impact=facts.impact)
