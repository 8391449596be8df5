"""Deploy a version of a service: lock, mark the database, migrate, start, verify, retire old releases."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from recoverctl.appdb import migrations
from recoverctl.catalog import Catalog
from recoverctl.catalog import actor as default_actor
from recoverctl.catalog.releases import (
    Release,
    current_release,
    demote_live,
    get_release,
    insert_release,
    record_restore_point,
    release_history,
    set_artifact,
    set_status,
)
from recoverctl.catalog.service_lock import lock_service, owner_id
from recoverctl.config import Config, DockerService, SshService
from recoverctl.deploy import Artifact, HostOutcome, Target, open_target
from recoverctl.deploy.health import check_health
from recoverctl.deploy.version import check_stored_version, check_version, version_problem
from recoverctl.errors import PartialError, RecoverctlError, VerificationError

log = logging.getLogger(__name__)
T = TypeVar("T")


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


@dataclass(frozen=True)
class DeployPlanned:
    """A dry run: what `deploy` would do, nothing changed."""

    service: str
    version: str
    previous: str | None
    target: dict[str, Any]
    restore_point: bool
    migrate_to: str | None
    verify: bool

    def to_json(self) -> dict[str, Any]:
        return {"result": "planned", "dry_run": True, **dataclasses.asdict(self)}


@dataclass(frozen=True)
class DeployResult:
    """A deploy that succeeded: the release now live, its health and its timeline."""

    service: str
    version: str
    previous: str | None
    verified: bool
    health: list[dict[str, Any]]
    retired: list[str]
    steps: list[dict[str, Any]]
    duration_s: float
    release: Release

    def to_json(self) -> dict[str, Any]:
        return {"result": "succeeded", **dataclasses.asdict(self)}


@dataclass
class _Deploy:
    """What one deploy knows while it runs: its release row, the target, the timeline so far."""

    catalog: Catalog
    service: str
    svc: DockerService | SshService
    version: str
    who: str
    target: Target
    previous: Release | None
    release_id: int = 0
    timeline: list[dict[str, Any]] = field(default_factory=list)

    def step(self, name: str, fn: Callable[[], T]) -> T:
        """Run one timed step of the deploy, appending its outcome to the timeline."""
        t0 = time.monotonic()
        entry: dict[str, Any] = {"name": name, "outcome": "running"}
        self.timeline.append(entry)
        try:
            out = fn()
        except BaseException as e:
            entry.update(outcome="failed", seconds=round(time.monotonic() - t0, 3), error=str(e))
            raise
        entry.update(outcome="ok", seconds=round(time.monotonic() - t0, 3))
        return out

    def audit(self, outcome: str) -> None:
        """Write the deploy's audit-log entry with its timeline."""
        details = {"version": self.version, "release_id": self.release_id, "timeline": self.timeline}
        self.catalog.audit("deploy", self.service, outcome, details, who=self.who)


def deploy(
    cfg: Config,
    catalog: Catalog,
    service: str,
    version: str,
    *,
    verify: bool = True,
    dry_run: bool = False,
    actor: str | None = None,
) -> DeployResult | DeployPlanned:
    """Deploy `version` of `service` and return a summary with the release and a timeline (with
    dry_run, what it would do).

    Raise NotFoundError (unknown service, image/artifact missing), LockedError (a deploy or
    rollback of the service runs), VerificationError (health failed: the previous version was
    started again and the release marked failed), PartialError (some SSH hosts failed).
    """
    svc = cfg.service(service)
    check_version(version)
    who = actor or default_actor()
    started = time.monotonic()
    target = open_target(service, svc)
    try:
        target.preflight(None)
        previous = current_release(catalog, service)
        if previous is not None:
            check_stored_version(previous.version, f"release #{previous.id} of '{service}'")
        link = svc.database
        db_url = migrations.database_url(cfg, service, link) if link is not None else None
        script_location = (
            migrations.resolve_script_location(link, version, service)
            if link is not None and link.migrate and link.script_location
            else None
        )
        # Read the scripts' head now, dry run or not: scripts missing or with several heads fail
        # the deploy before anything is locked or recorded.
        migrate_to = migrations.head_revision(script_location) if script_location else None
        if dry_run:
            return DeployPlanned(
                service=service,
                version=version,
                previous=previous.version if previous else None,
                target=target.describe(),
                restore_point=bool(link and link.restore_point),
                migrate_to=migrate_to,
                verify=verify,
            )
        run = _Deploy(catalog, service, svc, version, who, target, previous)
        with catalog.begin() as conn:
            lock_service(conn, service)
            run.release_id = insert_release(
                conn,
                service,
                version,
                "deploying",
                operator=who,
                script_location=script_location,
                details={"owner": owner_id()},
            )
        health = _roll_out(run, db_url, script_location, verify)
        return _go_live(run, verify, health, started)
    finally:
        target.close()


def _mark_database(run: _Deploy, db_url: str | None, script_location: str | None) -> dict[str, Any]:
    """Take the release's restore point and run its migrations; return the release fields learnt."""
    link = run.svc.database
    if link is None or db_url is None:
        return {}
    fields: dict[str, Any] = {}
    if link.restore_point:
        name = f"recoverctl-{run.service}-{run.version}-{int(time.time())}"
        rp = run.step("restore_point", lambda: migrations.create_restore_point(db_url, name))
        fields.update(restore_point=rp["name"], restore_lsn=rp["lsn"])
        record_restore_point(run.catalog, link.source, rp["name"], rp["lsn"], rp["timeline"], run.release_id)
    if script_location is not None:
        up = run.step("migrate", lambda: migrations.upgrade(db_url, script_location))
        fields["schema_revision"] = up["to_revision"]
    else:
        fields["schema_revision"] = migrations.current_revision(db_url)
    return fields


