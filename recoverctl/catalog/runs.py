"""Run history: what backups, verifies and other operations ran, when, and how they ended; and
the heartbeats of the runners (scheduler loops, workers) that run them.

Runs are written by `Catalog.start_run`/`finish_run` (through the operation wrapper); this module
answers the questions the reporting side asks of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from recoverctl.catalog import Catalog, as_record
from recoverctl.catalog import tables as t

# A run counts as a backup that produced data when it ended in one of these states.
BACKUP_DONE = ("succeeded", "partial")


@dataclass(frozen=True)
class Run:
    """One row of the run history."""

    id: int
    kind: str
    source: str | None
    repository: str | None
    started_at: float
    finished_at: float | None
    status: str  # running / succeeded / partial / failed
    bytes_read: int | None
    bytes_added: int | None
    snapshot_id: str | None
    error: str | None
    details: Any


def _backups_done_of(source: str) -> sa.Select[Any]:
    return sa.select(t.runs).where(
        t.runs.c.source == source, t.runs.c.kind.like("backup%"), t.runs.c.status.in_(BACKUP_DONE)
    )


def backups_done_newest_first(
    catalog: Catalog,
    source: str,
    *,
    limit: int,
    offset: int = 0,
    mentioning: str | None = None,
) -> list[Run]:
    """Given a source, return up to `limit` of its backup runs that produced a snapshot, newest
    start first, skipping `offset`; with
    `mentioning`, only those whose kind or details contain that text (a cheap superset filter
    the caller refines after decoding the details)."""
    q = _backups_done_of(source)
    if mentioning is not None:
        pattern = f"%{mentioning}%"
        q = q.where(t.runs.c.kind.like(pattern) | sa.cast(t.runs.c.details, sa.Text).like(pattern))
    q = q.order_by(t.runs.c.started_at.desc(), t.runs.c.id.desc()).offset(offset).limit(limit)
    with catalog.begin() as conn:
        return [as_record(Run, r) for r in conn.execute(q)]


def backups_done_finished_after(
    catalog: Catalog, source: str, *, started_by: float, finished_after: float
) -> list[Run]:
    """Given a source, return its backup runs that produced a snapshot, started at or before
    `started_by` and finished after `finished_after` (long runs a newest-first scan by start
    time would miss)."""
    q = _backups_done_of(source).where(
        t.runs.c.started_at <= started_by, t.runs.c.finished_at > finished_after
    )
    with catalog.begin() as conn:
        return [as_record(Run, r) for r in conn.execute(q)]


def backups_since(catalog: Catalog, since: float) -> list[Run]:
    """Return every backup run started at or after `since`, in storage order."""
    q = sa.select(t.runs).where(t.runs.c.kind.like("backup%"), t.runs.c.started_at >= since)
    with catalog.begin() as conn:
        return [as_record(Run, r) for r in conn.execute(q)]


def last_succeeded_backups(catalog: Catalog) -> dict[str | None, float | None]:
    """Return, per source, when its newest succeeded backup run finished."""
    q = (
        sa.select(t.runs.c.source, sa.func.max(t.runs.c.finished_at))
        .where(t.runs.c.kind.like("backup%"), t.runs.c.status == "succeeded")
        .group_by(t.runs.c.source)
    )
    with catalog.begin() as conn:
        return {source: at for source, at in conn.execute(q).all()}


def finished_runs(
    catalog: Catalog, kind: str, *, repository: str | None = None, with_details: bool = False, limit: int = 1
) -> list[Run]:
    """Given a run kind (and optionally the repository URL it ran on), return its newest finished
    runs, newest first; with `with_details`, only those that recorded details."""
    q = sa.select(t.runs).where(t.runs.c.kind == kind, t.runs.c.status != "running")
    if repository is not None:
        q = q.where(t.runs.c.repository == repository)
    if with_details:
        q = q.where(t.runs.c.details.is_not(None))
    with catalog.begin() as conn:
        return [as_record(Run, r) for r in conn.execute(q.order_by(t.runs.c.started_at.desc()).limit(limit))]


@dataclass(frozen=True)
class Heartbeat:
    """The last sign of life of one runner (a scheduler loop, a worker)."""

    name: str  # e.g. scheduler:<host>:<pid>
    role: str
    at: float
    details: Any


def heartbeats(catalog: Catalog, role: str | None = None) -> list[Heartbeat]:
    """Return the runners' last heartbeats (of `role` only, when given); raise CatalogError when
    the catalog is unreachable."""
    q = sa.select(t.heartbeats)
    if role is not None:
        q = q.where(t.heartbeats.c.role == role)
    with catalog.begin() as conn:
        return [as_record(Heartbeat, r) for r in conn.execute(q)]
