"""Plan a rollback: which release to go back to, what the schema step does and loses, and which
interrupted rollback `--resume` continues. Changes nothing."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy.engine import Connection

from recoverctl.appdb import migrations
from recoverctl.catalog import Catalog
from recoverctl.catalog.releases import Release, current_release, newest_release_since_in, release_history
from recoverctl.catalog.rollbacks import Rollback, newest_rollback_in
from recoverctl.catalog.service_lock import owner_alive
from recoverctl.config import Config, DatabaseLink
from recoverctl.deploy import open_target
from recoverctl.deploy.version import check_stored_version, check_version
from recoverctl.errors import LockedError, NotFoundError, RecoverctlError, UsageError
from recoverctl.units import human_duration, human_size

STEPS = ("lock", "stop_current", "schema", "start_target", "verify", "notify", "record")
SCHEMA_MODES = ("keep", "downgrade", "pitr")


def describe_releases(history: list[Release]) -> str:
    return ", ".join(f"{r.version} ({r.status})" for r in history[:10]) or "(none)"


def resumable_in(conn: Connection, service: str, rollback_id: int | None = None) -> Rollback:
    """Return the service's newest rollback when it can be resumed: interrupted (its process is
    gone) or failed at a step, with no release of the service recorded since it started (and,
    with `rollback_id`, when it is that rollback).

    Raise NotFoundError (nothing to resume) or LockedError (it still runs).
    """
    rb = newest_rollback_in(conn, service)
    if rollback_id is not None and (rb is None or rb.id != rollback_id):
        raise NotFoundError(
            f"rollback #{rollback_id} of '{service}' is not its newest"
            + (f" (#{rb.id} {rb.state} came after it)" if rb is not None else "")
            + ": there is nothing of it to resume",
            hint=f"check 'recoverctl releases {service}'; 'recoverctl rollback {service} --resume' "
            "continues the newest rollback, if that is what you want",
        )
    if rb is None or rb.state not in ("running", "failed"):
        raise NotFoundError(
            f"service '{service}' has no interrupted or failed rollback to resume",
            hint=f"start one with: recoverctl rollback {service}",
        )
    if rb.state == "running" and owner_alive(rb.owner):
        raise LockedError(
            f"rollback #{rb.id} of '{service}' is still running in {rb.owner}",
            hint="wait for it to finish",
            details={"rollback_id": rb.id, "owner": rb.owner},
        )
    newer = newest_release_since_in(conn, service, rb.started_at)
    if newer is not None:
        raise NotFoundError(
            f"rollback #{rb.id} of '{service}' {rb.state}, but release {newer.version} (#{newer.id}) "
            "was deployed or recorded since: there is nothing to resume",
            hint=f"check 'recoverctl releases {service}', then roll back afresh if needed",
        )
    return rb


def _choose_target(
    catalog: Catalog, service: str, current: Release | None, history: list[Release], to_version: str | None
) -> Release:
    """Return the release to roll back to from `current`; raise NotFoundError when there is none."""
    if current is None:
        hint = f"releases: {describe_releases(history)}; record one with 'recoverctl release record'"
        with catalog.begin() as conn:
            try:
                failed = resumable_in(conn, service)
                hint = f"rollback #{failed.id} did not finish: recoverctl rollback {service} --resume"
            except RecoverctlError:
                pass
        raise NotFoundError(f"service '{service}' has no live release to roll back from", hint=hint)
    if to_version is not None:
        candidates = [r for r in history if r.version == to_version and r.id != current.id]
        if not candidates:
            raise NotFoundError(
                f"service '{service}' has no release {to_version} to roll back to",
                hint=f"releases: {describe_releases(history)}",
            )
        return next((r for r in candidates if r.status != "failed"), candidates[0])
    older_good = [r for r in history if r.id < current.id and r.status == "good"]
    if not older_good:
        raise NotFoundError(
            f"service '{service}' has no previous good release before {current.version}",
            hint=f"releases: {describe_releases(history)}; choose one with --to VERSION",
        )
    return older_good[0]


def plan_rollback(
    cfg: Config, catalog: Catalog, service: str, *, to_version: str | None = None, schema: str = "keep"
) -> dict[str, Any]:
    """Return the rollback plan: versions, releases, schema action with data-loss warnings, steps.

    Runs the pre-flight checks (engine / every host reachable, target artifact present) and
    changes nothing. Raise NotFoundError (unknown service or version, no previous good release,
    artifact gone), UsageError (bad schema mode), RecoverctlError (unreachable).
    """
    svc = cfg.service(service)
    if to_version is not None:
        check_version(to_version)
    if schema not in SCHEMA_MODES:
        raise UsageError(f"unknown schema mode '{schema}'", hint=f"use one of: {', '.join(SCHEMA_MODES)}")
    history = release_history(catalog, service)
    current = current_release(catalog, service)
    target_release = _choose_target(catalog, service, current, history, to_version)
    assert current is not None  # _choose_target raised otherwise
    for release in (current, target_release):
        check_stored_version(release.version, f"release #{release.id} of '{service}'")
    if target_release.version == current.version:
        raise UsageError(f"{service} already runs {current.version}", hint="choose another --to VERSION")

    warnings: list[str] = []
    if target_release.status == "failed":
        warnings.append(f"release {target_release.version} is marked failed")
    schema_plan = _plan_schema(cfg, service, schema, current, target_release, warnings)

    target = open_target(service, svc)
    try:
        target.preflight(target_release.version)
        where = target.describe()
    finally:
        target.close()
    return {
        "service": service,
        "target": where,
        "from_version": current.version,
        "to_version": target_release.version,
        "from_release": current.id,
        "to_release": target_release.id,
        "schema_mode": schema,
        "schema": schema_plan,
        "steps": list(STEPS),
        "warnings": warnings,
    }


def _plan_schema(
    cfg: Config, service: str, mode: str, current: Release, target: Release, warnings: list[str]
) -> dict[str, Any]:
    link = cfg.service(service).database
    plan: dict[str, Any] = {
        "mode": mode,
        "current_revision": current.schema_revision,
        "target_revision": target.schema_revision,
    }
    if mode == "keep":
        if plan["current_revision"] != plan["target_revision"]:
            warnings.append(
                f"schema stays at {plan['current_revision']} while {target.version} expects "
                f"{plan['target_revision']} (use --schema downgrade to change it)"
            )
        return plan
    if link is None:
        raise UsageError(
            f"--schema {mode} needs a database link on service '{service}'",
            hint=f"add services.{service}.database (source, script_location) or use --schema keep",
        )
    if mode == "pitr":
        return _plan_pitr(cfg, service, link, current, plan, warnings)
    if not current.script_location:
        raise UsageError(
            f"release {current.version} of '{service}' has no recorded migration scripts",
            hint="deploy with a database link, or record the release with --script-location",
        )
    url = migrations.database_url(cfg, service, link)
    down = migrations.plan_downgrade(url, current.script_location, target.schema_revision)
    plan.update(down)
    plan["current_revision"] = down["from_revision"]
    if down.get("sql_error"):
        warnings.append(
            f"the downgrade SQL could not be rendered offline ({down['sql_error']}): what it drops is unknown"
        )
    tables, columns = down["drops"]["tables"], down["drops"]["columns"]
    if tables or columns:
        lost = ", ".join(f"{tbl} ({n} rows)" for tbl, n in down["rows_lost"].items())
        parts = [
            f"tables: {', '.join(tables)}" if tables else "",
            f"columns: {', '.join(columns)}" if columns else "",
        ]
        warnings.append(
            "schema downgrade drops "
            + "; ".join(p for p in parts if p)
            + (f" — data lost: {lost}" if lost else "")
        )
    return plan


def _plan_pitr(
    cfg: Config, service: str, link: DatabaseLink, current: Release, plan: dict[str, Any], warnings: list[str]
) -> dict[str, Any]:
    """Describe the restore point of the current release and the writes a PITR to it would lose."""
    name, lsn = current.restore_point, current.restore_lsn
    if not name or not lsn:
        raise NotFoundError(
            f"release {current.version} of '{service}' has no restore point",
            hint="deploys of services with a database link create one; use --schema keep or downgrade",
        )
    url = migrations.database_url(cfg, service, link)
    since = migrations.wal_since(url, lsn)
    plan.update(
        restore_point=name,
        restore_lsn=lsn,
        source=link.source,
        current_lsn=since["current_lsn"],
        wal_bytes_after=since["bytes_after"],
        seconds_after=round(time.time() - current.created_at, 1),
    )
    warnings.append(
        f"PITR to restore point {name} (LSN {lsn}) loses every write after it: "
        f"{human_size(since['bytes_after'])} of WAL over {human_duration(plan['seconds_after'])}"
    )
    warnings.append(
        f"the database is stopped and replaced by a restore of {link.source} to {name}; "
        "its current data directory is kept beside it"
    )
    return plan
