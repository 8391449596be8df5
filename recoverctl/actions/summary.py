"""Daily, weekly and monthly summaries: backups, RPO exposure, drills vs targets (with each
drill's RTO/RPO trend), deploys, rollbacks, targets missed, scheduled jobs, failed notifications
and the info events collected since the last summary.

The weekly and monthly ones are the runbook's business reports ("weekly executive summary
emails", "monthly detailed reports"). Other capabilities add sections through `EXTRA_SECTIONS`.
"""

from __future__ import annotations

import html
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from recoverctl.actions.summary_trends import (
    DrillPoint,
    DrillTrend,
    IncidentTally,
    TargetMiss,
    drill_misses,
    drill_trend,
    incident_tally,
)
from recoverctl.catalog import Catalog
from recoverctl.catalog.drills import DrillRecord, drills_since, newest_drills
from recoverctl.catalog.events import info_events_since, mark_delivered, problem_counts_since
from recoverctl.catalog.incidents import incidents_in_period
from recoverctl.catalog.jobs import occurrence_counts
from recoverctl.catalog.notifications import failed_deliveries_since
from recoverctl.catalog.recovery import rpo_exposure
from recoverctl.catalog.releases import releases_since_in
from recoverctl.catalog.rollbacks import rollbacks_since_in
from recoverctl.catalog.runs import backups_since
from recoverctl.config import Config
from recoverctl.errors import ConfigError
from recoverctl.notify import Message
from recoverctl.notify.delivery import Delivery, channels_for, send_to_channels
from recoverctl.units import human_duration, human_size

PERIODS = {"daily": 86400.0, "weekly": 7 * 86400.0}
REPORT_PERIODS = ("weekly", "monthly")  # the ones with trends and targets missed


def period_start(period: str, now: float) -> float:
    """Given daily, weekly or monthly, return when the period ending `now` began: a day or a
    week back, or the same time on the same day of the previous calendar month (the last day of
    that month when it is shorter: the report sent on the 1st covers the month before)."""
    if period in PERIODS:
        return now - PERIODS[period]
    if period != "monthly":
        raise ValueError(f"unknown summary period '{period}'")
    end = datetime.fromtimestamp(now, UTC)
    year, month = (end.year, end.month - 1) if end.month > 1 else (end.year - 1, 12)
    for day in range(end.day, 27, -1) if end.day > 28 else [end.day]:
        try:
            return end.replace(year=year, month=month, day=day).timestamp()
        except ValueError:
            continue  # 31 March -> 30, 29, 28 February
    raise AssertionError("every month has 28 days")


@dataclass(frozen=True)
class ExtraSection:
    """A section another capability adds to every summary."""

    title: str
    lines: list[str]


# The extension point for sections other capabilities add. Each provider gets (catalog, since,
# until) and returns its section, or None when it has nothing to say.
SectionProvider = Callable[[Catalog, float, float], ExtraSection | None]
EXTRA_SECTIONS: tuple[SectionProvider, ...] = ()


def _ts(value: float | None) -> str:
    if value is None:
        return "never"
    return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _age(seconds: float | None) -> str:
    return "n/a" if seconds is None else human_duration(seconds)


@dataclass
class BackupTally:
    """The backup runs of one source in the period."""

    source: str
    succeeded: int = 0
    failed: int = 0
    bytes_added: int = 0
    bytes_read: int = 0
    errors: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ExposureLine:
    source: str
    tier: str
    last_recovery_point: float | None
    exposure_s: float | None
    rpo_target_s: float
    ok: bool


# One drill in the period (the trend module's point).
DrillLine = DrillPoint


@dataclass(frozen=True)
class DeployLine:
    service: str
    version: str
    status: str
    at: float


@dataclass(frozen=True)
class RollbackLine:
    service: str
    state: str
    reason: str | None
    at: float


@dataclass(frozen=True)
class FailedNotification:
    channel: str
    type: str
    at: float
    error: str | None


@dataclass(frozen=True)
class InfoEvent:
    at: float
    kind: str
    subject: str | None
    summary: str


@dataclass(frozen=True)
class PlannedDelivery:
    """A channel a dry run would send the summary to."""

    channel: str
    status: str = "would-send"


