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


def snapshots_of(catalog: Catalog, source: str) -> list[SnapshotRecord]:
    """Given a source name, return the recorded snapshots of it, in storage order."""
    with catalog.begin() as conn:
        rows = conn.execute(sa.select(t.snapshots).where(t.snapshots.c.source == source))
        return [as_record(SnapshotRecord, r) for r in rows]


def snapshot_record(catalog: Catalog, snapshot_id: str) -> SnapshotRecord | None:
    """Given a snapshot id, return its catalog record, None when the catalog has none."""
    with catalog.begin() as conn:
        row = conn.execute(sa.select(t.snapshots).where(t.snapshots.c.id == snapshot_id)).first()
    return None if row is None else as_record(SnapshotRecord, row)
