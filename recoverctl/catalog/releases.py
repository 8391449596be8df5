"""Releases of a service and the restore points that mark their deploys, as the catalog keeps them.

Status lifecycle: deploying → live (serving) → good (replaced by a newer deploy after serving)
or rolled-back (replaced by a rollback); failed when verification failed or the deploy broke.
Functions ending in `_in` work inside the caller's transaction (`with catalog.begin() as conn`).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from recoverctl.catalog import Catalog
from recoverctl.catalog import tables as t
from recoverctl.errors import NotFoundError

STATUSES = ("deploying", "live", "good", "failed", "rolled-back")


@dataclass(frozen=True)
class Release:
    """One `releases` row; `created` is `created_at` as ISO 8601 (UTC), `details` never None."""

    id: int
    service: str
    version: str
    image: str | None
    digest: str | None
    release_dir: str | None
    schema_revision: str | None
    script_location: str | None
    restore_point: str | None
    restore_lsn: str | None
    operator: str | None
    created_at: float
    status: str
    details: dict[str, Any] = field(default_factory=dict)
    created: str = ""

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _release(row: Any) -> Release:
    d = dict(row._mapping)
    d["details"] = d.get("details") or {}
    d["created"] = datetime.fromtimestamp(d["created_at"], UTC).isoformat(timespec="seconds")
    return Release(**d)


def release_history(catalog: Catalog, service: str) -> list[Release]:
    """Given a service, return its releases newest first."""
    with catalog.begin() as conn:
        return release_history_in(conn, service)


def release_history_in(conn: Connection, service: str) -> list[Release]:
    """`release_history` inside the caller's transaction."""
    rows = conn.execute(
        sa.select(t.releases).where(t.releases.c.service == service).order_by(t.releases.c.id.desc())
    ).all()
    return [_release(r) for r in rows]


def current_release(catalog: Catalog, service: str) -> Release | None:
    """Return the release of `service` that is live now (newest `live` row), or None."""
    with catalog.begin() as conn:
        return current_release_in(conn, service)


def current_release_in(conn: Connection, service: str) -> Release | None:
    """`current_release` inside the caller's transaction."""
    r = conn.execute(
        sa.select(t.releases)
        .where(t.releases.c.service == service, t.releases.c.status == "live")
        .order_by(t.releases.c.id.desc())
        .limit(1)
    ).first()
    return _release(r) if r is not None else None


def newest_release_in(conn: Connection, service: str) -> Release | None:
    """Return the release of `service` created last, whatever its status, or None."""
    r = conn.execute(
        sa.select(t.releases)
        .where(t.releases.c.service == service)
        .order_by(t.releases.c.created_at.desc(), t.releases.c.id.desc())
        .limit(1)
    ).first()
    return _release(r) if r is not None else None


def releases_since_in(conn: Connection, since: float) -> list[Release]:
    """Return the releases of every service created at or after `since`, oldest first."""
    rows = conn.execute(
        sa.select(t.releases).where(t.releases.c.created_at >= since).order_by(t.releases.c.created_at)
    ).all()
    return [_release(r) for r in rows]


def get_release(catalog: Catalog, release_id: int) -> Release:
    """Return release #`release_id`; raise NotFoundError when there is none."""
    with catalog.begin() as conn:
        r = conn.execute(sa.select(t.releases).where(t.releases.c.id == release_id)).first()
    if r is None:
        raise NotFoundError(f"release #{release_id} does not exist in the catalog")
    return _release(r)


def newest_release_since_in(conn: Connection, service: str, created_after: float) -> Release | None:
    """Return the newest release of `service` created after `created_after`, or None."""
    r = conn.execute(
        sa.select(t.releases)
        .where(t.releases.c.service == service, t.releases.c.created_at > created_after)
        .order_by(t.releases.c.id.desc())
    ).first()
    return _release(r) if r is not None else None


def set_status(conn: Connection, release_id: int, status: str, **details: Any) -> None:
    """Set a release's status, merging `details` into its details JSON."""
    row = conn.execute(sa.select(t.releases.c.details).where(t.releases.c.id == release_id)).first()
    merged = {**((row.details if row else None) or {}), **details}
    conn.execute(
        t.releases.update().where(t.releases.c.id == release_id).values(status=status, details=merged)
    )


def set_artifact(catalog: Catalog, release_id: int, **fields: Any) -> None:
    """Store what a deploy learnt about its release (image, digest, release_dir, schema revision,
    restore point)."""
    with catalog.begin() as conn:
        conn.execute(t.releases.update().where(t.releases.c.id == release_id).values(**fields))


def demote_live(conn: Connection, service: str, except_id: int, to: str = "good") -> None:
    """Mark every other live release of the service `to` (good after a deploy)."""
    conn.execute(
        t.releases.update()
        .where(t.releases.c.service == service, t.releases.c.status == "live", t.releases.c.id != except_id)
        .values(status=to)
    )


def insert_release(conn: Connection, service: str, version: str, status: str, **fields: Any) -> int:
    """Insert a release row with `status` and the given columns; return its id."""
    values = {"service": service, "version": version, "status": status, "created_at": time.time(), **fields}
    return int(conn.execute(t.releases.insert().values(**values)).inserted_primary_key[0])  # type: ignore[index]


def record_restore_point(
    catalog: Catalog, source: str, name: str, lsn: str, timeline: int, release_id: int
) -> None:
    """Remember the restore point a deploy of release #`release_id` took on `source`."""
    with catalog.begin() as conn:
        conn.execute(
            t.restore_points.insert().values(
                source=source,
                name=name,
                lsn=lsn,
                timeline=timeline,
                created_at=time.time(),
                release_id=release_id,
            )
        )


def restore_point_lsn_in(conn: Connection, name: str) -> str | None:
    """Return the LSN of the newest restore point called `name`, or None when none is known."""
    rp = conn.execute(
        sa.select(t.restore_points.c.lsn)
        .where(t.restore_points.c.name == name)
        .order_by(t.restore_points.c.id.desc())
    ).first()
    return rp.lsn if rp is not None else None