def _roll_out(
    run: _Deploy, db_url: str | None, script_location: str | None, verify: bool
) -> list[dict[str, Any]]:
    """Prepare, mark the database, stop the previous version, start the new one and verify it;
    return the health results. On failure bring the previous version back, record the release
    failed, and raise."""
    service, target, previous = run.service, run.target, run.previous
    try:
        artifact: Artifact = run.step("prepare", lambda: target.prepare(run.version))
        fields = {"image": artifact.image, "digest": artifact.digest, "release_dir": artifact.release_dir}
        set_artifact(run.catalog, run.release_id, **fields, **_mark_database(run, db_url, script_location))
        run.step(
            "stop_previous",
            lambda: raise_for_hosts("stopping the previous version", service, target.stop()),
        )
        run.step("start", lambda: raise_for_hosts("starting", service, target.start(artifact)))
        if not verify:
            return []
        health = run.step("verify", lambda: verify_endpoints(target, run.svc))
        bad = [h for h in health if not h["ok"]]
        if bad:
            run.timeline[-1]["outcome"] = "failed"
            _restore_previous(target, previous, run.timeline)
            _finish_failed(run, health)
            raise VerificationError(
                f"deploy of {service} {run.version} failed verification on "
                + ", ".join(f"{h['host']} ({h['last']})" for h in bad),
                hint=(
                    f"{previous.version} was started again"
                    if previous
                    else "no previous release to fall back to"
                ),
                details={"health": health, "timeline": run.timeline, "release_id": run.release_id},
            )
        return health
    except (RecoverctlError, Exception) as e:
        if not isinstance(e, VerificationError):
            if not isinstance(e, PartialError) and any(s["name"] == "stop_previous" for s in run.timeline):
                _restore_previous(target, previous, run.timeline)
            _finish_failed(run, None, error=str(e))
        raise


def _go_live(run: _Deploy, verify: bool, health: list[dict[str, Any]], started: float) -> DeployResult:
    """Make the verified release the live one, retire old releases, announce; return the summary."""
    catalog, service, version, release_id = run.catalog, run.service, run.version, run.release_id
    with catalog.begin() as conn:
        set_status(conn, release_id, "live", verified=verify, owner=None, timeline=run.timeline)
        demote_live(conn, service, release_id)
    old = _versions_to_retire(catalog, service, run.svc.keep_releases)
    try:
        removed = run.step("retire", lambda: run.target.retire(old))
    except RecoverctlError as e:
        # The release is live and verified: old releases left behind are retired by a later
        # deploy, and failing the deploy now would report a good release as a failure.
        log.warning("deploy of %s %s: old releases not retired: %s", service, version, e)
        removed = []
    duration = round(time.monotonic() - started, 3)
    previous = run.previous.version if run.previous else None
    summary = f"{service} {version} deployed" + ("" if verify else " (not verified: --no-verify)")
    catalog.emit_event(
        "deploy.succeeded",
        "info",
        service,
        summary,
        {"version": version, "previous": previous, "release_id": release_id, "verified": verify},
    )
    run.audit("succeeded")
    return DeployResult(
        service=service,
        version=version,
        previous=previous,
        verified=verify,
        health=health,
        retired=removed,
        steps=run.timeline,
        duration_s=duration,
        release=get_release(catalog, release_id),
    )


def _versions_to_retire(catalog: Catalog, service: str, keep: int) -> list[str]:
    """Return versions of releases older than the newest `keep` distinct ones (failed ones count too)."""
    seen: list[str] = []
    for r in release_history(catalog, service):
        problem = version_problem(r.version)
        if problem is not None:
            # An altered row must not name a path on a host; the deploy itself is done, so say so.
            log.warning("not retiring release #%s of '%s': invalid version (%s)", r.id, service, problem)
        elif r.version not in seen:
            seen.append(r.version)
    return seen[max(1, keep) :]


def _restore_previous(target: Target, previous: Release | None, timeline: list[dict[str, Any]]) -> None:
    """Bring the previous release back after a failed deploy; record the outcome in the timeline."""
    if previous is None:
        target.stop()
        return
    t0 = time.monotonic()
    entry: dict[str, Any] = {"name": "restore_previous", "version": previous.version}
    try:
        target.stop()
        outcomes = target.start(Artifact(previous.version, image=previous.image))
        bad = [o.to_dict() for o in outcomes if not o.ok]
        entry["outcome"] = "failed" if bad else "ok"
        if bad:
            entry["hosts"] = bad
    except Exception as e:  # the deploy already failed; report, do not mask the original error
        entry.update(outcome="failed", error=str(e))
    entry["seconds"] = round(time.monotonic() - t0, 3)
    timeline.append(entry)


def _finish_failed(run: _Deploy, health: list[dict[str, Any]] | None, error: str | None = None) -> None:
    """Record the release failed, with the timeline, and announce it."""
    catalog, service, version, release_id = run.catalog, run.service, run.version, run.release_id
    with catalog.begin() as conn:
        set_status(conn, release_id, "failed", owner=None, timeline=run.timeline, error=error)
    catalog.emit_event(
        "deploy.failed",
        "warning",
        service,
        f"deploy of {service} {version} failed: {error or 'verification failed'}",
        {"version": version, "release_id": release_id, "health": health, "timeline": run.timeline},
    )
    run.audit("failed")
