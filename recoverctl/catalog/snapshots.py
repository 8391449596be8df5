"""The catalog's copy of the repository's snapshot list (the repository stays the source of truth).

Written by `Catalog.record_snapshot`; read here by whoever needs backups per source without
opening the repository.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from recoverctl.catalog import Catalog, as_record
from recoverctl.catalog import tables as t


@dataclass(frozen=True)
class SnapshotRecord:
    """One snapshot as the catalog recorded it."""

    id: str
    repository: str
    time: float
    kind: str
    source: str | None
    paths: Any
    tags: Any
    parent: str | None
    summary: Any


def snapshots_newest_first(
    catalog: Catalog,
    source: str,
    *,
    limit: int,
    offset: int = 0,
    mentioning: str | None = None,
) -> list[SnapshotRecord]:
    """Given a source name, return up to `limit` of its recorded snapshots, newest first,
    skipping `offset`; with `mentioning`, only those whose
    kind, tags or summary contain that text (a superset filter the caller refines)."""
    q = sa.select(t.snapshots).where(t.snapshots.c.source == source)
    if mentioning is not None:
        pattern = f"%{mentioning}%"
        q = q.where(
            t.snapshots.c.kind.like(pattern)
            | sa.cast(t.snapshots.c.tags, sa.Text).like(pattern)
            | sa.cast(t.snapshots.c.summary, sa.Text).like(pattern)
        )
    q = q.order_by(t.snapshots.c.time.desc(), t.snapshots.c.id.desc()).offset(offset).limit(limit)
    with catalog.begin() as conn:
        return [as_record(SnapshotRecord, r) for r in conn.execute(q)]


def snapshot_record(catalog: Catalog, snapshot_id: str) -> SnapshotRecord | None:
    """Given a snapshot id, return its catalog record, None when the catalog has none."""
    with catalog.begin() as conn:
        row = conn.execute(sa.select(t.snapshots).where(t.snapshots.c.id == snapshot_id)).first()
    return None if row is None else as_record(SnapshotRecord, row)
