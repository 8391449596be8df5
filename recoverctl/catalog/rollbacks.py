"""Rollbacks and their persisted steps, as the catalog keeps them.

A rollback row names the releases it goes from and to, its plan and its state (running /
succeeded / failed); one step row per step of the machine holds that step's state (pending /
running / done / failed / skipped), times and output, so an interrupted rollback can resume.
Functions ending in `_in` work inside the caller's transaction (`with catalog.begin() as conn`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from recoverctl.catalog import Catalog
from recoverctl.catalog import tables as t
from recoverctl.catalog.releases import set_status
from recoverctl.catalog.service_lock import lock_service, owner_id


@dataclass(frozen=True)
class Rollback:
    """One `rollbacks` row."""

    id: int
    service: str
    from_release: int
    to_release: int
    schema_mode: str
    state: str
    reason: str | None
    actor: str | None
    owner: str | None
    started_at: float
    finished_at: float | None
    plan: dict[str, Any]
    error: str | None


@dataclass(frozen=True)
class RollbackStep:
    """One `rollback_steps` row."""

    id: int
    rollback_id: int
    seq: int
    name: str
    state: str
    started_at: float | None
    finished_at: float | None
    output: dict[str, Any] | None


def _rollback(row: Any) -> Rollback:
    d = dict(row._mapping)
    d["plan"] = d.get("plan") or {}
    return Rollback(**d)


def get_rollback(catalog: Catalog, rollback_id: int) -> Rollback:
    """Return rollback #`rollback_id` (it must exist)."""
    with catalog.begin() as conn:
        return _rollback(conn.execute(sa.select(t.rollbacks).where(t.rollbacks.c.id == rollback_id)).one())


def newest_rollback_in(conn: Connection, service: str) -> Rollback | None:
    """Return the newest rollback of `service`, or None."""
    row = conn.execute(
        sa.select(t.rollbacks).where(t.rollbacks.c.service == service).order_by(t.rollbacks.c.id.desc())
    ).first()
    return _rollback(row) if row is not None else None


def last_started_rollback_in(conn: Connection, service: str) -> Rollback | None:
    """Return the rollback of `service` started last, or None."""
    row = conn.execute(
        sa.select(t.rollbacks)
        .where(t.rollbacks.c.service == service)
        .order_by(t.rollbacks.c.started_at.desc(), t.rollbacks.c.id.desc())
        .limit(1)
    ).first()
    return _rollback(row) if row is not None else None


def rollbacks_since_in(conn: Connection, since: float) -> list[Rollback]:
    """Return the rollbacks of every service started at or after `since`, oldest first."""
    rows = conn.execute(
        sa.select(t.rollbacks).where(t.rollbacks.c.started_at >= since).order_by(t.rollbacks.c.started_at)
    ).all()
    return [_rollback(r) for r in rows]


def rollback_counts_in(conn: Connection) -> dict[str, int]:
    """Return how many rollbacks the catalog holds in each state."""
    rows = conn.execute(sa.select(t.rollbacks.c.state, sa.func.count()).group_by(t.rollbacks.c.state))
    return {str(state): int(n) for state, n in rows.all()}


def create_rollback(
    catalog: Catalog,
    service: str,
    *,
    from_release: int,
    to_release: int,
    schema_mode: str,
    reason: str | None,
    actor: str,
    plan: dict[str, Any],
    steps: Sequence[str],
) -> int:
    """Lock `service` and record a running rollback owned by this process with its `steps`, the
    first one (the lock) done; return its id. Raise LockedError when a deploy or rollback of the
    service holds it."""
    now = time.time()
    with catalog.begin() as conn:
        lock_service(conn, service)
        rollback_id = int(
            conn.execute(
                t.rollbacks.insert().values(
                    service=service,
                    from_release=from_release,
                    to_release=to_release,
                    schema_mode=schema_mode,
                    state="running",
                    reason=reason,
                    actor=actor,
                    owner=owner_id(),
                    started_at=now,
                    plan=plan,
                )
            ).inserted_primary_key[0]  # type: ignore[index]
        )
        for seq, name in enumerate(steps):
            done = seq == 0
            conn.execute(
                t.rollback_steps.insert().values(
                    rollback_id=rollback_id,
                    seq=seq,
                    name=name,
                    state="done" if done else "pending",
                    started_at=now if done else None,
                    finished_at=now if done else None,
                    output={"owner": owner_id()} if done else None,
                )
            )
    return rollback_id