@dataclass
class Summary:
    """What happened in one period; `text` and `deliveries` once built and sent by `summary`."""

    period: str
    since: float
    until: float
    backups: list[BackupTally]
    rpo_exposure: list[ExposureLine]
    drills: list[DrillLine]
    deploys: list[DeployLine]
    rollbacks: list[RollbackLine]
    scheduled_jobs: dict[str, dict[str, int]]
    failed_notifications: list[FailedNotification]
    alerts: dict[str, int]
    info_events: list[InfoEvent]
    # weekly and monthly only (empty for daily): per drill its trend, and every target missed
    drill_trends: list[DrillTrend] = field(default_factory=list)
    targets_missed: list[TargetMiss] = field(default_factory=list)
    incidents: IncidentTally | None = None
    extra_sections: list[ExtraSection] = field(default_factory=list)
    text: str = ""
    deliveries: list[Delivery | PlannedDelivery] = field(default_factory=list)


def _backups(catalog: Catalog, since: float) -> list[BackupTally]:
    tallies: dict[str, BackupTally] = {}
    for r in backups_since(catalog, since):
        b = tallies.setdefault(r.source or "-", BackupTally(r.source or "-"))
        if r.status == "succeeded":
            b.succeeded += 1
            b.bytes_added += r.bytes_added or 0
            b.bytes_read += r.bytes_read or 0
        elif r.status in ("failed", "partial"):
            b.failed += 1
            if r.error:
                b.errors.append(r.error[:200])
    return sorted(tallies.values(), key=lambda b: b.source)


def _exposure(cfg: Config, catalog: Catalog, now: float) -> list[ExposureLine]:
    out = []
    for name, src in cfg.sources.items():
        measured = rpo_exposure(catalog, name, now)
        target = cfg.targets.for_tier(src.tier).rpo
        age = measured.exposure_s
        out.append(
            ExposureLine(name, src.tier, measured.point.at, age, target, age is not None and age <= target)
        )
    return out


def _point(d: DrillRecord) -> DrillPoint:
    return DrillPoint(
        name=d.name,
        source=d.source,
        started_at=d.started_at,
        verdict=d.verdict,
        rto_s=d.rto_s,
        rpo_s=d.rpo_s,
        rto_target_s=d.rto_target_s,
        rpo_target_s=d.rpo_target_s,
        reason=d.reason,
    )


def _drills(catalog: Catalog, since: float) -> list[DrillLine]:
    return [_point(d) for d in drills_since(catalog, since)]


def _trends(catalog: Catalog, drills: list[DrillLine], since: float) -> list[DrillTrend]:
    """Return each drill's trend over `drills` (oldest first), from the last one before `since`."""
    groups: dict[tuple[str, str | None], list[DrillLine]] = {}
    for d in drills:
        if d.verdict in ("pass", "fail"):
            groups.setdefault((d.name, d.source), []).append(d)
    trends = []
    for (name, source), points in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")):
        before = [
            r
            for r in newest_drills(catalog, name=name, source=source, limit=len(points) + 5)
            if r.started_at < since and r.verdict in ("pass", "fail") and r.source == source
        ]
        trends.append(drill_trend(points, _point(before[0]) if before else None))
    return trends


def _targets_missed(drills: list[DrillLine], exposure: list[ExposureLine]) -> list[TargetMiss]:
    misses = drill_misses(drills, _age)
    for e in exposure:
        if not e.ok:
            now_at = (
                f"{_age(e.exposure_s)} since the last recovery point"
                if e.exposure_s is not None
                else "never backed up"
            )
            misses.append(
                TargetMiss(
                    "RPO exposure",
                    e.source,
                    e.last_recovery_point,
                    f"{now_at} (target {_age(e.rpo_target_s)})",
                )
            )
    return misses


def _scheduled_jobs(catalog: Catalog, since: float) -> dict[str, dict[str, int]]:
    with catalog.begin() as conn:
        return occurrence_counts(conn, since)


def _releases_and_rollbacks(catalog: Catalog, since: float) -> tuple[list[DeployLine], list[RollbackLine]]:
    with catalog.begin() as conn:
        deploys = [
            DeployLine(r.service, r.version, r.status, r.created_at) for r in releases_since_in(conn, since)
        ]
        rollbacks = [
            RollbackLine(r.service, r.state, r.reason, r.started_at) for r in rollbacks_since_in(conn, since)
        ]
    return deploys, rollbacks


