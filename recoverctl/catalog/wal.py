"""The catalog's record of PostgreSQL WAL archiving: per-source archive progress, WAL outages
(the gaps the repository could not cover) and named restore points. RPO exposure is read in
`catalog.recovery` (`wal_progress`); this module writes what it is computed from.

An outage opens with the first failed archive attempt of a source (by `wal push`, the pusher or
the stream receiver's upload) and closes with the next success dated after its last failure. It
is not an event: the incident about failing archiving is opened by the escalation pass from
wal_status (`wal.archive_failed`), and an event here would open or join it a second time."""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass

import sqlalchemy as sa

from recoverctl.catalog import Catalog, as_record
from recoverctl.catalog import tables as t
from recoverctl.catalog.incidents import Incident
from recoverctl.catalog.incidents import TimelineEntry as IncidentMoment
from recoverctl.config import redact
from recoverctl.units import human_duration

# A WAL segment name (timeline + log + segment, 24 hex digits): only those compare by position.
_SEGMENT_RE = re.compile(r"^[0-9A-F]{24}$")


@dataclass(frozen=True)
class RestorePoint:
    """A named restore point created on a source (by `postgres restore-point` or a deploy)."""

    id: int
    source: str
    name: str
    lsn: str | None
    timeline: int | None
    created_at: float
    release_id: int | None


@dataclass(frozen=True)
class WalOutage:
    """A period in which WAL archiving of `source` failed: from `started_at` (its first failed
    attempt) to `ended_at` (the next success; None while it lasts)."""

    id: int
    source: str
    started_at: float
    ended_at: float | None
    last_good_segment: str | None
    first_failed_segment: str
    last_failed_segment: str
    last_failed_at: float
    resumed_segment: str | None
    failures: int
    error: str | None

    @property
    def ongoing(self) -> bool:
        return self.ended_at is None

    def duration(self, now: float) -> float:
        """Return its length in seconds, up to `now` while it lasts."""
        return max(0.0, (self.ended_at if self.ended_at is not None else now) - self.started_at)


def record_archived(catalog: Catalog, source: str, segment: str, at: float, count: int = 1) -> None:
    """Count `count` WAL files of `source` as archived at `at`, the newest being `segment`, and
    close the source's open outage when `at` is not before its last failed attempt (then the
    source is no longer `failing` in `catalog.recovery` either).

    The highest segment is kept: a retried older one must not move the archive's progress back.
    """
    with catalog.begin() as db:
        row = db.execute(sa.select(t.wal_status).where(t.wal_status.c.source == source)).first()
        values: dict[str, object] = {"last_segment": segment, "last_archived_at": at}
        if (
            row is not None
            and _SEGMENT_RE.match(segment)
            and _SEGMENT_RE.match(row.last_segment or "")
            and row.last_segment > segment
        ):
            values = {"last_archived_at": max(at, row.last_archived_at or 0)}
        values["segments_total"] = (row.segments_total if row else 0) + count
        _upsert(db, row is None, source, values)
        o = t.wal_outages.c
        db.execute(
            t.wal_outages.update()
            .where(o.source == source, o.ended_at.is_(None), o.last_failed_at <= at)
            .values(ended_at=at, resumed_segment=segment)
        )


def record_failed(catalog: Catalog, source: str, segment: str, at: float, error: str | None = None) -> None:
    """Record that archiving `segment` of `source` failed at `at` (with `error`): count it, and
    open an outage or extend the open one."""
    w, o = t.wal_status.c, t.wal_outages.c
    with catalog.begin() as db:
        row = db.execute(sa.select(w.source, w.last_segment).where(w.source == source)).first()
        _upsert(
            db,
            row is None,
            source,
            {"last_failed_segment": segment, "last_failed_at": at, "failures_total": w.failures_total + 1}
            if row is not None
            else {"last_failed_segment": segment, "last_failed_at": at, "failures_total": 1},
        )
        # the text goes to pages and annotations: never a storage URL's password
        error = str(redact(error))[:2000] if error else None
        extended = db.execute(
            t.wal_outages.update()
            .where(o.source == source, o.ended_at.is_(None))
            .values(
                failures=o.failures + 1,
                last_failed_at=sa.func.max(o.last_failed_at, at)
                if db.dialect.name == "sqlite"
                else sa.func.greatest(o.last_failed_at, at),
                last_failed_segment=segment,
                error=sa.func.coalesce(error, o.error),
            )
        ).rowcount
        if not extended:
            db.execute(
                t.wal_outages.insert().values(
                    source=source,
                    started_at=at,
                    last_good_segment=row.last_segment if row is not None else None,
                    first_failed_segment=segment,
                    last_failed_segment=segment,
                    last_failed_at=at,
                    failures=1,
                    error=error,
                )
            )


