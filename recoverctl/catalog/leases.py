"""Leased rows in the catalog: the one claim/renew/release/expiry implementation, and heartbeats.

Both kinds of work the catalog hands out are rows held under a lease: a job on `jobs` (webhook
actions, queued before anyone runs them) and a scheduled occurrence on `schedule_runs` (created by
the runner that claims it). A `Leased` names the table and its owner column; every function here
acts on rows of that shape (`id`, `state`, `lease_expires_at`, `started_at`, `finished_at`), so the
rules are written once: a row is held while it is `running` under its owner's unexpired lease;
only the holder may renew or release it; an expired lease is reclaimed by whoever notices, once.

Reclaiming runs in one transaction that on PostgreSQL locks the expired rows with `FOR UPDATE
SKIP LOCKED` and on SQLite already holds the write lock (the catalog begins with BEGIN IMMEDIATE),
and each update re-checks the expiry, so two processes never both reclaim one row.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from recoverctl.catalog import Catalog
from recoverctl.catalog import tables as t


@dataclass(frozen=True)
class Leased:
    """A catalog table whose rows are held under a lease, and the column naming the holder."""

    table: sa.Table
    owner_column: str

    @property
    def owner(self) -> sa.Column[Any]:
        return self.table.c[self.owner_column]


JOBS = Leased(t.jobs, "lease_owner")
OCCURRENCES = Leased(t.schedule_runs, "runner")


def holder_id(role: str) -> str:
    """Return this process's identity for leases and heartbeats: role:host:pid."""
    return f"{role}:{socket.gethostname()}:{os.getpid()}"


def held_values(spec: Leased, owner: str, lease: float, now: float) -> dict[str, Any]:
    """Return the column values that make a row held by `owner` from `now` for `lease` seconds."""
    return {"state": "running", spec.owner_column: owner, "lease_expires_at": now + lease, "started_at": now}


def _held(spec: Leased, row_id: int, owner: str) -> sa.ColumnElement[bool]:
    return sa.and_(spec.table.c.id == row_id, spec.owner == owner, spec.table.c.state == "running")


def held_row(conn: Connection, spec: Leased, row_id: int, owner: str) -> Any:
    """Return row `row_id` when `owner` holds it, else None."""
    return conn.execute(sa.select(spec.table).where(_held(spec, row_id, owner))).first()


def renew(catalog: Catalog, spec: Leased, row_id: int, owner: str, lease: float) -> bool:
    """Push the lease forward; return False when `owner` no longer holds the row."""
    with catalog.begin() as conn:
        n = conn.execute(
            spec.table.update().where(_held(spec, row_id, owner)).values(lease_expires_at=time.time() + lease)
        ).rowcount
    return n == 1


def release(conn: Connection, spec: Leased, row_id: int, owner: str, values: dict[str, Any]) -> bool:
    """Set `values` on a row `owner` holds, in the caller's transaction; False when it lost the lease."""
    return conn.execute(spec.table.update().where(_held(spec, row_id, owner)).values(**values)).rowcount == 1


def reclaim_expired(
    catalog: Catalog, spec: Leased, values_for: Callable[[Any, float], dict[str, Any]]
) -> list[tuple[Any, dict[str, Any]]]:
    """Give every running row whose lease expired the values `values_for(row, now)` returns.

    Return (row, values) for each row this call changed; a row another process reclaimed first is
    left out.
    """
    now = time.time()
    expired = sa.and_(spec.table.c.state == "running", spec.table.c.lease_expires_at < now)
    changed: list[tuple[Any, dict[str, Any]]] = []
    with catalog.begin() as conn:
        rows = conn.execute(
            sa.select(spec.table).where(expired).order_by(spec.table.c.id).with_for_update(skip_locked=True)
        ).all()
        for row in rows:
            values = values_for(row, now)
            if conn.execute(
                spec.table.update().where(spec.table.c.id == row.id, expired).values(**values)
            ).rowcount:
                changed.append((row, values))
    return changed


def heartbeat(catalog: Catalog, name: str, role: str, details: dict[str, Any] | None = None) -> None:
    """Upsert the heartbeat row `name`: the process is alive as of now."""
    now = time.time()
    with catalog.begin() as conn:
        updated = conn.execute(
            t.heartbeats.update().where(t.heartbeats.c.name == name).values(at=now, details=details)
        ).rowcount
        if not updated:
            conn.execute(t.heartbeats.insert().values(name=name, role=role, at=now, details=details))
