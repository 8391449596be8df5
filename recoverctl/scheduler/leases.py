"""Scheduled occurrences in the catalog: claim with a lease, renew, finish, abandon; heartbeats.

One row per (schedule, due time), unique in the database: whichever runner inserts it first owns
the occurrence, on SQLite and PostgreSQL alike, so several runners never run one job twice.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from typing import Any, Literal

import sqlalchemy as sa

from recoverctl.catalog import Catalog
from recoverctl.catalog import tables as t

sr = t.schedule_runs


def runner_id(role: str = "scheduler") -> str:
    """Return this process's runner name: role:host:pid."""
    return f"{role}:{socket.gethostname()}:{os.getpid()}"


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
                conn.execute(
                    sr.insert().values(
                        schedule=schedule,
                        due_at=due_at,
                        state="skipped",
                        runner=runner,
                        started_at=now,
                        finished_at=now,
                        outcome=json.dumps({"reason": "overlap", "detail": detail}),
                    )
                )
                return ClaimResult("overlap", detail=detail)
            row_id = conn.execute(
                sr.insert().values(
                    schedule=schedule,
                    due_at=due_at,
                    state="running",
                    runner=runner,
                    lease_expires_at=now + lease,
                    started_at=now,
                )
            ).inserted_primary_key[0]  # type: ignore[index]
    except sa.exc.IntegrityError:
        return ClaimResult("taken", detail="another runner owns this occurrence")
    return ClaimResult("claimed", Claim(int(row_id), schedule, due_at, runner))


def record_skipped(catalog: Catalog, schedule: str, due_at: float, runner: str, reason: str) -> bool:
    """Record an occurrence deliberately not run; return False when another runner recorded it first."""
    now = time.time()
    try:
        with catalog.begin() as conn:
            conn.execute(
                sr.insert().values(
                    schedule=schedule,
                    due_at=due_at,
                    state="skipped",
                    runner=runner,
                    started_at=now,
                    finished_at=now,
                    outcome=json.dumps({"reason": reason}),
                )
            )
    except sa.exc.IntegrityError:
        return False
    return True


def renew(catalog: Catalog, c: Claim, lease: float) -> bool:
    """Extend the lease; return False when the row is no longer ours and running (abandoned)."""
    with catalog.begin() as conn:
        n = conn.execute(
            sr.update()
            .where(sr.c.id == c.id, sr.c.runner == c.runner, sr.c.state == "running")
            .values(lease_expires_at=time.time() + lease)
        ).rowcount
    return bool(n)


def finish(catalog: Catalog, c: Claim, state: str, outcome: dict[str, Any]) -> bool:
    """Record the final state; return False when the run was meanwhile marked abandoned."""
    with catalog.begin() as conn:
        n = conn.execute(
            sr.update()
            .where(sr.c.id == c.id, sr.c.runner == c.runner, sr.c.state == "running")
            .values(state=state, finished_at=time.time(), outcome=json.dumps(outcome, default=str))
        ).rowcount
    return bool(n)


def abandon_expired(catalog: Catalog, by: str) -> list[dict[str, Any]]:
    """Mark running occurrences whose lease expired as abandoned; return the ones this call marked."""
    now = time.time()
    with catalog.begin() as conn:
        rows = conn.execute(
            sa.select(sr.c.id, sr.c.schedule, sr.c.due_at, sr.c.runner).where(
                sr.c.state == "running", sr.c.lease_expires_at < now
            )
        ).all()
    marked = []
    for row in rows:
        outcome = {"reason": "lease expired", "runner": row.runner, "noticed_by": by}
        with catalog.begin() as conn:
            n = conn.execute(
                sr.update()
                .where(sr.c.id == row.id, sr.c.state == "running", sr.c.lease_expires_at < now)
                .values(state="abandoned", finished_at=now, outcome=json.dumps(outcome))
            ).rowcount
        if n:
            marked.append(
                {"id": row.id, "schedule": row.schedule, "due_at": row.due_at, "runner": row.runner}
            )
    return marked


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


def heartbeat(catalog: Catalog, name: str, role: str, details: dict[str, Any]) -> None:
    """Upsert this process's heartbeat row."""
    now = time.time()
    with catalog.begin() as conn:
        n = conn.execute(
            t.heartbeats.update().where(t.heartbeats.c.name == name).values(at=now, details=details)
        ).rowcount
        if not n:
            conn.execute(t.heartbeats.insert().values(name=name, role=role, at=now, details=details))
