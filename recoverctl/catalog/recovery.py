"""Recovery points and RPO exposure: the one definition status, summary, drills, metrics and
`postgres status` share.

A source's recovery point is the newest moment it can be restored to, from what the catalog
recorded: the last archived WAL segment, or the newest backup (runs and snapshots; logical dumps
do not count, they cannot be rolled forward). Its RPO exposure at `now` is the data an incident
right now would lose: `now` minus that point, never negative.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import sqlalchemy as sa

from recoverctl.catalog import Catalog, as_record
from recoverctl.catalog import tables as t
from recoverctl.catalog.runs import Run, backups_done_finished_after, backups_done_newest_first
from recoverctl.catalog.snapshots import SnapshotRecord, snapshots_newest_first

WAL_BASIS = "last archived WAL segment"
BACKUP_BASIS = "newest backup (no WAL archived)"


@dataclass(frozen=True)
class WalProgress:
    """How far WAL archiving of one source got, as `wal push` recorded it."""

    source: str
    last_segment: str | None
    last_archived_at: float | None
    last_failed_segment: str | None
    last_failed_at: float | None
    segments_total: int

    @property
    def failing(self) -> bool:
        """True when the newest archive attempt failed."""
        return self.last_failed_at is not None and (
            self.last_archived_at is None or self.last_failed_at > self.last_archived_at
        )


@dataclass(frozen=True)
class LastBackups:
    """When the newest full, incremental and any (non-logical) backup of a source was taken."""

    full: float | None = None
    incremental: float | None = None
    any: float | None = None

    def noting(self, kind: str, at: float | None) -> LastBackups:
        """Return these times with a backup of `kind` taken `at` folded in."""
        if at is None:
            return self

        def newer(old: float | None) -> float:
            return at if old is None or at > old else old

        return LastBackups(
            full=newer(self.full) if kind == "full" else self.full,
            incremental=newer(self.incremental) if kind == "incremental" else self.incremental,
            any=newer(self.any),
        )


@dataclass(frozen=True)
class RecoveryPoint:
    """The newest moment `source` can be restored to; `at` None when nothing is recoverable."""

    source: str
    at: float | None
    basis: str | None
    newest_backup: float | None
    wal: WalProgress | None

    @property
    def last_archived_at(self) -> float | None:
        return self.wal.last_archived_at if self.wal is not None else None

    def exposure(self, now: float) -> float | None:
        """Return the seconds of data lost if the source were lost at `now` (never negative)."""
        return exposure_at(now, self.at)[1]


def exposure_at(now: float, *points: float | None) -> tuple[float | None, float | None]:
    """Given `now` and moments a source can be restored to (None: unknown), return the newest of
    them and the exposure at `now` (seconds, never negative); (None, None) when none is known."""
    newest = max((p for p in points if p is not None), default=None)
    return newest, None if newest is None else max(0.0, now - newest)


@dataclass(frozen=True)
class RpoExposure:
    """A source's RPO exposure at one moment."""

    point: RecoveryPoint
    at: float
    exposure_s: float | None


def wal_progress(catalog: Catalog, source: str) -> WalProgress | None:
    """Return the recorded WAL archiving progress of `source`, None when it never archived."""
    with catalog.begin() as conn:
        row = conn.execute(sa.select(t.wal_status).where(t.wal_status.c.source == source)).first()
    return None if row is None else as_record(WalProgress, row)


def backup_type(details: Any) -> str | None:
    """Given a run's details or a snapshot's summary, return 'full' or 'incremental' when it says."""
    if not isinstance(details, dict):
        return None
    for key in ("type", "backup_type"):
        v = details.get(key)
        if v in ("full", "incremental"):
            return str(v)
    meta = details.get("metadata")
    return backup_type(meta) if isinstance(meta, dict) else None


def _tags_type(tags: Any) -> str | None:
    if isinstance(tags, dict):
        return backup_type(tags)
    if isinstance(tags, list):
        for tag in tags:
            if tag in ("type=full", "type=incremental"):
                return str(tag).split("=", 1)[1]
    return None


# Rows read per newest-first query: a day of hourly backups, a full among them in most catalogs.
_PAGE = 32

Row = TypeVar("Row", Run, SnapshotRecord)


def _run_type(run: Run) -> tuple[str, float | None] | None:
    if "logical" in run.kind:
        return None
    kind = backup_type(run.details) or ("incremental" if "incremental" in run.kind else "full")
    return kind, run.finished_at or run.started_at


