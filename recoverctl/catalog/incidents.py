"""Incidents as the catalog keeps them: opening, joining, acknowledging and resolving them, their
timelines, and the claims of their escalation notifications.

An incident opens when an alert is acted on or escalated by a policy, or when an event reports a
failure (a drill, a scheduled job such as a backup, WAL archiving, a rollback, a verify). Alerts of
the same group key and events about the same service or source join it while it is open.

Incidents are recorded where their causes are written, in the same transaction: `record_event_in`
runs inside `Catalog.emit_event`, `record_alerts_in` inside alert intake. Functions ending in `_in`
work inside the caller's transaction.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from recoverctl.catalog import Catalog, as_record
from recoverctl.catalog import tables as t
from recoverctl.errors import NotFoundError, RecoverctlError

# States in which an incident collects what happens to its subject.
ACTIVE_STATES = ("open", "acknowledged", "reopened")
# States in which it escalates: nobody has acknowledged it yet.
ESCALATING_STATES = ("open", "reopened")
# A firing alert of the group of an incident resolved this recently reopens it.
REOPEN_WITHIN = 3600.0
# Events that open an incident whatever their severity; other kinds open one when critical.
OPENING_KINDS = frozenset(
    {
        "drill.failed",
        "rollback.failed",
        "job.failed",
        "backup.failed",
        "backup.checksum_failure",
        "wal.archive_failed",
        "verify.failed",
        "alert.escalated",
        "rpo.exceeded",
    }
)
# What an event's subject names, by the event kind's first word.
_SUBJECT_TYPES = {
    "rollback": "service",
    "deploy": "service",
    "alert": "service",
    "release": "service",
    "drill": "source",
    "backup": "source",
    "wal": "source",
    "rpo": "source",
    "job": "schedule",
    "verify": "repository",
}
# The kinds recoverctl writes about incidents themselves; they never open or join another one.
_OWN_PREFIX = "incident."


class IncidentStateError(RecoverctlError):
    """The incident is not in a state that allows the change (exit code 1)."""


@dataclass(frozen=True)
class Incident:
    """One incident row."""

    id: int
    opened_at: float
    state: str
    severity: str
    kind: str
    title: str
    subject: str | None
    subject_type: str | None
    group_key: str | None
    acknowledged_at: float | None
    acknowledged_by: str | None
    resolved_at: float | None
    resolved_by: str | None
    resolution: str | None
    escalation_level: int


@dataclass(frozen=True)
class TimelineEntry:
    """One moment of an incident: recorded as it happened, or read from a rollback's steps and
    the deliveries of the incident's events."""

    at: float
    kind: str
    summary: str
    details: dict[str, Any] = field(default_factory=dict)
    event_id: int | None = None
    alert_id: int | None = None
    job_id: int | None = None
    rollback_id: int | None = None


def incident_from_row(row: Any) -> Incident:
    return as_record(Incident, row)


def _entry_values(incident_id: int, e: TimelineEntry) -> dict[str, Any]:
    return {
        "incident_id": incident_id,
        "at": e.at,
        "kind": e.kind,
        "summary": e.summary,
        "details": e.details,
        "event_id": e.event_id,
        "alert_id": e.alert_id,
        "job_id": e.job_id,
        "rollback_id": e.rollback_id,
    }


def add_entry_in(conn: Connection, incident_id: int, entry: TimelineEntry) -> None:
    """Append `entry` to the timeline of incident `incident_id`."""
    conn.execute(t.incident_timeline.insert().values(**_entry_values(incident_id, entry)))


def open_in(
    conn: Connection,
    *,
    at: float,
    kind: str,
    severity: str,
    title: str,
    subject: str | None,
    subject_type: str | None,
    group_key: str | None = None,
    details: dict[str, Any] | None = None,
) -> int:
    """Open an incident; return its id."""
    return int(
        conn.execute(
            t.incidents.insert().values(
                opened_at=at,
                state="open",
                severity=severity,
                kind=kind,
                title=title,
                subject=subject,
                subject_type=subject_type,
                group_key=group_key,
                escalation_level=0,
                details=details or {},
            )
        ).inserted_primary_key[0]  # type: ignore[index]
    )


