"""Roll a service back to its previous good release: a persisted, resumable step machine.

lock → stop_current → schema → start_target → verify → notify → record. Every step's start,
end, outcome and output is written to `rollback_steps` before the next one begins, so after a
crash or a failed step `--resume` re-runs the first unfinished step (each step is idempotent)
and continues. Targets ride out an unreachable engine or host (deploy/retry.py); steps and
their bookkeeping ride out an unreachable catalog within the same window. The plan is
`rollback_plan.py`; what a failure means and how it is recorded, `rollback_failure.py`.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from recoverctl.actions.deploy import raise_for_hosts, verify_endpoints
from recoverctl.actions.rollback_failure import book, catalog_fault, fail, transient_fault
from recoverctl.actions.rollback_pitr import restore_to_point
from recoverctl.actions.rollback_plan import SCHEMA_MODES, STEPS, plan_rollback, resumable_in
from recoverctl.actions.rollback_result import RollbackPlanned, RollbackResult, StepOutcome
from recoverctl.appdb import migrations
from recoverctl.catalog import Catalog
from recoverctl.catalog import actor as default_actor
from recoverctl.catalog import rollbacks as rollback_rows
from recoverctl.catalog.releases import Release, get_release
from recoverctl.catalog.service_lock import lock_service
from recoverctl.config import Config, DockerService, SshService
from recoverctl.deploy import Artifact, Target, open_target
from recoverctl.deploy.retry import within_window
from recoverctl.deploy.version import check_stored_version, check_version
from recoverctl.errors import VerificationError

__all__ = ["SCHEMA_MODES", "STEPS", "plan_rollback", "rollback", "transient_fault"]


def rollback(
    cfg: Config,
    catalog: Catalog,
    service: str,
    *,
    to_version: str | None = None,
    schema: str = "keep",
    dry_run: bool = False,
    reason: str | None = None,
    actor: str | None = None,
    resume: bool = False,
    rollback_id: int | None = None,
) -> RollbackResult | RollbackPlanned:
    """Roll `service` back and return its result (outcome, versions, step timeline, duration).

    With dry_run return the plan and change nothing; with resume continue
    the interrupted or failed rollback of the service from the step it stopped at (with
    `rollback_id`, only that one: the alert worker resumes its own job's rollback, never
    another). Raise NotFoundError (nothing to roll back to or resume, artifact gone),
    LockedError (a deploy or rollback of the service runs), VerificationError (health failed:
    target release marked failed), PartialError (some SSH hosts failed), UsageError (invalid
    --to version), RecoverctlError (a step failed: the error names the step, where, the state
    the service is in and how to resume; details["transient"] says whether the cause was an
    engine, host or catalog that did not answer, so resuming later may finish it).
    """
    who = actor or default_actor()
    if resume:
        return _resume(cfg, catalog, service, rollback_id, who)
    plan = plan_rollback(cfg, catalog, service, to_version=to_version, schema=schema)
    if dry_run:
        return RollbackPlanned(service, plan["from_version"], plan["to_version"], schema, list(STEPS), plan)
    rollback_id = rollback_rows.create_rollback(
        catalog,
        service,
        from_release=plan["from_release"],
        to_release=plan["to_release"],
        schema_mode=schema,
        reason=reason,
        actor=who,
        plan=plan,
        steps=STEPS,
    )
    versions = {"from": plan["from_version"], "to": plan["to_version"]}
    details = {"rollback_id": rollback_id, **versions, "reason": reason}
    catalog.audit("rollback.start", service, "running", details, who=who)
    return _drive(cfg, catalog, service, rollback_id, who)


def _resume(cfg: Config, catalog: Catalog, service: str, rollback_id: int | None, who: str) -> RollbackResult:
    """Continue the resumable rollback of `service` (that one, with `rollback_id`) in this process."""
    with catalog.begin() as conn:
        plan = resumable_in(conn, service, rollback_id).plan
    # Same pre-flight as a fresh rollback, before the row is claimed: on failure it stays as it was.
    target = open_target(service, cfg.service(service))
    try:
        target.preflight(check_version(plan["to_version"]))
    finally:
        target.close()
    with catalog.begin() as conn:
        rb = resumable_in(conn, service, rollback_id)
        if rb.state == "failed":
            lock_service(conn, service)  # no deploy or other rollback of it may run meanwhile
        rollback_rows.claim_rollback_in(conn, rb.id)
    catalog.audit("rollback.resume", service, "running", {"rollback_id": rb.id}, who=who)
    return _drive(cfg, catalog, service, rb.id, who)


def summary(catalog: Catalog, rollback_id: int) -> RollbackResult:
    """Return the rollback's outcome and timeline as the CLI and the audit log show it."""
    rb = rollback_rows.get_rollback(catalog, rollback_id)
    steps = []
    for s in rollback_rows.list_steps(catalog, rollback_id):
        seconds = (s.finished_at - s.started_at) if s.started_at and s.finished_at else 0.0
        outcome = {"done": "ok"}.get(s.state, s.state)
        steps.append(StepOutcome(s.name, outcome, round(seconds, 3), s.output))
    end = rb.finished_at or time.time()
    return RollbackResult(
        result={"succeeded": "succeeded", "running": "running"}.get(rb.state, "failed"),
        rollback_id=rb.id,
        service=rb.service,
        from_version=rb.plan.get("from_version"),
        to_version=rb.plan.get("to_version"),
        schema_mode=rb.schema_mode,
        reason=rb.reason,
        actor=rb.actor,
        steps=steps,
        duration_s=round(end - rb.started_at, 3),
        error=rb.error,
        plan=rb.plan,
    )


