"""Deploy a version of a service: lock, mark the database, migrate, start, verify, retire old releases."""

from __future__ import annotations

import logging
import time
from typing import Any

from recoverctl.actions.releases import (
    current_release,
    demote_live,
    get_release,
    insert_release,
    release_history,
    set_status,
)
from recoverctl.appdb import migrations
from recoverctl.catalog import Catalog
from recoverctl.catalog import actor as default_actor
from recoverctl.catalog import tables as t
from recoverctl.catalog.service_lock import lock_service, owner_id
from recoverctl.config import Config, DockerService, SshService
from recoverctl.deploy import Artifact, HostOutcome, Target, open_target
from recoverctl.deploy.health import check_health
from recoverctl.deploy.version import check_stored_version, check_version, version_problem
from recoverctl.errors import PartialError, RecoverctlError, VerificationError

log = logging.getLogger(__name__)


def verify_endpoints(target: Target, svc: DockerService | SshService) -> list[dict[str, Any]]:
    """Check every endpoint of the target with the service's health policy; return one dict per host."""
    from concurrent.futures import ThreadPoolExecutor

    endpoints = target.endpoints()
    with ThreadPoolExecutor(max_workers=min(8, max(1, len(endpoints)))) as pool:
        results = list(pool.map(lambda e: check_health(e.url, svc.health), endpoints))
    return [{"host": e.name, **r.to_dict()} for e, r in zip(endpoints, results, strict=True)]


def raise_for_hosts(what: str, service: str, outcomes: list[HostOutcome]) -> None:
    """Raise PartialError (some hosts failed) or RecoverctlError (all failed) naming the hosts."""
    failed = [o for o in outcomes if not o.ok]
    if not failed:
        return
    names = ", ".join(f"{o.host} ({o.error})" for o in failed)
    details: dict[str, object] = {"hosts": [o.to_dict() for o in outcomes]}
    if len(failed) < len(outcomes):
        raise PartialError(
            f"{what} of service '{service}' failed on {len(failed)} of {len(outcomes)} hosts: {names}",
            hint="fix those hosts and run the command again",
            details=details,
        )
    raise RecoverctlError(f"{what} of service '{service}' failed: {names}", details=details)


def deploy(
    cfg: Config,
    catalog: Catalog,
    service: str,
    version: str,
    *,
    verify: bool = True,
    dry_run: bool = False,
    actor: str | None = None,
) -> dict[str, Any]:
    """Deploy `version` of `service` and return a summary with the release and a timeline.

    Raise NotFoundError (unknown service, image/artifact missing), LockedError (a deploy or
    rollback of the service runs), VerificationError (health failed: the previous version was
    started again and the release marked failed), PartialError (some SSH hosts failed).
    """
    svc = cfg.service(service)
    check_version(version)
    who = actor or default_actor()
    started = time.monotonic()
    timeline: list[dict[str, Any]] = []
    target = open_target(service, svc)
    try:
        target.preflight(None)
        previous = current_release(catalog, service)
        if previous is not None:
            check_stored_version(previous["version"], f"release #{previous['id']} of '{service}'")
        link = svc.database
        db_url = migrations.database_url(cfg, service, link) if link is not None else None
        script_location = (
            migrations.resolve_script_location(link, version, service)
            if link is not None and link.migrate and link.script_location
            else None
        )
        plan = {
            "service": service,
            "version": version,
            "previous": previous["version"] if previous else None,
            "target": target.describe(),
            "restore_point": bool(link and link.restore_point),
            "migrate_to": migrations.head_revision(script_location) if script_location else None,
            "verify": verify,
        }
        if dry_run:
            return {"result": "planned", "dry_run": True, **plan}

        with catalog.begin() as conn:
            lock_service(conn, service)
            release_id = insert_release(
                conn,
                service,
                version,
                "deploying",
                operator=who,
                script_location=script_location,
                details={"owner": owner_id()},
            )

        def step(name: str, fn: Any) -> Any:
            t0 = time.monotonic()
            entry: dict[str, Any] = {"name": name, "outcome": "running"}
            timeline.append(entry)
            try:
                out = fn()
            except BaseException as e:
                entry.update(outcome="failed", seconds=round(time.monotonic() - t0, 3), error=str(e))
                raise
            entry.update(outcome="ok", seconds=round(time.monotonic() - t0, 3))
            return out

        try:
            artifact: Artifact = step("prepare", lambda: target.prepare(version))
            fields: dict[str, Any] = {
                "image": artifact.image,
                "digest": artifact.digest,
                "release_dir": artifact.release_dir,
            }
            if db_url is not None and link is not None:
                if link.restore_point:
                    name = f"recoverctl-{service}-{version}-{int(time.time())}"
                    rp = step("restore_point", lambda: migrations.create_restore_point(db_url, name))
                    fields.update(restore_point=rp["name"], restore_lsn=rp["lsn"])
                    with catalog.begin() as conn:
                        conn.execute(
                            t.restore_points.insert().values(
                                source=link.source,
                                name=rp["name"],
                                lsn=rp["lsn"],
                                timeline=rp["timeline"],
                                created_at=time.time(),
                                release_id=release_id,
                            )
                        )
                if script_location is not None:
                    up = step("migrate", lambda: migrations.upgrade(db_url, script_location))
                    fields["schema_revision"] = up["to_revision"]
                else:
                    fields["schema_revision"] = migrations.current_revision(db_url)
            with catalog.begin() as conn:
                conn.execute(t.releases.update().where(t.releases.c.id == release_id).values(**fields))

            step(
                "stop_previous",
                lambda: raise_for_hosts("stopping the previous version", service, target.stop()),
            )
            step("start", lambda: raise_for_hosts("starting", service, target.start(artifact)))
            health: list[dict[str, Any]] = []
            if verify:
                health = step("verify", lambda: verify_endpoints(target, svc))
                bad = [h for h in health if not h["ok"]]
                if bad:
                    timeline[-1]["outcome"] = "failed"
                    _restore_previous(target, previous, timeline)
                    _finish_failed(catalog, service, version, release_id, who, timeline, health)
                    raise VerificationError(
                        f"deploy of {service} {version} failed verification on "
                        + ", ".join(f"{h['host']} ({h['last']})" for h in bad),
                        hint=(
                            f"{previous['version']} was started again"
                            if previous
                            else "no previous release to fall back to"
                        ),
                        details={"health": health, "timeline": timeline, "release_id": release_id},
                    )
        except (RecoverctlError, Exception) as e:
            if not isinstance(e, VerificationError):
                if not isinstance(e, PartialError) and any(s["name"] == "stop_previous" for s in timeline):
                    _restore_previous(target, previous, timeline)
                _finish_failed(catalog, service, version, release_id, who, timeline, None, error=str(e))
            raise

        with catalog.begin() as conn:
            set_status(conn, release_id, "live", verified=verify, owner=None, timeline=timeline)
            demote_live(conn, service, release_id)
        old = _versions_to_retire(catalog, service, svc.keep_releases)
        try:
            removed = step("retire", lambda: target.retire(old))
        except RecoverctlError as e:
            # The release is live and verified: old releases left behind are retired by a later
            # deploy, and failing the deploy now would report a good release as a failure.
            log.warning("deploy of %s %s: old releases not retired: %s", service, version, e)
            removed = []
        duration = round(time.monotonic() - started, 3)
        summary = f"{service} {version} deployed" + ("" if verify else " (not verified: --no-verify)")
        catalog.emit_event(
            "deploy.succeeded",
            "info",
            service,
            summary,
            {"version": version, "previous": plan["previous"], "release_id": release_id, "verified": verify},
        )
        catalog.audit(
            "deploy",
            service,
            "succeeded",
            {"version": version, "release_id": release_id, "timeline": timeline},
            who=who,
        )
        return {
            "result": "succeeded",
            "service": service,
            "version": version,
            "previous": plan["previous"],
            "verified": verify,
            "health": health,
            "retired": removed,
            "steps": timeline,
            "duration_s": duration,
            "release": get_release(catalog, release_id),
        }
    finally:
        target.close()