def active_about_in(conn: Connection, subject: str | None, group_key: str | None = None) -> int | None:
    """Return the id of the newest active incident of `group_key` or about `subject`, or None."""
    about = [t.incidents.c.subject == subject] if subject else []
    if group_key:
        about.append(t.incidents.c.group_key == group_key)
    if not about:
        return None
    q = (
        sa.select(t.incidents.c.id)
        .where(t.incidents.c.state.in_(ACTIVE_STATES), sa.or_(*about))
        .order_by(t.incidents.c.id.desc())
        .limit(1)
    )
    found = conn.execute(q).scalar()
    return int(found) if found is not None else None


def recently_resolved_in(conn: Connection, group_key: str | None, now: float) -> int | None:
    if not group_key:
        return None
    q = (
        sa.select(t.incidents.c.id)
        .where(
            t.incidents.c.state == "resolved",
            t.incidents.c.group_key == group_key,
            t.incidents.c.resolved_at >= now - REOPEN_WITHIN,
        )
        .order_by(t.incidents.c.id.desc())
        .limit(1)
    )
    found = conn.execute(q).scalar()
    return int(found) if found is not None else None


def record_event_in(
    conn: Connection,
    event_id: int,
    at: float,
    kind: str,
    severity: str,
    subject: str | None,
    summary: str,
    details: dict[str, Any] | None,
) -> int | None:
    """Open an incident for a failure event, or add the event to the active incident about its
    subject (or the one `details["incident_id"]` names); return the incident id, or None when the
    event concerns no incident."""
    details = details or {}
    if kind.startswith(_OWN_PREFIX):
        return None
    named = details.get("incident_id")
    incident_id = int(named) if isinstance(named, int) else active_about_in(conn, subject)
    if incident_id is None:
        if not (
            kind in OPENING_KINDS or (severity == "critical" and kind.endswith((".failed", ".abandoned")))
        ):
            return None
        incident_id = open_in(
            conn,
            at=at,
            kind=kind,
            severity=severity,
            title=summary,
            subject=subject,
            subject_type=_SUBJECT_TYPES.get(kind.split(".", 1)[0]),
            details={"event_id": event_id},
        )
    rollback_id = details.get("rollback_id")
    add_entry_in(
        conn,
        incident_id,
        TimelineEntry(
            at=at,
            kind=kind,
            summary=summary,
            details={"severity": severity, **_small(details)},
            event_id=event_id,
            rollback_id=int(rollback_id) if isinstance(rollback_id, int) else None,
        ),
    )
    return incident_id


def _small(details: dict[str, Any]) -> dict[str, Any]:
    """Keep the scalar details of an event (lists such as a deploy's health checks are read from
    their own rows)."""
    return {k: v for k, v in details.items() if isinstance(v, str | int | float | bool) or v is None}


# --- reads ---------------------------------------------------------------------------------------


def get_incident(catalog: Catalog, incident_id: int) -> Incident:
    """Return incident `incident_id`; raise NotFoundError."""
    with catalog.begin() as conn:
        row = conn.execute(sa.select(t.incidents).where(t.incidents.c.id == incident_id)).first()
    if row is None:
        raise NotFoundError(f"incident {incident_id} does not exist", hint="list them: recoverctl incidents")
    return incident_from_row(row)


def list_incidents(
    catalog: Catalog, *, states: tuple[str, ...] | None = None, limit: int = 100
) -> list[Incident]:
    """Return incidents, newest first, optionally only those in `states`."""
    q = sa.select(t.incidents).order_by(t.incidents.c.id.desc()).limit(limit)
    if states:
        q = q.where(t.incidents.c.state.in_(states))
    with catalog.begin() as conn:
        return [incident_from_row(r) for r in conn.execute(q)]


def recorded_entries(catalog: Catalog, incident_id: int) -> list[TimelineEntry]:
    """Return the entries recorded on incident `incident_id`, in order."""
    q = (
        sa.select(t.incident_timeline)
        .where(t.incident_timeline.c.incident_id == incident_id)
        .order_by(t.incident_timeline.c.at, t.incident_timeline.c.id)
    )
    with catalog.begin() as conn:
        return [_entry(r) for r in conn.execute(q)]


def _entry(r: Any) -> TimelineEntry:
    return TimelineEntry(
        at=r.at,
        kind=r.kind,
        summary=r.summary,
        details=dict(r.details or {}),
        event_id=r.event_id,
        alert_id=r.alert_id,
        job_id=r.job_id,
        rollback_id=r.rollback_id,
    )