def _upsert(db: sa.Connection, new: bool, source: str, values: dict[str, object]) -> None:
    if new:
        db.execute(t.wal_status.insert().values(source=source, **{"segments_total": 0, **values}))
    else:
        db.execute(t.wal_status.update().where(t.wal_status.c.source == source).values(**values))


def failures_totals(catalog: Catalog) -> dict[str, int]:
    """Return, per source that ever archived or failed to, its failed archive attempts."""
    w = t.wal_status.c
    with catalog.begin() as db:
        return {s: int(n or 0) for s, n in db.execute(sa.select(w.source, w.failures_total))}


def outages(
    catalog: Catalog,
    *,
    sources: Collection[str] = (),
    overlapping: tuple[float, float | None] | None = None,
    limit: int = 100,
) -> list[WalOutage]:
    """Return WAL outages, newest start first: of `sources` (all when empty), and with
    `overlapping` (start, end or None for now) only those that overlap that period."""
    o = t.wal_outages.c
    q = sa.select(t.wal_outages)
    if sources:
        q = q.where(o.source.in_(list(sources)))
    if overlapping is not None:
        start, end = overlapping
        q = q.where(sa.or_(o.ended_at.is_(None), o.ended_at >= start))
        if end is not None:
            q = q.where(o.started_at <= end)
    q = q.order_by(o.started_at.desc(), o.id.desc()).limit(limit)
    with catalog.begin() as db:
        return [as_record(WalOutage, r) for r in db.execute(q)]


def with_wal_gaps(
    catalog: Catalog, incident: Incident, entries: list[IncidentMoment]
) -> list[IncidentMoment]:
    """Given an incident about a source and its timeline, return the timeline with the start and
    end of every WAL gap of that source overlapping the incident (opened to resolved, or now),
    ordered by time; other incidents' timelines are returned as they are."""
    if incident.subject_type != "source" or not incident.subject:
        return entries
    moments: list[IncidentMoment] = []
    for o in outages(
        catalog, sources=[incident.subject], overlapping=(incident.opened_at, incident.resolved_at)
    ):
        details = {"outage_id": o.id, "first_failed_segment": o.first_failed_segment, "error": o.error}
        moments.append(
            IncidentMoment(
                o.started_at,
                "wal.gap.started",
                f"WAL gap began: archiving {o.first_failed_segment} failed"
                + (f": {o.error}" if o.error else ""),
                details,
            )
        )
        if o.ended_at is not None:
            moments.append(
                IncidentMoment(
                    o.ended_at,
                    "wal.gap.ended",
                    f"WAL gap ended after {human_duration(o.ended_at - o.started_at)} and "
                    f"{o.failures} failed attempt(s): {o.resumed_segment} archived",
                    {**details, "failures": o.failures, "resumed_segment": o.resumed_segment},
                )
            )
    return sorted(entries + moments, key=lambda e: e.at)


def add_restore_point(
    catalog: Catalog, source: str, name: str, lsn: str, timeline: int, created_at: float
) -> int:
    """Record a restore point created on `source`; return its id."""
    with catalog.begin() as db:
        result = db.execute(
            t.restore_points.insert().values(
                source=source, name=name, lsn=lsn, timeline=timeline, created_at=created_at
            )
        )
    return int(result.inserted_primary_key[0])  # type: ignore[index]


def restore_points(catalog: Catalog, source: str) -> list[RestorePoint]:
    """Return the restore points recorded for `source`, oldest first."""
    with catalog.begin() as db:
        rows = db.execute(
            sa.select(t.restore_points)
            .where(t.restore_points.c.source == source)
            .order_by(t.restore_points.c.created_at)
        ).fetchall()
    return [
        RestorePoint(
            id=int(r.id),
            source=r.source,
            name=r.name,
            lsn=r.lsn,
            timeline=r.timeline,
            created_at=float(r.created_at),
            release_id=r.release_id,
        )
        for r in rows
    ]
