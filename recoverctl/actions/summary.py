"""Daily and weekly summaries: backups, RPO exposure, drills vs targets, deploys, rollbacks,
scheduled jobs, failed notifications and the info events collected since the last summary.
"""

from __future__ import annotations

import html
import time
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from recoverctl.catalog import Catalog
from recoverctl.catalog import tables as t
from recoverctl.catalog.jobs import occurrence_counts
from recoverctl.config import Config
from recoverctl.errors import ConfigError
from recoverctl.notify import Message
from recoverctl.notify.delivery import channels_for, send_to_channels

PERIODS = {"daily": 86400.0, "weekly": 7 * 86400.0}


def _ts(value: float | None) -> str:
    if value is None:
        return "never"
    return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _human_bytes(n: float | None) -> str:
    n = float(n or 0)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def collect(cfg: Config, catalog: Catalog, period: str, now: float | None = None) -> dict[str, Any]:
    """Given 'daily' or 'weekly', return the summary data for the period ending now."""
    now = time.time() if now is None else now
    since = now - PERIODS[period]
    with catalog.begin() as conn:
        backups: dict[str, dict[str, Any]] = {}
        for r in conn.execute(
            sa.select(t.runs).where(t.runs.c.kind.like("backup%"), t.runs.c.started_at >= since)
        ).all():
            b = backups.setdefault(
                r.source or "-",
                {
                    "source": r.source or "-",
                    "succeeded": 0,
                    "failed": 0,
                    "bytes_added": 0,
                    "bytes_read": 0,
                    "errors": [],
                },
            )
            if r.status == "succeeded":
                b["succeeded"] += 1
                b["bytes_added"] += r.bytes_added or 0
                b["bytes_read"] += r.bytes_read or 0
            elif r.status in ("failed", "partial"):
                b["failed"] += 1
                if r.error:
                    b["errors"].append(r.error[:200])
        exposure = []
        wal = {w.source: w for w in conn.execute(sa.select(t.wal_status)).all()}
        for name, src in cfg.sources.items():
            last_ok = conn.execute(
                sa.select(sa.func.max(t.runs.c.finished_at)).where(
                    t.runs.c.kind.like("backup%"), t.runs.c.source == name, t.runs.c.status == "succeeded"
                )
            ).scalar()
            points = [p for p in (last_ok, wal[name].last_archived_at if name in wal else None) if p]
            latest = max(points) if points else None
            target = cfg.targets.for_tier(src.tier).rpo
            age = now - latest if latest else None
            exposure.append(
                {
                    "source": name,
                    "tier": src.tier,
                    "last_recovery_point": latest,
                    "exposure_s": age,
                    "rpo_target_s": target,
                    "ok": age is not None and age <= target,
                }
            )
        drills = [
            {
                "name": d.name,
                "source": d.source,
                "verdict": d.verdict,
                "rto_s": d.rto_s,
                "rpo_s": d.rpo_s,
                "rto_target_s": d.rto_target_s,
                "rpo_target_s": d.rpo_target_s,
                "started_at": d.started_at,
                "reason": d.reason,
            }
            for d in conn.execute(
                sa.select(t.drills).where(t.drills.c.started_at >= since).order_by(t.drills.c.started_at)
            ).all()
        ]
        deploys = [
            {"service": r.service, "version": r.version, "status": r.status, "at": r.created_at}
            for r in conn.execute(
                sa.select(t.releases)
                .where(t.releases.c.created_at >= since)
                .order_by(t.releases.c.created_at)
            ).all()
        ]
        rollbacks = [
            {"service": r.service, "state": r.state, "reason": r.reason, "at": r.started_at}
            for r in conn.execute(
                sa.select(t.rollbacks)
                .where(t.rollbacks.c.started_at >= since)
                .order_by(t.rollbacks.c.started_at)
            ).all()
        ]
        jobs = occurrence_counts(conn, since)
        failed_notifications = [
            {"channel": n.channel, "type": n.channel_type, "at": n.at, "error": n.error}
            for n in conn.execute(
                sa.select(t.notifications)
                .where(t.notifications.c.at >= since, t.notifications.c.status == "failed")
                .order_by(t.notifications.c.at)
            ).all()
        ]
        info_events = [
            {"at": e.at, "kind": e.kind, "subject": e.subject, "summary": e.summary}
            for e in conn.execute(
                sa.select(t.events)
                .where(
                    t.events.c.at >= since, t.events.c.severity == "info", ~t.events.c.kind.like("summary.%")
                )
                .order_by(t.events.c.at)
            ).all()
        ]
        problems = conn.execute(
            sa.select(t.events.c.severity, sa.func.count())
            .where(
                t.events.c.at >= since,
                t.events.c.severity.in_(["critical", "warning"]),
                t.events.c.kind != "notify.test",
            )
            .group_by(t.events.c.severity)
        ).all()
    return {
        "period": period,
        "since": since,
        "until": now,
        "backups": sorted(backups.values(), key=lambda b: b["source"]),
        "rpo_exposure": exposure,
        "drills": drills,
        "deploys": deploys,
        "rollbacks": rollbacks,
        "scheduled_jobs": jobs,
        "failed_notifications": failed_notifications,
        "alerts": {sev: n for sev, n in problems},
        "info_events": info_events,
    }