@dataclass
class RollbackRun:
    """The steps of one rollback against its service's target; each returns the step's output
    (None: skipped) and may be run again after a crash."""

    cfg: Config
    catalog: Catalog
    service: str
    svc: DockerService | SshService
    rollback: rollback_rows.Rollback
    target_release: Release
    target: Target
    health: list[dict[str, Any]] = field(default_factory=list)

    @property
    def plan(self) -> dict[str, Any]:
        return self.rollback.plan

    def step(self, name: str) -> Callable[[], dict[str, Any] | None]:
        steps: dict[str, Callable[[], dict[str, Any] | None]] = {
            "stop_current": self.stop_current,
            "schema": self.schema,
            "start_target": self.start_target,
            "verify": self.verify,
            "notify": self.notify,
            "record": self.record,
        }
        return steps[name]

    def stop_current(self) -> dict[str, Any]:
        outcomes = self.target.stop()
        raise_for_hosts("stopping the current version", self.service, outcomes)
        return {"hosts": [o.to_dict() for o in outcomes]}

    def schema(self) -> dict[str, Any] | None:
        link, mode, schema_plan = self.svc.database, self.rollback.schema_mode, self.plan.get("schema", {})
        if mode == "pitr":
            assert link is not None
            point, lsn = schema_plan["restore_point"], schema_plan["restore_lsn"]
            tag = f"rollback-{self.rollback.id}"
            return restore_to_point(self.cfg, self.catalog, link.source, point, lsn, tag)
        if mode != "downgrade":
            return None
        assert link is not None
        url = migrations.database_url(self.cfg, self.service, link)
        return migrations.downgrade(url, schema_plan["script_location"], schema_plan["target_revision"])

    def start_target(self) -> dict[str, Any]:
        release = self.target_release
        artifact = Artifact(release.version, image=release.image, release_dir=release.release_dir)
        outcomes = self.target.start(artifact)
        raise_for_hosts(f"starting {release.version}", self.service, outcomes)
        return {"hosts": [o.to_dict() for o in outcomes]}

    def verify(self) -> dict[str, Any]:
        self.health[:] = verify_endpoints(self.target, self.svc)
        return {"health": self.health}

    def notify(self) -> dict[str, Any]:
        rb = self.rollback
        steps = rollback_rows.list_steps(self.catalog, rb.id)
        event_id = self.catalog.emit_event(
            "rollback.succeeded",
            "warning",
            self.service,
            f"{self.service} rolled back from {self.plan['from_version']} to {self.plan['to_version']}"
            + (f": {rb.reason}" if rb.reason else ""),
            {"rollback_id": rb.id, "steps": [{"name": s.name, "state": s.state} for s in steps]},
            dedup_key=f"rollback:{rb.id}",
        )
        return {"event_id": event_id}

    def record(self) -> dict[str, Any]:
        rb = self.rollback
        rollback_rows.swap_live_release(self.catalog, rb.id, int(rb.from_release), int(rb.to_release))
        return {"from_release": rb.from_release, "to_release": rb.to_release}

    def where(self, step: str | None) -> dict[str, Any]:
        if step == "schema" and self.svc.database is not None:
            return {"target": "database", "source": self.svc.database.source}
        return self.target.describe()

    def unhealthy(self) -> VerificationError:
        bad = ", ".join(f"{h['host']} ({h['last']})" for h in self.health if not h["ok"])
        return VerificationError(
            f"{self.plan['to_version']} failed verification on {bad}",
            hint="the service is NOT healthy: the release was marked failed; check the "
            "target, then deploy or roll back to another version",
            details={"health": self.health},
        )


