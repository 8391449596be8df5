"""Scheduled occurrences in the catalog: claim with a lease, renew, finish, abandon; heartbeats.

One row per (schedule, due time), unique in the database: whichever runner inserts it first owns
the occurrence, on SQLite and PostgreSQL alike, so several runners never run one job twice.
Holding, renewing, finishing and reclaiming the lease are the catalog's one implementation
(`catalog.leases`, shared with the webhook job queue); this module adds what only a schedule has:
an occurrence is created by the claim itself, and one that overlaps a live run is recorded skipped.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Literal

import sqlalchemy as sa

from recoverctl.catalog import Catalog, leases
from recoverctl.catalog import tables as t

sr = t.schedule_runs

# Runners beat like every other long-running process: one heartbeat implementation.
heartbeat = leases.heartbeat


def runner_id(role: str = "scheduler") -> str:
    """Return this process's runner name: role:host:pid."""
    return leases.holder_id(role)


@dataclass(frozen=True)
class Claim:
    id: int
    schedule: str
    due_at: float
    runner: str


@dataclass(frozen=True)
class ClaimResult:
    state: Literal["claimed", "taken", "overlap"]
    claim: Claim | None = None
    detail: str = ""


def last_due(catalog: Catalog, schedule: str) -> float | None:
    """Return the newest recorded due time of `schedule`, or None."""
    with catalog.begin() as conn:
        value = conn.execute(sa.select(sa.func.max(sr.c.due_at)).where(sr.c.schedule == schedule)).scalar()
    return float(value) if value is not None else None


def _skipped(schedule: str, due_at: float, runner: str, outcome: dict[str, Any], now: float) -> Any:
    return sr.insert().values(
        schedule=schedule,
        due_at=due_at,
        state="skipped",
        runner=runner,
        started_at=now,
        finished_at=now,
        outcome=json.dumps(outcome),
    )


def claim(catalog: Catalog, schedule: str, due_at: float, runner: str, lease: float) -> ClaimResult:
    """Try to own one occurrence; return claimed, taken (another runner has it) or overlap (skipped).

    With overlap the occurrence is recorded as skipped, because the previous run still holds a
    live lease.
    """
    now = time.time()
    try:
        with catalog.begin() as conn:
            busy = conn.execute(
                sa.select(sr.c.id, sr.c.runner, sr.c.due_at)
                .where(sr.c.schedule == schedule, sr.c.state == "running", sr.c.lease_expires_at >= now)
                .limit(1)
            ).first()
            if busy is not None:
                detail = f"previous run (due {busy.due_at:.0f}) still running on {busy.runner}"
                conn.execute(_skipped(schedule, due_at, runner, {"reason": "overlap", "detail": detail}, now))
                return ClaimResult("overlap", detail=detail)
            held = leases.held_values(leases.OCCURRENCES, runner, lease, now)
            row_id = conn.execute(
                sr.insert().values(schedule=schedule, due_at=due_at, **held)
            ).inserted_primary_key[0]  # type: ignore[index]
    except sa.exc.IntegrityError:
        return ClaimResult("taken", detail="another runner owns this occurrence")
    return ClaimResult("claimed", Claim(int(row_id), schedule, due_at, runner))


def record_skipped(catalog: Catalog, schedule: str, due_at: float, runner: str, reason: str) -> bool:
    """Record an occurrence deliberately not run; return False when another runner recorded it first."""
    try:
        with catalog.begin() as conn:
            conn.execute(_skipped(schedule, due_at, runner, {"reason": reason}, time.time()))
    except sa.exc.IntegrityError:
        return False
    return True


def renew(catalog: Catalog, c: Claim, lease: float) -> bool:
    """Extend the lease; return False when the row is no longer ours and running (abandoned)."""
    return leases.renew(catalog, leases.OCCURRENCES, c.id, c.runner, lease)


def finish(catalog: Catalog, c: Claim, state: str, outcome: dict[str, Any]) -> bool:
    """Record the final state; return False when the run was meanwhile marked abandoned."""
    values = {"state": state, "finished_at": time.time(), "outcome": json.dumps(outcome, default=str)}
    with catalog.begin() as conn:
        return leases.release(conn, leases.OCCURRENCES, c.id, c.runner, values)


def abandon_expired(catalog: Catalog, by: str) -> list[dict[str, Any]]:
    """Mark running occurrences whose lease expired as abandoned; return the ones this call marked."""

    def abandoned(row: Any, now: float) -> dict[str, Any]:
        outcome = {"reason": "lease expired", "runner": row.runner, "noticed_by": by}
        return {"state": "abandoned", "finished_at": now, "outcome": json.dumps(outcome)}

    return [
        {"id": row.id, "schedule": row.schedule, "due_at": row.due_at, "runner": row.runner}
        for row, _ in leases.reclaim_expired(catalog, leases.OCCURRENCES, abandoned)
    ]


def previous_finished(catalog: Catalog, schedule: str, before_id: int) -> Any:
    """Return the latest finished (not skipped) occurrence of `schedule` older than `before_id`."""
    with catalog.begin() as conn:
        return conn.execute(
            sa.select(sr)
            .where(
                sr.c.schedule == schedule,
                sr.c.id < before_id,
                sr.c.state.in_(["succeeded", "failed", "abandoned"]),
            )
            .order_by(sr.c.due_at.desc())
            .limit(1)
        ).first()