def timeline(catalog: Catalog, incident_id: int) -> list[TimelineEntry]:
    """Return the whole timeline of incident `incident_id`, ordered by time: the recorded entries,
    the steps of its rollbacks (with their durations) and every delivery of its events."""
    entries = recorded_entries(catalog, incident_id)
    rollback_ids = sorted({e.rollback_id for e in entries if e.rollback_id is not None})
    event_ids = sorted({e.event_id for e in entries if e.event_id is not None})
    derived: list[TimelineEntry] = []
    with catalog.begin() as conn:
        steps = conn.execute(
            sa.select(t.rollback_steps)
            .where(
                t.rollback_steps.c.rollback_id.in_(rollback_ids), t.rollback_steps.c.started_at.isnot(None)
            )
            .order_by(t.rollback_steps.c.rollback_id, t.rollback_steps.c.seq)
        ).all()
        sent = conn.execute(
            sa.select(t.notifications)
            .where(t.notifications.c.event_id.in_(event_ids))
            .order_by(t.notifications.c.id)
        ).all()
    for s in steps:
        took = s.finished_at - s.started_at if s.finished_at is not None else None
        derived.append(
            TimelineEntry(
                at=s.started_at,
                kind=f"rollback.step.{s.name}",
                summary=f"rollback #{s.rollback_id} step {s.name}: {s.state}"
                + (f" in {took:.2f} s" if took is not None else ""),
                details={"step": s.name, "state": s.state, "duration_s": took, "output": s.output},
                rollback_id=s.rollback_id,
            )
        )
    for n in sent:
        derived.append(
            TimelineEntry(
                at=n.at,
                kind="notification",
                summary=f"{n.channel} ({n.channel_type}): {n.status} after {n.attempts} attempt(s)",
                details={
                    "channel": n.channel,
                    "channel_type": n.channel_type,
                    "outcome": n.status,
                    "attempts": n.attempts,
                    "http_status": n.http_status,
                    "error": n.error,
                },
                event_id=n.event_id,
            )
        )
    return sorted([*entries, *derived], key=lambda e: e.at)


# --- acknowledging and resolving -----------------------------------------------------------------


def acknowledge(catalog: Catalog, incident_id: int, by: str, how: str = "cli") -> Incident:
    """Acknowledge incident `incident_id` (which stops its escalation); return it. Acknowledging
    it again is a no-op; raise IncidentStateError when it is resolved, NotFoundError when absent."""
    now = time.time()
    with catalog.begin() as conn:
        changed = conn.execute(
            t.incidents.update()
            .where(t.incidents.c.id == incident_id, t.incidents.c.state.in_(ESCALATING_STATES))
            .values(state="acknowledged", acknowledged_at=now, acknowledged_by=by)
        ).rowcount
        if changed:
            add_entry_in(
                conn,
                incident_id,
                TimelineEntry(now, "acknowledged", f"acknowledged by {by} ({how})", {"by": by, "via": how}),
            )
    incident = get_incident(catalog, incident_id)
    if not changed and incident.state == "resolved":
        raise IncidentStateError(f"incident {incident_id} is already resolved", hint="nothing to acknowledge")
    return incident


def resolve(catalog: Catalog, incident_id: int, by: str, note: str, *, automatic: bool = False) -> Incident:
    """Resolve incident `incident_id` with `note`; return it. Raise IncidentStateError when it is
    resolved already, NotFoundError when absent."""
    now = time.time()
    with catalog.begin() as conn:
        changed = conn.execute(
            t.incidents.update()
            .where(t.incidents.c.id == incident_id, t.incidents.c.state.in_(ACTIVE_STATES))
            .values(state="resolved", resolved_at=now, resolved_by=by, resolution=note)
        ).rowcount
        if changed:
            add_entry_in(
                conn,
                incident_id,
                TimelineEntry(
                    now,
                    "resolved",
                    f"resolved by {by}: {note}",
                    {"by": by, "note": note, "automatic": automatic},
                ),
            )
    incident = get_incident(catalog, incident_id)
    if not changed:
        raise IncidentStateError(
            f"incident {incident_id} is already resolved", hint="see: recoverctl incidents show"
        )
    return incident


@dataclass(frozen=True)
class Progress:
    """What an active incident still waits for before it resolves by itself."""

    incident: Incident
    firing: list[str]  # fingerprints of its alerts not yet resolved
    unfinished_jobs: list[int]  # actions it started that have not succeeded
    rollback_state: str | None  # the state of its newest rollback
    recovered: bool  # a recovery was reported (job.recovered, rollback.succeeded, rpo.recovered)

    @property
    def healthy(self) -> bool:
        rollback_ok = self.rollback_state in (None, "succeeded")
        if self.incident.kind == "alert":
            return not self.firing and not self.unfinished_jobs and rollback_ok
        return self.recovered and not self.firing and not self.unfinished_jobs and rollback_ok


