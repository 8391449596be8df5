"""What the weekly and monthly reports add to a summary: each drill's RTO/RPO over the period
with its direction, and every target the period missed.

Pure functions over the rows the summary already read (plus, per drill, the last drill before
the period as the baseline a trend starts from).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from recoverctl.catalog.incidents import ACTIVE_STATES, Incident

# A change smaller than this share of the earlier value is "steady": drill timings jitter.
STEADY_SHARE = 0.10

Direction = Literal["improving", "worsening", "steady", "first measurement"]


@dataclass(frozen=True)
class DrillPoint:
    """One drill's measurement, as a trend reads it."""

    name: str
    source: str | None
    started_at: float
    verdict: str | None
    rto_s: float | None
    rpo_s: float | None
    rto_target_s: float | None
    rpo_target_s: float | None
    reason: str | None


@dataclass(frozen=True)
class DrillTrend:
    """RTO and RPO of one drill (playbook name + source) over the period, oldest first; the
    baseline is the last drill before the period, when there was one."""

    name: str
    source: str | None
    rto_s: list[float | None]
    rpo_s: list[float | None]
    baseline_rto_s: float | None
    baseline_rpo_s: float | None
    rto_direction: Direction
    rpo_direction: Direction


@dataclass(frozen=True)
class TargetMiss:
    """A target the period missed: what, about which drill or source, when, and by how much."""

    what: str  # drill RTO / drill RPO / drill failed / RPO exposure
    subject: str
    at: float | None
    detail: str


def direction(values: Sequence[float | None]) -> Direction:
    """Given measurements oldest first (lower is better), return where the newest stands against
    the earliest."""
    known = [v for v in values if v is not None]
    if len(known) < 2:
        return "first measurement"
    first, last = known[0], known[-1]
    if abs(last - first) <= STEADY_SHARE * max(first, 1e-9):
        return "steady"
    return "improving" if last < first else "worsening"


def drill_trend(points: Sequence[DrillPoint], baseline: DrillPoint | None) -> DrillTrend:
    """Given one drill's points in the period (oldest first, at least one) and the drill before
    the period, return its trend."""
    rto = [p.rto_s for p in points]
    rpo = [p.rpo_s for p in points]
    before_rto = baseline.rto_s if baseline else None
    before_rpo = baseline.rpo_s if baseline else None
    return DrillTrend(
        points[0].name,
        points[0].source,
        rto,
        rpo,
        before_rto,
        before_rpo,
        direction([before_rto, *rto]),
        direction([before_rpo, *rpo]),
    )


def drill_misses(points: Sequence[DrillPoint], age: Callable[[float], str]) -> list[TargetMiss]:
    """Return the drills that failed or measured an RTO or RPO over their target (durations
    written with `age`)."""
    out: list[TargetMiss] = []
    for p in points:
        subject = f"{p.name} [{p.source or '-'}]"
        if p.verdict == "fail":
            out.append(TargetMiss("drill failed", subject, p.started_at, p.reason or "no reason recorded"))
        for what, got, target in (
            ("drill RTO", p.rto_s, p.rto_target_s),
            ("drill RPO", p.rpo_s, p.rpo_target_s),
        ):
            if got is not None and target is not None and got > target:
                out.append(TargetMiss(what, subject, p.started_at, f"{age(got)} over target {age(target)}"))
    return out


@dataclass(frozen=True)
class OpenIncident:
    """An incident still active when the report was made."""

    id: int
    state: str
    severity: str
    title: str
    opened_at: float


@dataclass(frozen=True)
class IncidentTally:
    """Incidents in a period: how many opened and resolved, the mean time to acknowledge (of those
    acknowledged in it) and to recover (opening to resolution, of those resolved in it), and the
    ones still open."""

    opened: int
    resolved: int
    mean_time_to_acknowledge_s: float | None
    mean_time_to_recover_s: float | None
    still_open: list[OpenIncident]


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def incident_tally(found: list[Incident], since: float, until: float) -> IncidentTally:
    """Given the incidents touching [since, until) (`catalog.incidents.incidents_in_period`),
    return their tally."""

    def within(at: float | None) -> bool:
        return at is not None and since <= at <= until

    acked = [
        i.acknowledged_at - i.opened_at for i in found if i.acknowledged_at and within(i.acknowledged_at)
    ]
    recovered = [i.resolved_at - i.opened_at for i in found if i.resolved_at and within(i.resolved_at)]
    return IncidentTally(
        opened=sum(within(i.opened_at) for i in found),
        resolved=len(recovered),
        mean_time_to_acknowledge_s=_mean(acked),
        mean_time_to_recover_s=_mean(recovered),
        still_open=[
            OpenIncident(i.id, i.state, i.severity, i.title, i.opened_at)
            for i in found
            if i.state in ACTIVE_STATES
        ],
    )
