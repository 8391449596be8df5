"""Leased rows of the `jobs` table: the one claim/renew/release/expiry implementation, and heartbeats.

Every kind of work the catalog hands out is a row of `jobs` held under a lease: a webhook action
(queued before anyone runs it) or a scheduled occurrence (created by the runner that claims it).
The rules are written once: a row is held while it is `running` under its owner's unexpired
lease; only the holder may renew or release it; an expired lease is reclaimed by whoever notices,
once. Which rows a reclaimer looks after is its `Pool`: a worker reclaims webhook jobs, a
scheduler runner reclaims occurrences, each with its own consequences (requeue, events).

Reclaiming runs in one transaction that on PostgreSQL locks the expired rows with `FOR UPDATE
SKIP LOCKED` and on SQLite already holds the write lock (the catalog begins with BEGIN IMMEDIATE),
and each update re-checks the expiry, so two processes never both reclaim one row.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row

from recoverctl.catalog import Catalog
from recoverctl.catalog import tables as t
from recoverctl.errors import CatalogError

log = logging.getLogger(__name__)

# The kind of a scheduled occurrence's row; every other kind is a webhook action.
OCCURRENCE_KIND = "schedule"


@dataclass(frozen=True)
class Pool:
    """The rows of `jobs` one kind of process reclaims when their lease expires."""

    name: str
    where: sa.ColumnElement[bool]


QUEUE = Pool("queue", t.jobs.c.kind != OCCURRENCE_KIND)
OCCURRENCES = Pool("occurrences", t.jobs.c.kind == OCCURRENCE_KIND)


@dataclass(frozen=True)
class Heartbeat:
    """A long-running process's last sign of life."""

    name: str
    role: str
    at: float
    details: dict[str, Any]


def holder_id(role: str) -> str:
    """Return this process's identity for leases and heartbeats: role:host:pid."""
    return f"{role}:{socket.gethostname()}:{os.getpid()}"


def held_values(owner: str, lease: float, now: float) -> dict[str, Any]:
    """Return the column values that make a row held by `owner` from `now` for `lease` seconds."""
    return {"state": "running", "lease_owner": owner, "lease_expires_at": now + lease, "started_at": now}


def _held(row_id: int, owner: str) -> sa.ColumnElement[bool]:
    return sa.and_(t.jobs.c.id == row_id, t.jobs.c.lease_owner == owner, t.jobs.c.state == "running")


def held_row(conn: Connection, row_id: int, owner: str) -> Row[Any] | None:
    """Return row `row_id` when `owner` holds it, else None."""
    return conn.execute(sa.select(t.jobs).where(_held(row_id, owner))).first()


def renew(catalog: Catalog, row_id: int, owner: str, lease: float) -> bool:
    """Push the lease forward; return False when `owner` no longer holds the row."""
    with catalog.begin() as conn:
        n = conn.execute(
            t.jobs.update().where(_held(row_id, owner)).values(lease_expires_at=time.time() + lease)
        ).rowcount
    return n == 1


class LeaseKeeper(threading.Thread):
    """Renews the lease `owner` holds on row `row_id` every lease/3 seconds until `done` is set.

    `lost` is set when the row was taken away (another process found the lease expired): the
    holder should stop its work, for someone else may already be doing it. A catalog that does
    not answer is retried at the next renewal.
    """

    def __init__(self, catalog: Catalog, row_id: int, owner: str, lease: float, what: str):
        super().__init__(name=f"lease-{row_id}", daemon=True)
        self.catalog, self.row_id, self.owner, self.lease, self.what = catalog, row_id, owner, lease, what
        self.done = threading.Event()
        self.lost = threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.lease / 3):
            try:
                if not renew(self.catalog, self.row_id, self.owner, self.lease):
                    self.lost.set()
                    log.error("lease on %s was lost", self.what)
                    return
            except CatalogError as e:
                log.warning("could not renew the lease on %s: %s", self.what, e)

    def stop(self) -> None:
        """Stop renewing and wait for the renewing thread to end."""
        self.done.set()
        self.join()


def release(conn: Connection, row_id: int, owner: str, values: dict[str, Any]) -> bool:
    """Set `values` on a row `owner` holds, in the caller's transaction; False when it lost the lease."""
    return conn.execute(t.jobs.update().where(_held(row_id, owner)).values(**values)).rowcount == 1


def reclaim_expired(
    catalog: Catalog, pool: Pool, values_for: Callable[[Row[Any], float], dict[str, Any]]
) -> list[tuple[Row[Any], dict[str, Any]]]:
    """Give every running row of `pool` whose lease expired the values `values_for(row, now)` returns.

    Return (row, values) for each row this call changed; a row another process reclaimed first is
    left out.
    """
    now = time.time()
    expired = sa.and_(pool.where, t.jobs.c.state == "running", t.jobs.c.lease_expires_at < now)
    changed: list[tuple[Row[Any], dict[str, Any]]] = []
    with catalog.begin() as conn:
        rows = conn.execute(
            sa.select(t.jobs).where(expired).order_by(t.jobs.c.id).with_for_update(skip_locked=True)
        ).all()
        for row in rows:
            values = values_for(row, now)
            if conn.execute(t.jobs.update().where(t.jobs.c.id == row.id, expired).values(**values)).rowcount:
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


def heartbeats(catalog: Catalog, role: str) -> list[Heartbeat]:
    """Return the heartbeats of every process of `role` that ever beat, stale ones included."""
    with catalog.begin() as conn:
        rows = conn.execute(sa.select(t.heartbeats).where(t.heartbeats.c.role == role)).all()
    return [Heartbeat(r.name, r.role, r.at, dict(r.details or {})) for r in rows]
