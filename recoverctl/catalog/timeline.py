"""One timeline of everything the catalog recorded: backups and other runs, WAL gaps (outages of
WAL archiving, by their start), drills, deploys, releases, alert decisions, rollbacks (with their
steps) and notifications, newest first.

Each kind is read with one query bounded by the page size (its own time index where the table has
one), the pages are merged in Python and cut to the size asked for: a page costs at most
`len(KINDS)` small queries whatever the catalog holds.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from recoverctl.catalog import Catalog, as_record
from recoverctl.catalog import tables as t
from recoverctl.catalog.wal import WalOutage

KINDS = ("backup", "run", "wal", "drill", "deploy", "release", "alert", "rollback", "notification")


@dataclass(frozen=True)
class TimelineStep:
    """One step of a rollback, as the timeline shows it."""

    seq: int
    name: str
    state: str
    started_at: float | None
    finished_at: float | None


@dataclass(frozen=True)
class TimelineEntry:
    """One thing that happened. `status` is the record's own word (succeeded, fail, acted, sent,
    live...); `ref` is the id of the record it came from (a drill, rollback or snapshot id...)."""

    kind: str
    at: float
    subject: str | None
    status: str
    summary: str
    ref: str
    steps: tuple[TimelineStep, ...] = ()
    details: dict[str, Any] = field(default_factory=dict)
    # Entries that last (WAL gaps, status 'ongoing' or 'ended'): `at` is when it began, `until`
    # when it ended (None while it lasts).
    until: float | None = None


@dataclass(frozen=True)
class Cursor:
    """Where a page ended: its last entry's time, kind and ref. Entries sort by (time newest
    first, kind, ref), so entries sharing a timestamp are neither skipped nor repeated."""

    at: float
    kind: str
    ref: str

    def __str__(self) -> str:
        return f"{self.at!r}~{self.kind}~{self.ref}"

    @classmethod
    def parse(cls, text: str) -> Cursor:
        """Given str(cursor) (or bare Unix seconds), return the cursor; raise ValueError."""
        at, _, rest = text.partition("~")
        kind, _, ref = rest.partition("~")
        return cls(float(at), kind, ref)

    def precedes(self, entry: TimelineEntry) -> bool:
        """Return True when `entry` comes after this cursor in timeline order."""
        return _order(entry) > (-self.at, self.kind, self.ref)


def _order(entry: TimelineEntry) -> tuple[float, str, str]:
    return (-entry.at, entry.kind, entry.ref)


@dataclass(frozen=True)
class TimelineQuery:
    """Which entries to read: kinds (all when empty), one source/service, a time range
    [since, until) and only entries after `after` (the previous page's cursor)."""

    kinds: Collection[str] = ()
    subject: str | None = None
    since: float | None = None
    until: float | None = None
    after: Cursor | None = None
    limit: int = 50


@dataclass(frozen=True)
class TimelinePage:
    entries: list[TimelineEntry]
    # Pass as `after` to read the next (older) page; None on the last page.
    next_cursor: Cursor | None


def _bounded(
    q: sa.Select[Any],
    at: sa.ColumnElement[Any],
    query: TimelineQuery,
    ends: sa.ColumnElement[Any] | None = None,
) -> sa.Select[Any]:
    """Bound `q` to the query's range and page; an entry that lasts (its end in `ends`, NULL while
    it lasts) is in the range when it overlaps it, so a gap begun before `since` still shows."""
    if query.since is not None:
        q = q.where(at >= query.since if ends is None else sa.or_(ends.is_(None), ends >= query.since))
    if query.until is not None:
        q = q.where(at < query.until)
    if query.after is not None:
        # Inclusive: entries sharing the cursor's time are sorted out by merge_newest_first.
        q = q.where(at <= query.after.at)
    return q.order_by(at.desc()).limit(query.limit + 1)


def _runs(conn: Connection, query: TimelineQuery, backups: bool) -> list[TimelineEntry]:
    r = t.runs.c
    q = sa.select(r.id, r.kind, r.source, r.started_at, r.status, r.snapshot_id, r.error, r.bytes_added)
    q = q.where(r.kind.like("backup%") if backups else ~r.kind.like("backup%"))
    if query.subject is not None:
        q = q.where(r.source == query.subject)
    out = []
    for row in conn.execute(_bounded(q, r.started_at, query)):
        what = row.kind.replace("-", " ")
        text = f"{what} {row.status}" + (f": {row.error}" if row.error else "")
        out.append(
            TimelineEntry(
                "backup" if backups else "run",
                row.started_at,
                row.source,
                row.status,
                text,
                row.snapshot_id or str(row.id),
                details={
                    "run_id": row.id,
                    "run_kind": row.kind,
                    "snapshot_id": row.snapshot_id,
                    "bytes_added": row.bytes_added,
                },
            )
        )
    return out


def _drills(conn: Connection, query: TimelineQuery) -> list[TimelineEntry]:
    d = t.drills.c
    q = sa.select(d.id, d.name, d.source, d.started_at, d.verdict, d.rto_s, d.rpo_s, d.reason)
    if query.subject is not None:
        q = q.where(d.source == query.subject)
    return [
        TimelineEntry(
            "drill",
            row.started_at,
            row.source,
            row.verdict or "running",
            f"drill #{row.id} '{row.name}' {row.verdict or 'running'}"
            + (f": {row.reason}" if row.reason else ""),
            str(row.id),
            details={"rto_s": row.rto_s, "rpo_s": row.rpo_s},
        )
        for row in conn.execute(_bounded(q, d.started_at, query))
    ]


def _deploys(conn: Connection, query: TimelineQuery) -> list[TimelineEntry]:
    a = t.audit_log.c
    q = sa.select(a.id, a.at, a.actor, a.target, a.outcome, a.details).where(a.action == "deploy")
    if query.subject is not None:
        q = q.where(a.target == query.subject)
    out = []
    for row in conn.execute(_bounded(q, a.at, query)):
        details = row.details if isinstance(row.details, dict) else {}
        version = details.get("version")
        out.append(
            TimelineEntry(
                "deploy",
                row.at,
                row.target,
                row.outcome,
                f"deploy{f' of {version}' if version else ''} by {row.actor}: {row.outcome}",
                str(details.get("release_id") or row.id),
            )
        )
    return out


def _releases(conn: Connection, query: TimelineQuery) -> list[TimelineEntry]:
    r = t.releases.c
    q = sa.select(r.id, r.service, r.version, r.status, r.created_at, r.schema_revision, r.restore_point)
    if query.subject is not None:
        q = q.where(r.service == query.subject)
    return [
        TimelineEntry(
            "release",
            row.created_at,
            row.service,
            row.status,
            f"release {row.version} ({row.status})"
            + (f", schema {row.schema_revision}" if row.schema_revision else ""),
            str(row.id),
            details={"version": row.version, "restore_point": row.restore_point},
        )
        for row in conn.execute(_bounded(q, r.created_at, query))
    ]


def _alerts(conn: Connection, query: TimelineQuery) -> list[TimelineEntry]:
    a = t.alerts.c
    q = sa.select(a.id, a.received_at, a.alertname, a.service, a.status, a.policy, a.decision, a.reason)
    if query.subject is not None:
        q = q.where(a.service == query.subject)
    return [
        TimelineEntry(
            "alert",
            row.received_at,
            row.service,
            row.decision,
            f"alert {row.alertname or '?'} ({row.status or '?'}): {row.decision}"
            + (f" by policy {row.policy}" if row.policy else "")
            + (f" — {row.reason}" if row.reason else ""),
            str(row.id),
        )
        for row in conn.execute(_bounded(q, a.received_at, query))
    ]


def _rollbacks(conn: Connection, query: TimelineQuery) -> list[TimelineEntry]:
    r = t.rollbacks.c
    q = sa.select(r.id, r.service, r.state, r.started_at, r.reason, r.schema_mode, r.error)
    if query.subject is not None:
        q = q.where(r.service == query.subject)
    rows = conn.execute(_bounded(q, r.started_at, query)).all()
    s = t.rollback_steps.c
    steps: dict[int, list[TimelineStep]] = {row.id: [] for row in rows}
    if rows:
        for st in conn.execute(
            sa.select(s.rollback_id, s.seq, s.name, s.state, s.started_at, s.finished_at)
            .where(s.rollback_id.in_(list(steps)))
            .order_by(s.rollback_id, s.seq)
        ):
            steps[st.rollback_id].append(
                TimelineStep(st.seq, st.name, st.state, st.started_at, st.finished_at)
            )
    return [
        TimelineEntry(
            "rollback",
            row.started_at,
            row.service,
            row.state,
            f"rollback #{row.id} ({row.schema_mode}) {row.state}"
            + (f": {row.reason}" if row.reason else "")
            + (f" — {row.error}" if row.error else ""),
            str(row.id),
            steps=tuple(steps[row.id]),
        )
        for row in rows
    ]


def _notifications(conn: Connection, query: TimelineQuery) -> list[TimelineEntry]:
    n, e = t.notifications.c, t.events.c
    q = sa.select(
        n.id, n.at, n.channel, n.status, n.severity, n.error, e.kind, e.subject, e.summary
    ).select_from(t.notifications.outerjoin(t.events, n.event_id == e.id))
    if query.subject is not None:
        q = q.where(e.subject == query.subject)
    return [
        TimelineEntry(
            "notification",
            row.at,
            row.subject,
            row.status,
            f"{row.severity} to {row.channel} {row.status}: {row.summary or row.kind or ''}"
            + (f" ({row.error})" if row.error else ""),
            str(row.id),
            details={"event_kind": row.kind},
        )
        for row in conn.execute(_bounded(q, n.at, query))
    ]


def wal_gap_entry(outage: WalOutage) -> TimelineEntry:
    """Given a WAL outage, return it as the timeline's WAL gap entry ('ongoing' or 'ended')."""
    o = outage
    segments = (
        o.first_failed_segment
        if o.first_failed_segment == o.last_failed_segment
        else f"{o.first_failed_segment} to {o.last_failed_segment}"
    )
    return TimelineEntry(
        "wal",
        o.started_at,
        o.source,
        "ongoing" if o.ended_at is None else "ended",
        f"WAL gap: archiving failed {o.failures} time{'s' if o.failures != 1 else ''} ({segments})"
        + (f": {o.error}" if o.error else "")
        + (f"; resumed with {o.resumed_segment}" if o.resumed_segment else ""),
        str(o.id),
        details={
            "started_at": o.started_at,
            "ended_at": o.ended_at,
            "duration_s": None if o.ended_at is None else round(o.ended_at - o.started_at, 3),
            "last_good_segment": o.last_good_segment,
            "first_failed_segment": o.first_failed_segment,
            "last_failed_segment": o.last_failed_segment,
            "resumed_segment": o.resumed_segment,
            "failures": o.failures,
            "error": o.error,
        },
        until=o.ended_at,
    )


def _wal_gaps(conn: Connection, query: TimelineQuery) -> list[TimelineEntry]:
    o = t.wal_outages.c
    q = sa.select(t.wal_outages)
    if query.subject is not None:
        q = q.where(o.source == query.subject)
    return [
        wal_gap_entry(as_record(WalOutage, row))
        for row in conn.execute(_bounded(q, o.started_at, query, o.ended_at))
    ]


_READERS: dict[str, Callable[[Connection, TimelineQuery], list[TimelineEntry]]] = {
    "backup": lambda conn, q: _runs(conn, q, backups=True),
    "run": lambda conn, q: _runs(conn, q, backups=False),
    "wal": _wal_gaps,
    "drill": _drills,
    "deploy": _deploys,
    "release": _releases,
    "alert": _alerts,
    "rollback": _rollbacks,
    "notification": _notifications,
}


def merge_newest_first(
    parts: Iterable[list[TimelineEntry]], limit: int, after: Cursor | None = None
) -> TimelinePage:
    """Given per-kind lists (each newest first, up to limit+1 long), return the first `limit`
    entries after the cursor `after`, newest first, and the cursor of the next page."""
    merged = sorted((e for part in parts for e in part if after is None or after.precedes(e)), key=_order)
    page = merged[:limit]
    last = page[-1] if len(merged) > limit and page else None
    return TimelinePage(page, Cursor(last.at, last.kind, last.ref) if last is not None else None)


def timeline(catalog: Catalog, query: TimelineQuery) -> TimelinePage:
    """Given a query, return one page of the timeline, newest first; raise ValueError on an
    unknown kind and CatalogError when the catalog is unreachable."""
    kinds = list(query.kinds) or list(KINDS)
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        raise ValueError(f"unknown timeline kind(s) {', '.join(unknown)}: choose from {', '.join(KINDS)}")
    with catalog.begin() as conn:
        parts = [_READERS[k](conn, query) for k in kinds]
    return merge_newest_first(parts, query.limit, query.after)