def _failed_notifications(catalog: Catalog, since: float) -> list[FailedNotification]:
    return [
        FailedNotification(n.channel, n.channel_type, n.at, n.error)
        for n in failed_deliveries_since(catalog, since)
    ]


def collect(cfg: Config, catalog: Catalog, period: str, now: float | None = None) -> Summary:
    """Given daily, weekly or monthly, return the summary data for the period ending now."""
    now = time.time() if now is None else now
    since = period_start(period, now)
    deploys, rollbacks = _releases_and_rollbacks(catalog, since)
    drills = _drills(catalog, since)
    exposure = _exposure(cfg, catalog, now)
    data = Summary(
        period=period,
        since=since,
        until=now,
        backups=_backups(catalog, since),
        rpo_exposure=exposure,
        drills=drills,
        deploys=deploys,
        rollbacks=rollbacks,
        scheduled_jobs=_scheduled_jobs(catalog, since),
        failed_notifications=_failed_notifications(catalog, since),
        alerts=problem_counts_since(catalog, since),
        info_events=[
            InfoEvent(e.at, e.kind, e.subject, e.summary) for e in info_events_since(catalog, since)
        ],
    )
    if period in REPORT_PERIODS:
        data.drill_trends = _trends(catalog, drills, since)
        data.targets_missed = _targets_missed(drills, exposure)
        data.incidents = incident_tally(incidents_in_period(catalog, since, now), since, now)
    data.extra_sections = [x for x in (p(catalog, since, now) for p in EXTRA_SECTIONS) if x is not None]
    return data


def _backup_lines(d: Summary) -> list[str]:
    return [
        f"{b.source}: {b.succeeded} done, {b.failed} failed, {human_size(b.bytes_added or 0)} added"
        + (f" (last error: {b.errors[-1]})" if b.errors else "")
        for b in d.backups
    ] or ["no backups ran in this period"]


def _exposure_lines(d: Summary) -> list[str]:
    return [
        f"{e.source} ({e.tier}): {_age(e.exposure_s)} since the last recovery point "
        f"(target {_age(e.rpo_target_s)}) {'OK' if e.ok else 'OVER TARGET'}"
        for e in d.rpo_exposure
    ] or ["no sources configured"]


def _drill_line(x: DrillLine) -> str:
    rto = f"RTO {_age(x.rto_s)} (target {_age(x.rto_target_s)})" if x.rto_s is not None else "RTO n/a"
    rpo = f"RPO {_age(x.rpo_s)} (target {_age(x.rpo_target_s)})" if x.rpo_s is not None else "RPO n/a"
    return f"{x.name} [{x.source or '-'}] {x.verdict}: {rto}, {rpo}" + (f" — {x.reason}" if x.reason else "")


def _change_lines(d: Summary) -> list[str]:
    lines = [f"deploy {x.service} {x.version} ({x.status}) at {_ts(x.at)}" for x in d.deploys] + [
        f"rollback {x.service}: {x.state} — {x.reason or ''}" for x in d.rollbacks
    ]
    if not lines:
        return ["none"]
    if d.period not in REPORT_PERIODS:
        return lines
    failed = sum(x.status == "failed" for x in d.deploys)
    rolled = sum(x.state == "succeeded" for x in d.rollbacks)
    totals = (
        f"{len(d.deploys)} deploy(s), {failed} failed; {len(d.rollbacks)} rollback(s), {rolled} succeeded"
    )
    return [totals, *lines]


def _series(before: float | None, values: list[float | None]) -> str:
    shown = [_age(v) for v in values]
    return (f"({_age(before)}) → " if before is not None else "") + " → ".join(shown)


def _trend_lines(d: Summary) -> list[str]:
    return [
        f"{x.name} [{x.source or '-'}]: RTO {_series(x.baseline_rto_s, x.rto_s)} ({x.rto_direction}); "
        f"RPO {_series(x.baseline_rpo_s, x.rpo_s)} ({x.rpo_direction})"
        for x in d.drill_trends
    ] or ["no scored drills in this period"]


def _miss_lines(d: Summary) -> list[str]:
    return [
        f"{m.what} {m.subject}" + (f" at {_ts(m.at)}" if m.at is not None else "") + f": {m.detail}"
        for m in d.targets_missed
    ] or ["none: every drill and source met its targets"]


