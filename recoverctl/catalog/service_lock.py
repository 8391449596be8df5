"""The per-service lock shared by deploy and rollback, kept in the catalog rows themselves.

A service is locked while a release of it is `deploying` or a rollback of it is `running` and
the process owning that row (host:pid) is alive. Checking and inserting the owning row happen
in one catalog transaction (SQLite takes its write lock at BEGIN; PostgreSQL takes an advisory
transaction lock per service), so two processes can never both pass the check.
"""

from __future__ import annotations

import os
import socket
import zlib

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from recoverctl.catalog import tables as t
from recoverctl.errors import LockedError


def owner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def owner_alive(owner: str | None) -> bool:
    """Return False only when the owner ran on this host and its process is gone (or a zombie)."""
    if not owner or ":" not in owner:
        return False
    host, _, pid_text = owner.rpartition(":")
    if host != socket.gethostname():
        return True  # another host: we cannot tell, so it counts as alive
    try:
        pid = int(pid_text)
    except ValueError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
            return True
        except ProcessLookupError:
            return False
        except PermissionError:
            return True


def lock_service(conn: Connection, service: str) -> None:
    """Inside the caller's transaction: raise LockedError when a live deploy/rollback holds `service`.

    Deploys whose owner died are marked failed (interrupted) on the way. Interrupted rollbacks
    also block, because the service may be half stopped: they must be resumed first.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(zlib.crc32(f"recoverctl:{service}".encode()))))
    for row in conn.execute(
        sa.select(t.releases.c.id, t.releases.c.version, t.releases.c.details).where(
            t.releases.c.service == service, t.releases.c.status == "deploying"
        )
    ):
        owner = (row.details or {}).get("owner")
        if owner_alive(owner):
            raise LockedError(
                f"service '{service}' is locked: deploy of {row.version} (release #{row.id}) "
                f"is running in {owner}",
                hint="wait for it to finish",
                details={"release_id": row.id, "owner": owner},
            )
        conn.execute(
            t.releases.update()
            .where(t.releases.c.id == row.id)
            .values(status="failed", details={**(row.details or {}), "interrupted": True})
        )
    for rb in conn.execute(
        sa.select(t.rollbacks.c.id, t.rollbacks.c.owner).where(
            t.rollbacks.c.service == service, t.rollbacks.c.state == "running"
        )
    ):
        if owner_alive(rb.owner):
            raise LockedError(
                f"service '{service}' is locked: rollback #{rb.id} is running in {rb.owner}",
                hint="wait for it to finish; 'recoverctl releases' shows the outcome",
                details={"rollback_id": rb.id, "owner": rb.owner},
            )
        raise LockedError(
            f"rollback #{rb.id} of service '{service}' was interrupted (its process {rb.owner} is gone)",
            hint=f"finish it first: recoverctl rollback {service} --resume",
            details={"rollback_id": rb.id, "owner": rb.owner, "interrupted": True},
        )