def _sections(d: dict[str, Any]) -> list[tuple[str, list[str]]]:
    out: list[tuple[str, list[str]]] = []
    out.append(
        (
            "Backups",
            [
                f"{b['source']}: {b['succeeded']} done, {b['failed']} failed, "
                f"{_human_bytes(b['bytes_added'])} added"
                + (f" (last error: {b['errors'][-1]})" if b["errors"] else "")
                for b in d["backups"]
            ]
            or ["no backups ran in this period"],
        )
    )
    out.append(
        (
            "RPO exposure",
            [
                f"{e['source']} ({e['tier']}): {_age(e['exposure_s'])} since the last recovery point "
                f"(target {_age(e['rpo_target_s'])}) {'OK' if e['ok'] else 'OVER TARGET'}"
                for e in d["rpo_exposure"]
            ]
            or ["no sources configured"],
        )
    )

    def drill_line(x: dict[str, Any]) -> str:
        rto = (
            f"RTO {_age(x['rto_s'])} (target {_age(x['rto_target_s'])})"
            if x["rto_s"] is not None
            else "RTO n/a"
        )
        rpo = (
            f"RPO {_age(x['rpo_s'])} (target {_age(x['rpo_target_s'])})"
            if x["rpo_s"] is not None
            else "RPO n/a"
        )
        return f"{x['name']} [{x['source'] or '-'}] {x['verdict']}: {rto}, {rpo}" + (
            f" — {x['reason']}" if x["reason"] else ""
        )

    out.append(("Restore drills", [drill_line(x) for x in d["drills"]] or ["no drills in this period"]))
    out.append(
        (
            "Deploys and rollbacks",
            [f"deploy {x['service']} {x['version']} ({x['status']}) at {_ts(x['at'])}" for x in d["deploys"]]
            + [f"rollback {x['service']}: {x['state']} — {x['reason'] or ''}" for x in d["rollbacks"]]
            or ["none"],
        )
    )
    out.append(
        (
            "Scheduled jobs",
            [
                f"{name}: " + ", ".join(f"{n} {state}" for state, n in sorted(states.items()))
                for name, states in sorted(d["scheduled_jobs"].items())
            ]
            or ["no scheduled runs"],
        )
    )
    out.append(
        (
            "Alerts and notifications",
            [f"{n} {sev} event(s)" for sev, n in sorted(d["alerts"].items())]
            + [
                f"FAILED notification via {n['channel']} at {_ts(n['at'])}: {n['error']}"
                for n in d["failed_notifications"]
            ]
            or ["no alerts; every notification was delivered"],
        )
    )
    if d["info_events"]:
        out.append(
            (
                "Other events",
                [
                    f"{_ts(e['at'])} {e['kind']} {e['subject'] or ''}: {e['summary']}"
                    for e in d["info_events"]
                ],
            )
        )
    return out


def title(d: dict[str, Any]) -> str:
    return f"recoverctl {d['period']} summary {_ts(d['since'])} to {_ts(d['until'])}"


def render_text(d: dict[str, Any]) -> str:
    lines = [title(d), ""]
    for head, items in _sections(d):
        lines += [head, *[f"  - {i}" for i in items], ""]
    return "\n".join(lines).rstrip()


def render_html(d: dict[str, Any]) -> str:
    parts = [f"<html><body><h2>{html.escape(title(d))}</h2>"]
    for head, items in _sections(d):
        cls = (
            ""
            if not any("FAILED" in i or "OVER TARGET" in i or " fail" in i for i in items)
            else " style='color:#b00020'"
        )
        parts.append(f"<h3{cls}>{html.escape(head)}</h3><ul>")
        parts += [f"<li>{html.escape(i)}</li>" for i in items]
        parts.append("</ul>")
    parts.append("</body></html>")
    return "".join(parts)


def summary(
    cfg: Config, catalog: Catalog, period: str, *, send: bool, dry_run: bool = False
) -> dict[str, Any]:
    """Build the summary; with send, deliver it to the `routes.info` channels; return data + deliveries.

    Raise ConfigError when sending and no info route is configured.
    """
    data = collect(cfg, catalog, period)
    data["text"] = render_text(data)
    data["deliveries"] = []
    if not send:
        return data
    names = channels_for(cfg, "info")
    if not names:
        raise ConfigError(
            "no channels to send the summary to",
            hint="add notifications.routes.info: [<email or slack channel>]",
        )
    if dry_run:
        data["deliveries"] = [{"channel": n, "status": "would-send"} for n in names]
        return data
    event_id = catalog.emit_event(f"summary.{period}", "info", None, title(data), None, None)
    with catalog.begin() as conn:
        conn.execute(t.events.update().where(t.events.c.id == event_id).values(delivered=True))
    message = Message(
        severity="info",
        kind=f"summary.{period}",
        summary=title(data),
        event_id=event_id,
        dedup_key=f"recoverctl/summary/{period}/{event_id}",
        text=data["text"],
        html=render_html(data),
    )
    from dataclasses import asdict

    data["deliveries"] = [asdict(x) for x in send_to_channels(cfg, catalog, message, names)]
    return data