def _job_lines(d: Summary) -> list[str]:
    return [
        f"{name}: " + ", ".join(f"{n} {state}" for state, n in sorted(states.items()))
        for name, states in sorted(d.scheduled_jobs.items())
    ] or ["no scheduled runs"]


def _alert_lines(d: Summary) -> list[str]:
    return [f"{n} {sev} event(s)" for sev, n in sorted(d.alerts.items())] + [
        f"FAILED notification via {n.channel} at {_ts(n.at)}: {n.error}" for n in d.failed_notifications
    ] or ["no alerts; every notification was delivered"]


def _incident_lines(d: Summary) -> list[str]:
    x = d.incidents
    if x is None or not (x.opened or x.resolved or x.still_open):
        return ["no incidents in this period"]
    lines = [
        f"{x.opened} opened, {x.resolved} resolved; mean time to acknowledge "
        f"{_age(x.mean_time_to_acknowledge_s)}, mean time to recover {_age(x.mean_time_to_recover_s)}"
    ]
    return lines + [
        f"#{i.id} still {i.state} ({i.severity}) since {_ts(i.opened_at)}: {i.title}" for i in x.still_open
    ]


def _sections(d: Summary) -> list[tuple[str, list[str]]]:
    out = [
        ("Backups", _backup_lines(d)),
        ("RPO exposure", _exposure_lines(d)),
        ("Restore drills", [_drill_line(x) for x in d.drills] or ["no drills in this period"]),
    ]
    if d.period in REPORT_PERIODS:
        out.append(("RTO/RPO trend (previous drill in brackets)", _trend_lines(d)))
    out.append(("Deploys and rollbacks", _change_lines(d)))
    if d.period in REPORT_PERIODS:
        out.append(("Incidents", _incident_lines(d)))
        out.append(("Targets missed", _miss_lines(d)))
    out += [
        ("Scheduled jobs", _job_lines(d)),
        ("Alerts and notifications", _alert_lines(d)),
        *((x.title, x.lines) for x in d.extra_sections),
    ]
    if d.info_events:
        out.append(
            ("Other events", [f"{_ts(e.at)} {e.kind} {e.subject or ''}: {e.summary}" for e in d.info_events])
        )
    return out


def title(d: Summary) -> str:
    return f"recoverctl {d.period} summary {_ts(d.since)} to {_ts(d.until)}"


def render_text(d: Summary) -> str:
    lines = [title(d), ""]
    for head, items in _sections(d):
        lines += [head, *[f"  - {i}" for i in items], ""]
    return "\n".join(lines).rstrip()


def render_html(d: Summary) -> str:
    parts = [f"<html><body><h2>{html.escape(title(d))}</h2>"]
    for head, items in _sections(d):
        bad = any("FAILED" in i or "OVER TARGET" in i or " fail" in i or "worsening" in i for i in items)
        if head == "Targets missed":
            bad = bool(d.targets_missed)
        cls = " style='color:#b00020'" if bad else ""
        parts.append(f"<h3{cls}>{html.escape(head)}</h3><ul>")
        parts += [f"<li>{html.escape(i)}</li>" for i in items]
        parts.append("</ul>")
    parts.append("</body></html>")
    return "".join(parts)


def summary(cfg: Config, catalog: Catalog, period: str, *, send: bool, dry_run: bool = False) -> Summary:
    """Build the daily, weekly or monthly summary; with send, deliver it to the info route's
    channels (`notifications.routes.info`, or the runbook's: email, Slack #monitoring); return
    data + deliveries.

    Raise ConfigError when sending and no info route is configured.
    """
    data = collect(cfg, catalog, period)
    data.text = render_text(data)
    if not send:
        return data
    names = channels_for(cfg, "info")
    if not names:
        raise ConfigError(
            "no channels to send the summary to",
            hint="add an email channel, or notifications.routes.info: [<email or slack channel>]",
        )
    if dry_run:
        data.deliveries = [PlannedDelivery(n) for n in names]
        return data
    event_id = catalog.emit_event(f"summary.{period}", "info", None, title(data), None, None)
    mark_delivered(catalog, event_id)
    message = Message(
        severity="info",
        kind=f"summary.{period}",
        summary=title(data),
        event_id=event_id,
        dedup_key=f"recoverctl/summary/{period}/{event_id}",
        text=data.text,
        html=render_html(data),
    )
    data.deliveries = list(send_to_channels(cfg, catalog, message, names))
    return data
