"""Restore drills: their records (targets, measured RTO/RPO, verdict) and the snapshot pins that
keep a drill's snapshot from being pruned while it restores."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from recoverctl.catalog import Catalog, as_record, now
from recoverctl.catalog import tables as t

# Verdicts of drills that ran to a score (not running, not cancelled).
SCORED = ("pass", "fail")
# What a drill's result holds beyond the columns; recorded in `details`, shown at the top level
# of its report.
DETAIL_KEYS = (
    "rpo_basis",
    "failed_phase",
    "hint",
    "snapshot_time",
    "recovery_target",
    "recovered_commit_ts",
    "recovered_lsn",
    "cold",
)


@dataclass(frozen=True)
class DrillRecord:
    """One drill as recorded."""

    id: int
    name: str
    source: str | None
    snapshot_id: str | None
    started_at: float
    finished_at: float | None
    verdict: str | None  # running / pass / fail / cancelled
    rto_s: float | None
    rpo_s: float | None
    rto_target_s: float | None
    rpo_target_s: float | None
    recovery_point: str | None
    phases: Any
    checks: Any
    bytes: int | None
    reason: str | None
    details: Any


def start_drill(
    catalog: Catalog,
    *,
    name: str,
    source: str | None,
    started_at: float,
    rto_target_s: float,
    rpo_target_s: float,
    recovery_point: str,
    details: dict[str, Any],
) -> int:
    """Record a drill that starts (verdict 'running'); return its id."""
    values = {
        "name": name,
        "source": source,
        "started_at": started_at,
        "verdict": "running",
        "rto_target_s": rto_target_s,
        "rpo_target_s": rpo_target_s,
        "recovery_point": recovery_point,
        "details": details,
    }
    with catalog.begin() as conn:
        return int(conn.execute(t.drills.insert().values(**values)).inserted_primary_key[0])  # type: ignore[index]


def finish_drill(
    catalog: Catalog,
    drill_id: int | None,
    *,
    snapshot_id: str | None,
    finished_at: float,
    verdict: str,
    rto_s: float | None,
    rpo_s: float | None,
    phases: dict[str, float],
    checks: list[dict[str, Any]],
    bytes: int | None,
    reason: str | None,
    details: dict[str, Any],
) -> None:
    """Record how drill `drill_id` ended: what it measured and its verdict."""
    values = {
        "snapshot_id": snapshot_id,
        "finished_at": finished_at,
        "verdict": verdict,
        "rto_s": rto_s,
        "rpo_s": rpo_s,
        "phases": phases,
        "checks": checks,
        "bytes": bytes,
        "reason": reason,
        "details": details,
    }
    with catalog.begin() as conn:
        conn.execute(t.drills.update().where(t.drills.c.id == drill_id).values(**values))


def drill_record(catalog: Catalog, drill_id: int) -> DrillRecord | None:
    """Return drill `drill_id`, None when there is no such drill."""
    with catalog.begin() as conn:
        row = conn.execute(sa.select(t.drills).where(t.drills.c.id == drill_id)).first()
    return None if row is None else as_record(DrillRecord, row)


def newest_drills(
    catalog: Catalog, *, name: str | None = None, source: str | None = None, limit: int = 50
) -> list[DrillRecord]:
    """Return the newest `limit` drills (of playbook `name`, of `source`), newest first."""
    q = sa.select(t.drills).order_by(t.drills.c.started_at.desc(), t.drills.c.id.desc()).limit(limit)
    if name:
        q = q.where(t.drills.c.name == name)
    if source:
        q = q.where(t.drills.c.source == source)
    with catalog.begin() as conn:
        return [as_record(DrillRecord, r) for r in conn.execute(q)]


def drills_since(catalog: Catalog, since: float) -> list[DrillRecord]:
    """Return the drills started at or after `since`, oldest first."""
    q = sa.select(t.drills).where(t.drills.c.started_at >= since).order_by(t.drills.c.started_at)
    with catalog.begin() as conn:
        return [as_record(DrillRecord, r) for r in conn.execute(q)]


def last_scored_drill(catalog: Catalog, source: str) -> DrillRecord | None:
    """Return the newest drill of `source` that passed or failed, None when none did."""
    q = (
        sa.select(t.drills)
        .where(t.drills.c.source == source, t.drills.c.verdict.in_(SCORED))
        .order_by(t.drills.c.started_at.desc(), t.drills.c.id.desc())
        .limit(1)
    )
    with catalog.begin() as conn:
        row = conn.execute(q).first()
    return None if row is None else as_record(DrillRecord, row)


def ever_drilled(catalog: Catalog, source: str) -> bool:
    """Return True when any drill of `source` was recorded."""
    q = sa.select(t.drills.c.id).where(t.drills.c.source == source).limit(1)
    with catalog.begin() as conn:
        return conn.execute(q).first() is not None


def last_finished_drills(catalog: Catalog) -> list[DrillRecord]:
    """Return, per source, the newest drill that finished."""
    newest = (
        sa.select(sa.func.max(t.drills.c.id))
        .where(t.drills.c.finished_at.is_not(None))
        .group_by(t.drills.c.source)
        .scalar_subquery()
    )
    with catalog.begin() as conn:
        return [
            as_record(DrillRecord, r)
            for r in conn.execute(sa.select(t.drills).where(t.drills.c.id.in_(newest)))
        ]


def pin_snapshot(catalog: Catalog, snapshot_id: str, *, reason: str, owner: str, expires_at: float) -> int:
    """Pin `snapshot_id` against pruning until `expires_at` (or until unpinned); return the pin's id."""
    values = {
        "snapshot_id": snapshot_id,
        "reason": reason,
        "owner": owner,
        "created_at": now(),
        "expires_at": expires_at,
    }
    with catalog.begin() as conn:
        return int(conn.execute(t.pins.insert().values(**values)).inserted_primary_key[0])  # type: ignore[index]


def unpin_snapshot(catalog: Catalog, pin_id: int) -> None:
    """Remove pin `pin_id`."""
    with catalog.begin() as conn:
        conn.execute(t.pins.delete().where(t.pins.c.id == pin_id))
