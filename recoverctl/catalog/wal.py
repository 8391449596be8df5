"""The catalog's record of PostgreSQL WAL archiving: per-source archive progress and named
restore points. RPO exposure is read in `catalog.recovery` (`wal_progress`); this module writes
what it is computed from."""

from __future__ import annotations

import re
from dataclasses import dataclass

import sqlalchemy as sa

from recoverctl.catalog import Catalog
from recoverctl.catalog import tables as t

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


def record_archived(catalog: Catalog, source: str, segment: str, at: float, count: int = 1) -> None:
    """Count `count` WAL files of `source` as archived at `at`, the newest being `segment`.

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


def record_failed(catalog: Catalog, source: str, segment: str, at: float) -> None:
    """Record that archiving `segment` of `source` failed at `at`."""
    with catalog.begin() as db:
        row = db.execute(sa.select(t.wal_status.c.source).where(t.wal_status.c.source == source)).first()
        _upsert(db, row is None, source, {"last_failed_segment": segment, "last_failed_at": at})


def _upsert(db: sa.Connection, new: bool, source: str, values: dict[str, object]) -> None:
    if new:
        db.execute(t.wal_status.insert().values(source=source, **{"segments_total": 0, **values}))
    else:
        db.execute(t.wal_status.update().where(t.wal_status.c.source == source).values(**values))


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
