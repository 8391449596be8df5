"""The persistent job queue on the `jobs` table: enqueue, atomic claim with a lease, finish, recover.

The lease rules (renew, release, reclaim after expiry, heartbeats) are the catalog's one
implementation in `catalog.leases`, shared with scheduled occurrences; this module adds what only
a queue has: queued jobs, attempts, `not_before` and the active key.

A job is claimed by one `UPDATE ... WHERE state='queued'` inside a transaction that on PostgreSQL
first locks the candidate row with `FOR UPDATE SKIP LOCKED`, and on SQLite already holds the write
lock (the catalog begins with BEGIN IMMEDIATE) — so two workers never claim the same job. A worker
extends its lease while it runs a job; a lease that expires means the worker died, and the job is
queued again only when its kind can resume safely (attempts < max_attempts), else abandoned.
A job whose attempt failed on something passing (an engine or host that did not answer) may be
queued again by its worker with `retry_later`: it keeps its active key, and is not claimed before
its `not_before` time.

`dedup_key` holds `active:<kind>:<target>` while a job is queued or running and is cleared when it
finishes: the unique index makes "one active job per kind and target" a database guarantee.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from recoverctl.catalog import Catalog, leases
from recoverctl.catalog import tables as t

ACTIVE_STATES = ("queued", "running")


def active_key(kind: str, target: str) -> str:
    return f"active:{kind}:{target}"


def job_dict(row: Any) -> dict[str, Any]:
    d = dict(row._mapping)
    d["payload"] = d.get("payload") or {}
    return d


def enqueue(
    conn: Connection,
    kind: str,
    payload: dict[str, Any],
    *,
    target: str | None = None,
    max_attempts: int = 1,
) -> int:
    """Insert a queued job in the caller's transaction and return its id.

    With `target`, the job holds the active key for (kind, target): a second enqueue for the same
    pair while this one is queued or running raises sqlalchemy IntegrityError.
    """
    return int(
        conn.execute(
            t.jobs.insert().values(
                kind=kind,
                payload=payload,
                state="queued",
                attempts=0,
                max_attempts=max_attempts,
                dedup_key=active_key(kind, target) if target is not None else None,
                created_at=time.time(),
            )
        ).inserted_primary_key[0]  # type: ignore[index]
    )


def active_job(conn: Connection, kind: str, target: str) -> dict[str, Any] | None:
    """Return the queued or running job for (kind, target), or None."""
    row = conn.execute(sa.select(t.jobs).where(t.jobs.c.dedup_key == active_key(kind, target))).first()
    return job_dict(row) if row is not None else None


def claim(catalog: Catalog, owner: str, kinds: Iterable[str], lease: float) -> dict[str, Any] | None:
    """Claim the oldest queued job of one of `kinds` for `owner`; return it (state running) or None."""
    kinds = list(kinds)
    with catalog.begin() as conn:
        now = time.time()
        candidate = conn.execute(
            sa.select(t.jobs.c.id)
            .where(
                t.jobs.c.state == "queued",
                t.jobs.c.kind.in_(kinds),
                sa.or_(t.jobs.c.not_before.is_(None), t.jobs.c.not_before <= now),
            )
            .order_by(t.jobs.c.id)
            .limit(1)
            .with_for_update(skip_locked=True)
        ).scalar()
        if candidate is None:
            return None
        claimed = conn.execute(
            t.jobs.update()
            .where(t.jobs.c.id == candidate, t.jobs.c.state == "queued")
            .values(**leases.held_values(leases.JOBS, owner, lease, now), attempts=t.jobs.c.attempts + 1)
        ).rowcount
        if claimed != 1:
            return None
        return job_dict(conn.execute(sa.select(t.jobs).where(t.jobs.c.id == candidate)).one())


def extend_lease(catalog: Catalog, job_id: int, owner: str, lease: float) -> bool:
    """Push the lease forward; return False when `owner` no longer holds the job."""
    return leases.renew(catalog, leases.JOBS, job_id, owner, lease)


def finish(
    catalog: Catalog,
    job_id: int,
    owner: str,
    state: str,
    *,
    result: dict[str, Any] | None = None,
    error: str | None = None,
) -> bool:
    """Record the outcome (succeeded/failed) of a job `owner` holds; return False if it lost the lease."""
    values = {
        "state": state,
        "finished_at": time.time(),
        "result": result,
        "error": error,
        "dedup_key": None,
        "lease_expires_at": None,
    }
    with catalog.begin() as conn:
        return leases.release(conn, leases.JOBS, job_id, owner, values)


def retry_later(
    catalog: Catalog, job_id: int, owner: str, delay: float, *, result: dict[str, Any], error: str
) -> bool:
    """Queue a job `owner` holds again, not to be claimed for `delay` seconds, marked `resume`
    so its next attempt continues what this one began; return False if it lost the lease.

    The job keeps its active key meanwhile: alerts for its target are absorbed by it, and the
    cap and cooldown see one job, however many attempts it takes.
    """
    with catalog.begin() as conn:
        row = leases.held_row(conn, leases.JOBS, job_id, owner)
        if row is None:
            return False
        values = {
            "state": "queued",
            "not_before": time.time() + delay,
            "lease_owner": None,
            "lease_expires_at": None,
            "payload": {**job_dict(row)["payload"], "resume": True},
            "result": result,
            "error": error,
        }
        return leases.release(conn, leases.JOBS, job_id, owner, values)


def recover_expired(catalog: Catalog) -> list[dict[str, Any]]:
    """Requeue (attempts left) or abandon running jobs whose lease expired; return what changed."""

    def requeue_or_abandon(row: Any, now: float) -> dict[str, Any]:
        job = job_dict(row)
        if job["attempts"] < job["max_attempts"]:
            return {
                "state": "queued",
                "lease_owner": None,
                "lease_expires_at": None,
                "payload": {**job["payload"], "resume": True},
            }
        return {
            "state": "abandoned",
            "finished_at": now,
            "dedup_key": None,
            "error": f"lease of {job['lease_owner']} expired while running (worker died)",
        }

    return [
        {**job_dict(row), **values}
        for row, values in leases.reclaim_expired(catalog, leases.JOBS, requeue_or_abandon)
    ]


def get_job(catalog: Catalog, job_id: int) -> dict[str, Any] | None:
    with catalog.begin() as conn:
        row = conn.execute(sa.select(t.jobs).where(t.jobs.c.id == job_id)).first()
    return job_dict(row) if row is not None else None


def count_by_state(conn: Connection) -> dict[str, int]:
    rows = conn.execute(sa.select(t.jobs.c.state, sa.func.count()).group_by(t.jobs.c.state)).all()
    return {str(state): int(n) for state, n in rows}