def _versions_to_retire(catalog: Catalog, service: str, keep: int) -> list[str]:
    """Return versions of releases older than the newest `keep` distinct ones (failed ones count too)."""
    seen: list[str] = []
    for r in release_history(catalog, service):
        problem = version_problem(r["version"])
        if problem is not None:
            # An altered row must not name a path on a host; the deploy itself is done, so say so.
            log.warning("not retiring release #%s of '%s': invalid version (%s)", r["id"], service, problem)
        elif r["version"] not in seen:
            seen.append(r["version"])
    return seen[max(1, keep) :]


def _restore_previous(
    target: Target, previous: dict[str, Any] | None, timeline: list[dict[str, Any]]
) -> None:
    """Bring the previous release back after a failed deploy; record the outcome in the timeline."""
    if previous is None:
        target.stop()
        return
    t0 = time.monotonic()
    entry: dict[str, Any] = {"name": "restore_previous", "version": previous["version"]}
    try:
        target.stop()
        outcomes = target.start(Artifact(previous["version"], image=previous["image"]))
        bad = [o.to_dict() for o in outcomes if not o.ok]
        entry["outcome"] = "failed" if bad else "ok"
        if bad:
            entry["hosts"] = bad
    except Exception as e:  # the deploy already failed; report, do not mask the original error
        entry.update(outcome="failed", error=str(e))
    entry["seconds"] = round(time.monotonic() - t0, 3)
    timeline.append(entry)


def _finish_failed(
    catalog: Catalog,
    service: str,
    version: str,
    release_id: int,
    who: str,
    timeline: list[dict[str, Any]],
    health: list[dict[str, Any]] | None,
    error: str | None = None,
) -> None:
    with catalog.begin() as conn:
        set_status(conn, release_id, "failed", owner=None, timeline=timeline, error=error)
    catalog.emit_event(
        "deploy.failed",
        "warning",
        service,
        f"deploy of {service} {version} failed: {error or 'verification failed'}",
        {"version": version, "release_id": release_id, "health": health, "timeline": timeline},
    )
    catalog.audit(
        "deploy",
        service,
        "failed",
        {"version": version, "release_id": release_id, "timeline": timeline},
        who=who,
    )