_RECOVERY_KINDS = ("rollback.succeeded", "rpo.recovered")


def progress_of_active(catalog: Catalog) -> list[Progress]:
    """Return, for every active incident, what it still waits for (four queries in all, however
    many incidents are open: this runs every second in every worker)."""
    tl = t.incident_timeline
    with catalog.begin() as conn:
        active = [
            incident_from_row(r)
            for r in conn.execute(sa.select(t.incidents).where(t.incidents.c.state.in_(ACTIVE_STATES)))
        ]
        if not active:
            return []
        entries: dict[int, list[TimelineEntry]] = {inc.id: [] for inc in active}
        rows = conn.execute(
            sa.select(tl).where(tl.c.incident_id.in_(list(entries))).order_by(tl.c.at, tl.c.id)
        ).all()
        for r in rows:
            entries[r.incident_id].append(_entry(r))
        every = [e for es in entries.values() for e in es]
        job_ids = sorted({e.job_id for e in every if e.job_id is not None})
        rollback_ids = sorted({e.rollback_id for e in every if e.rollback_id is not None})
        jobs, rollbacks = t.jobs, t.rollbacks
        job_states = dict(
            conn.execute(sa.select(jobs.c.id, jobs.c.state).where(jobs.c.id.in_(job_ids))).all()
        )
        rollback_states = dict(
            conn.execute(
                sa.select(rollbacks.c.id, rollbacks.c.state).where(rollbacks.c.id.in_(rollback_ids))
            ).all()
        )
    return [_progress(inc, entries[inc.id], job_states, rollback_states) for inc in active]


def _progress(
    inc: Incident, entries: list[TimelineEntry], job_states: dict[int, str], rollback_states: dict[int, str]
) -> Progress:
    firing: dict[str, bool] = {}
    recovered = False
    for e in entries:
        fp = e.details.get("fingerprint")
        if e.kind == "alert.firing" and fp:
            firing[fp] = True
        elif e.kind == "alert.resolved" and fp:
            firing[fp] = False
        elif e.kind in _RECOVERY_KINDS or e.kind.endswith(".recovered") or e.details.get("resolve"):
            recovered = True
    job_ids = sorted({e.job_id for e in entries if e.job_id is not None})
    rollback_ids = [e.rollback_id for e in entries if e.rollback_id is not None]
    return Progress(
        incident=inc,
        firing=[fp for fp, on in firing.items() if on],
        unfinished_jobs=[j for j in job_ids if job_states.get(j) != "succeeded"],
        rollback_state=rollback_states.get(max(rollback_ids)) if rollback_ids else None,
        recovered=recovered,
    )


def open_for_subject(
    catalog: Catalog,
    kind: str,
    severity: str,
    subject: str,
    subject_type: str,
    title: str,
    details: dict[str, Any],
) -> tuple[int, bool]:
    """Return (id, opened): the active incident about `subject`, or one opened now with a first
    timeline entry of `kind`."""
    now = time.time()
    with catalog.begin() as conn:
        found = active_about_in(conn, subject)
        if found is not None:
            return found, False
        incident_id = open_in(
            conn,
            at=now,
            kind=kind,
            severity=severity,
            title=title,
            subject=subject,
            subject_type=subject_type,
        )
        add_entry_in(conn, incident_id, TimelineEntry(now, kind, title, details))
    return incident_id, True


def note(catalog: Catalog, incident_id: int, entry: TimelineEntry) -> None:
    """Append `entry` to the timeline of incident `incident_id`."""
    with catalog.begin() as conn:
        add_entry_in(conn, incident_id, entry)


def incidents_in_period(catalog: Catalog, since: float, until: float) -> list[Incident]:
    """Return the incidents opened, acknowledged or resolved in [since, until), and those still
    active, oldest first."""
    inc = t.incidents
    touched = sa.or_(
        inc.c.opened_at.between(since, until),
        inc.c.acknowledged_at.between(since, until),
        inc.c.resolved_at.between(since, until),
        inc.c.state.in_(ACTIVE_STATES),
    )
    with catalog.begin() as conn:
        return [incident_from_row(r) for r in conn.execute(sa.select(inc).where(touched).order_by(inc.c.id))]
