"""Use cases on the releases of a service: list them, record one deployed by another tool.

The rows and their status lifecycle are the catalog's (`recoverctl.catalog.releases`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from recoverctl.catalog import Catalog
from recoverctl.catalog import actor as default_actor
from recoverctl.catalog.releases import (
    Release,
    demote_live,
    get_release,
    insert_release,
    release_history,
    restore_point_lsn_in,
)
from recoverctl.catalog.service_lock import lock_service
from recoverctl.config import Config
from recoverctl.deploy.version import check_version


@dataclass(frozen=True)
class PlannedRelease:
    """The release `record_release(..., dry_run=True)` would write."""

    service: str
    version: str
    fields: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "dry_run": True,
            "service": self.service,
            "version": self.version,
            "status": "live",
            **self.fields,
        }


def list_releases(cfg: Config, catalog: Catalog, service: str) -> list[Release]:
    """Return the releases of a configured service, newest first; raise NotFoundError for an
    unknown service."""
    cfg.service(service)
    return release_history(catalog, service)


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
) -> Release | PlannedRelease:
    """Record a release deployed by another tool as the live one (the previous live becomes good).

    Return the new release (or, with dry_run, the one that would be written); raise
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
        return PlannedRelease(service, version, fields)
    with catalog.begin() as conn:
        lock_service(conn, service)
        if restore_point:
            lsn = restore_point_lsn_in(conn, restore_point)
            if lsn is not None:
                fields["restore_lsn"] = lsn
        release_id = insert_release(conn, service, version, "live", **fields)
        demote_live(conn, service, release_id)
    catalog.audit("release.record", service, "ok", {"version": version, "release_id": release_id}, who=actor)
    return get_release(catalog, release_id)