def _drive(cfg: Config, catalog: Catalog, service: str, rollback_id: int, who: str) -> RollbackResult:
    """Run the unfinished steps of rollback #`rollback_id` in order, recording each; return its
    summary, or raise the step's error as `rollback_failure.fail` words it."""
    svc = cfg.service(service)
    booked = functools.partial(book, svc.retry, catalog)
    rb = booked("reading the rollback", lambda: rollback_rows.get_rollback(catalog, rollback_id))
    target_release = booked("reading the target release", lambda: get_release(catalog, int(rb.to_release)))
    check_stored_version(target_release.version, f"release #{target_release.id} of '{service}'")
    run = RollbackRun(cfg, catalog, service, svc, rb, target_release, open_target(service, svc))
    current: str | None = None
    finished = False  # the current step's action has completed; only recording it is left
    try:
        for step in booked("reading the steps", lambda: rollback_rows.list_steps(catalog, rollback_id)):
            if step.state in ("done", "skipped"):
                continue
            current, finished = step.name, False
            name = current
            booked(
                f"starting step {name}",
                functools.partial(rollback_rows.start_step, catalog, rollback_id, name),
            )
            # Every step is idempotent, so one that met an unreachable catalog is simply run again.
            output = within_window(svc.retry, f"step {name}", run.step(name), transient=catalog_fault)
            state = "skipped" if name == "schema" and output is None else "done"
            if name == "verify" and not all(h["ok"] for h in run.health):
                state = "failed"
            finished = state != "failed"
            # Looked up on the module at each call: the tests' crash hook (tests/faults/) wraps it.
            end = functools.partial(rollback_rows.end_step, catalog, rollback_id, name, state, output)
            booked(f"recording step {name}", end)
            if state == "failed":
                raise run.unhealthy()
        current, finished = "record", True  # what is left is marking the rollback succeeded
        booked("recording success", lambda: rollback_rows.mark_succeeded(catalog, rollback_id))
    except BaseException as e:
        plan, where = rb.plan, run.where(current)

        def summarize() -> dict[str, Any]:
            return summary(catalog, rollback_id).to_json()

        raise fail(
            catalog, svc.retry, rollback_id, service, plan, who, current, finished, where, e, summarize
        ) from None
    finally:
        run.target.close()
    result = booked("reading the summary", lambda: summary(catalog, rollback_id))
    timeline = {"rollback_id": rollback_id, "reason": rb.reason, "timeline": result.to_json()["steps"]}
    booked("auditing", lambda: catalog.audit("rollback", service, "succeeded", timeline, who=who))
    return result