def claim_rollback_in(conn: Connection, rollback_id: int) -> None:
    """Mark rollback #`rollback_id` running again, owned by this process (a resume)."""
    conn.execute(
        t.rollbacks.update()
        .where(t.rollbacks.c.id == rollback_id)
        .values(state="running", owner=owner_id(), finished_at=None, error=None)
    )


def list_steps(catalog: Catalog, rollback_id: int) -> list[RollbackStep]:
    """Return the steps of rollback #`rollback_id` in the order they run."""
    with catalog.begin() as conn:
        rows = conn.execute(
            sa.select(t.rollback_steps)
            .where(t.rollback_steps.c.rollback_id == rollback_id)
            .order_by(t.rollback_steps.c.seq)
        ).all()
    return [RollbackStep(**r._mapping) for r in rows]


def start_step(catalog: Catalog, rollback_id: int, name: str) -> None:
    """Mark step `name` of the rollback running from now."""
    _update_step(catalog, rollback_id, name, state="running", started_at=time.time(), finished_at=None)


def end_step(
    catalog: Catalog, rollback_id: int, name: str, state: str, output: dict[str, Any] | None
) -> None:
    """Record that step `name` of the rollback ended now in `state` (done / skipped / failed)."""
    _update_step(catalog, rollback_id, name, state=state, finished_at=time.time(), output=output)


def _update_step(catalog: Catalog, rollback_id: int, name: str, **values: Any) -> None:
    with catalog.begin() as conn:
        conn.execute(
            t.rollback_steps.update()
            .where(t.rollback_steps.c.rollback_id == rollback_id, t.rollback_steps.c.name == name)
            .values(**values)
        )


def mark_succeeded(catalog: Catalog, rollback_id: int) -> None:
    """Record that rollback #`rollback_id` succeeded now."""
    with catalog.begin() as conn:
        conn.execute(
            t.rollbacks.update()
            .where(t.rollbacks.c.id == rollback_id)
            .values(state="succeeded", finished_at=time.time())
        )


def record_failure(
    catalog: Catalog,
    rollback_id: int,
    step: str | None,
    output: dict[str, Any],
    message: str,
    *,
    target_failed_verification: bool,
) -> None:
    """Record in one transaction that the rollback failed at `step` (with its `output`): the
    rollback is failed with `message`; its target release is failed when it failed verification;
    the release it came from is rolled-back once `stop_current` was done (it no longer serves)."""
    now = time.time()
    with catalog.begin() as conn:
        if step is not None:
            conn.execute(
                t.rollback_steps.update()
                .where(
                    t.rollback_steps.c.rollback_id == rollback_id,
                    t.rollback_steps.c.name == step,
                    t.rollback_steps.c.state != "failed",
                )
                .values(state="failed", finished_at=now, output=output)
            )
        conn.execute(
            t.rollbacks.update()
            .where(t.rollbacks.c.id == rollback_id)
            .values(state="failed", finished_at=now, error=message)
        )
        rb = conn.execute(
            sa.select(t.rollbacks.c.to_release, t.rollbacks.c.from_release).where(
                t.rollbacks.c.id == rollback_id
            )
        ).one()
        if target_failed_verification:
            set_status(conn, int(rb.to_release), "failed", failed_by_rollback=rollback_id)
        stopped = conn.execute(
            sa.select(t.rollback_steps.c.id).where(
                t.rollback_steps.c.rollback_id == rollback_id,
                t.rollback_steps.c.name == "stop_current",
                t.rollback_steps.c.state == "done",
            )
        ).first()
        if stopped is not None:
            set_status(conn, int(rb.from_release), "rolled-back", rolled_back_by=rollback_id)


def swap_live_release(catalog: Catalog, rollback_id: int, from_release: int, to_release: int) -> None:
    """Record in one transaction that rollback #`rollback_id` replaced release `from_release`
    (now rolled-back) with `to_release` (now live)."""
    with catalog.begin() as conn:
        set_status(conn, from_release, "rolled-back", rolled_back_by=rollback_id)
        set_status(conn, to_release, "live", restored_by=rollback_id)