def _snapshot_type(snap: SnapshotRecord) -> tuple[str, float | None] | None:
    if "logical" in str(snap.kind):
        return None
    return backup_type(snap.summary) or _tags_type(snap.tags) or "full", snap.time


def _folded(
    found: LastBackups, rows: Sequence[Row], typed: Callable[[Row], tuple[str, float | None] | None]
) -> LastBackups:
    for row in rows:
        kind_at = typed(row)
        if kind_at is not None:
            found = found.noting(*kind_at)
    return found


def _scan_newest(
    page: Callable[[int, str | None], Sequence[Row]], typed: Callable[[Row], tuple[str, float | None] | None]
) -> tuple[LastBackups, Row | None, bool]:
    """Given a newest-first page reader (offset, text the rows must mention) and a row's type and
    time, return the newest full and incremental found, the oldest row the unfiltered scan read
    and whether that scan read every row. Reads pages until both types were seen; when only the
    incremental one is missing (sources that never take one), it reads only the rows that
    mention "incremental" instead of every row."""
    found, offset, oldest = LastBackups(), 0, None
    while found.full is None or found.incremental is None:
        rows = page(offset, None)
        found, offset = _folded(found, rows, typed), offset + len(rows)
        oldest = rows[-1] if rows else oldest
        if len(rows) < _PAGE:
            return found, oldest, True
        if found.full is not None and found.incremental is None:
            break
    offset = 0
    while found.incremental is None:
        rows = page(offset, "incremental")
        found, offset = _folded(found, rows, typed), offset + len(rows)
        if len(rows) < _PAGE:
            break
    return found, oldest, False


def last_backups(catalog: Catalog, source: str) -> LastBackups:
    """Return when the newest backup of `source` was taken, per type, from runs and snapshots
    (logical dumps left out). Reads newest first and stops once both types were found."""
    runs, oldest, complete = _scan_newest(
        lambda offset, mentioning: backups_done_newest_first(
            catalog, source, limit=_PAGE, offset=offset, mentioning=mentioning
        ),
        _run_type,
    )
    if not complete and oldest is not None:
        # A run's time is when it finished: an older, longer run may have finished later.
        threshold = min((at for at in (runs.full, runs.incremental) if at is not None), default=float("-inf"))
        late = backups_done_finished_after(
            catalog, source, started_by=oldest.started_at, finished_after=threshold
        )
        runs = _folded(runs, late, _run_type)
    snaps, _, _ = _scan_newest(
        lambda offset, mentioning: snapshots_newest_first(
            catalog, source, limit=_PAGE, offset=offset, mentioning=mentioning
        ),
        _snapshot_type,
    )
    return runs.noting("full", snaps.full).noting("incremental", snaps.incremental)


def newest_point(source: str, wal: WalProgress | None, newest_backup: float | None) -> RecoveryPoint:
    """Given what was archived and the newest backup's time, return the recovery point."""
    if wal is not None and wal.last_archived_at is not None:
        return RecoveryPoint(
            source, max(wal.last_archived_at, newest_backup or 0.0), WAL_BASIS, newest_backup, wal
        )
    if newest_backup is not None:
        return RecoveryPoint(source, newest_backup, BACKUP_BASIS, newest_backup, wal)
    return RecoveryPoint(source, None, None, None, wal)


def recovery_point(catalog: Catalog, source: str, *, backups: LastBackups | None = None) -> RecoveryPoint:
    """Given a source name, return its recovery point from the catalog. `backups` saves reading
    the backups again when the caller has them."""
    newest_backup = (backups or last_backups(catalog, source)).any
    return newest_point(source, wal_progress(catalog, source), newest_backup)


def rpo_exposure(
    catalog: Catalog, source: str, now: float, *, backups: LastBackups | None = None
) -> RpoExposure:
    """Given a source name and the moment to measure at, return its RPO exposure."""
    point = recovery_point(catalog, source, backups=backups)
    return RpoExposure(point, now, point.exposure(now))


def archiving_sources(catalog: Catalog) -> list[str]:
    """Return the names of the sources whose WAL archiving was ever recorded."""
    with catalog.begin() as conn:
        return [str(s) for s in conn.execute(sa.select(t.wal_status.c.source)).scalars() if s]
