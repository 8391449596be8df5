"""Releases of a service: history, the current one, and recording releases deployed by other tools.

Status lifecycle: deploying → live (serving) → good (replaced by a newer deploy after serving)
or rolled-back (replaced by a rollback); failed when verification failed or the deploy broke.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from recoverctl.catalog import Catalog
from recoverctl.catalog import actor as default_actor
from recoverctl.catalog import tables as t
from recoverctl.catalog.service_lock import lock_service
from recoverctl.config import Config
from recoverctl.deploy.version import check_version
from recoverctl.errors import NotFoundError

STATUSES = ("deploying", "live", "good", "failed", "rolled-back")


def _row(r: Any) -> dict[str, Any]:
    d = dict(r._mapping)
    d["created"] = datetime.fromtimestamp(d["created_at"], UTC).isoformat(timespec="seconds")
    d["details"] = d.get("details") or {}
    return d


def release_history(catalog: Catalog, service: str) -> list[dict[str, Any]]:
    """Given a service, return its releases newest first (plain dicts of the `releases` row + `created`)."""
    with catalog.begin() as conn:
        rows = conn.execute(
            sa.select(t.releases).where(t.releases.c.service == service).order_by(t.releases.c.id.desc())
        ).all()
    return [_row(r) for r in rows]


def current_release(catalog: Catalog, service: str) -> dict[str, Any] | None:
    """Return the release of `service` that is live now (newest `live` row), or None."""
    with catalog.begin() as conn:
        return current_release_in(conn, service)


def current_release_in(conn: Connection, service: str) -> dict[str, Any] | None:
    r = conn.execute(
        sa.select(t.releases)
        .where(t.releases.c.service == service, t.releases.c.status == "live")
        .order_by(t.releases.c.id.desc())
        .limit(1)
    ).first()
    return _row(r) if r is not None else None


def get_release(catalog: Catalog, release_id: int) -> dict[str, Any]:
    with catalog.begin() as conn:
        r = conn.execute(sa.select(t.releases).where(t.releases.c.id == release_id)).first()
    if r is None:
        raise NotFoundError(f"release #{release_id} does not exist in the catalog")
    return _row(r)


def set_status(conn: Connection, release_id: int, status: str, **details: Any) -> None:
    """Set a release's status, merging `details` into its details JSON."""
    row = conn.execute(sa.select(t.releases.c.details).where(t.releases.c.id == release_id)).first()
    merged = {**((row.details if row else None) or {}), **details}
    conn.execute(
        t.releases.update().where(t.releases.c.id == release_id).values(status=status, details=merged)
    )


def demote_live(conn: Connection, service: str, except_id: int, to: str = "good") -> None:
    """Mark every other live release of the service `to` (good after a deploy)."""
    conn.execute(
        t.releases.update()
        .where(t.releases.c.service == service, t.releases.c.status == "live", t.releases.c.id != except_id)
        .values(status=to)
    )


def insert_release(conn: Connection, service: str, version: str, status: str, **fields: Any) -> int:
    values = {"service": service, "version": version, "status": status, "created_at": time.time(), **fields}
    return int(conn.execute(t.releases.insert().values(**values)).inserted_primary_key[0])  # type: ignore[index]


def record_release(
    cfg: Config,
    catalog: Catalog,
    service: str,
    version: str,
    *,
    image: str | None = None,
    schema_revision: str | None = None,
    script_location: str | None = None,
    restore_point: str | None = None,
    actor: str | None = None,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Record a release deployed by another tool as the live one (the previous live becomes good).

    Return the new release row (or the row that would be written with dry_run); raise
    NotFoundError for an unknown service, LockedError while a deploy/rollback holds it.
    """
    svc = cfg.service(service)
    check_version(version)
    if image is None and svc.target == "docker":
        image = f"{svc.image}:{version}"
    if script_location is None and svc.database is not None and svc.database.script_location:
        script_location = svc.database.script_location.replace("{version}", version)
    fields: dict[str, Any] = {
        "image": image,
        "schema_revision": schema_revision,
        "script_location": script_location,
        "restore_point": restore_point,
        "operator": actor or default_actor(),
        "details": {"recorded": True},
    }
    if dry_run:
        return {"dry_run": True, "service": service, "version": version, "status": "live", **fields}
    with catalog.begin() as conn:
        lock_service(conn, service)
        if restore_point:
            rp = conn.execute(
                sa.select(t.restore_points.c.lsn)
                .where(t.restore_points.c.name == restore_point)
                .order_by(t.restore_points.c.id.desc())
            ).first()
            if rp is not None:
                fields["restore_lsn"] = rp.lsn
        release_id = insert_release(conn, service, version, "live", **fields)
        demote_live(conn, service, release_id)
    catalog.audit("release.record", service, "ok", {"version": version, "release_id": release_id}, who=actor)
    return get_release(catalog, release_id)
