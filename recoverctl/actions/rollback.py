"""Roll a service back to its previous good release: a persisted, resumable step machine.

lock → stop_current → schema → start_target → verify → notify → record. Every step's start,
end, outcome and output is written to `rollback_steps` before the next one begins, so after a
crash `--resume` re-runs the first unfinished step (each step is idempotent) and continues.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from recoverctl.actions.deploy import raise_for_hosts, verify_endpoints
from recoverctl.actions.releases import current_release_in, get_release, release_history, set_status
from recoverctl.catalog import Catalog
from recoverctl.catalog import actor as default_actor
from recoverctl.catalog import tables as t
from recoverctl.config import Config
from recoverctl.deploy import Artifact, open_target
from recoverctl.deploy.lock import lock_service, owner_alive, owner_id
from recoverctl.errors import LockedError, NotFoundError, RecoverctlError, UsageError, VerificationError
from recoverctl.schema import migrations, pitr

STEPS = ("lock", "stop_current", "schema", "start_target", "verify", "notify", "record")
SCHEMA_MODES = ("keep", "downgrade", "pitr")

# Fault injection for the crash-and-resume tests: SIGKILL this process right after the named step.
ENV_CRASH_AFTER = "RECOVERCTL_FAULT_CRASH_AFTER_STEP"


def _describe_releases(history: list[dict[str, Any]]) -> str:
    return ", ".join(f"{r['version']} ({r['status']})" for r in history[:10]) or "(none)"


def plan_rollback(
    cfg: Config, catalog: Catalog, service: str, *, to_version: str | None = None, schema: str = "keep"
) -> dict[str, Any]:
    """Return the rollback plan: versions, releases, schema action with data-loss warnings, steps.

    Runs the pre-flight checks (engine / every host reachable, target artifact present) and
    changes nothing. Raise NotFoundError (unknown service or version, no previous good release,
    artifact gone), UsageError (bad schema mode), RecoverctlError (unreachable).
    """
    svc = cfg.service(service)
    if schema not in SCHEMA_MODES:
        raise UsageError(f"unknown schema mode '{schema}'", hint=f"use one of: {', '.join(SCHEMA_MODES)}")
    history = release_history(catalog, service)
    with catalog.begin() as conn:
        current = current_release_in(conn, service)
    if current is None:
        raise NotFoundError(
            f"service '{service}' has no live release to roll back from",
            hint=f"releases: {_describe_releases(history)}; record one with 'recoverctl release record'",
        )
    if to_version is not None:
        candidates = [r for r in history if r["version"] == to_version and r["id"] != current["id"]]
        if not candidates:
            raise NotFoundError(
                f"service '{service}' has no release {to_version} to roll back to",
                hint=f"releases: {_describe_releases(history)}",
            )
        target_release = next((r for r in candidates if r["status"] != "failed"), candidates[0])
    else:
        older_good = [r for r in history if r["id"] < current["id"] and r["status"] == "good"]
        if not older_good:
            raise NotFoundError(
                f"service '{service}' has no previous good release before {current['version']}",
                hint=f"releases: {_describe_releases(history)}; choose one with --to VERSION",
            )
        target_release = older_good[0]
    if target_release["version"] == current["version"]:
        raise UsageError(f"{service} already runs {current['version']}", hint="choose another --to VERSION")

    warnings: list[str] = []
    if target_release["status"] == "failed":
        warnings.append(f"release {target_release['version']} is marked failed")
    schema_plan = _plan_schema(cfg, service, schema, current, target_release, warnings)

    target = open_target(service, svc)
    try:
        target.preflight(target_release["version"])
        where = target.describe()
    finally:
        target.close()
    return {
        "service": service,
        "target": where,
        "from_version": current["version"],
        "to_version": target_release["version"],
        "from_release": current["id"],
        "to_release": target_release["id"],
        "schema_mode": schema,
        "schema": schema_plan,
        "steps": list(STEPS),
        "warnings": warnings,
    }


def _plan_schema(
    cfg: Config,
    service: str,
    mode: str,
    current: dict[str, Any],
    target: dict[str, Any],
    warnings: list[str],
) -> dict[str, Any]:
    link = cfg.service(service).database
    plan: dict[str, Any] = {
        "mode": mode,
        "current_revision": current.get("schema_revision"),
        "target_revision": target.get("schema_revision"),
    }
    if mode == "keep":
        if plan["current_revision"] != plan["target_revision"]:
            warnings.append(
                f"schema stays at {plan['current_revision']} while {target['version']} expects "
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
    script_location = current.get("script_location")
    if not script_location:
        raise UsageError(
            f"release {current['version']} of '{service}' has no recorded migration scripts",
            hint="deploy with a database link, or record the release with --script-location",
        )
    url = migrations.database_url(cfg, service, link)
    down = migrations.plan_downgrade(url, script_location, target.get("schema_revision"))
    plan.update(down)
    plan["current_revision"] = down["from_revision"]
    if down.get("sql_error"):
        warnings.append(
            f"the downgrade SQL could not be rendered offline ({down['sql_error']}): what it drops is unknown"
        )
    if down["drops"]["tables"] or down["drops"]["columns"]:
        lost = ", ".join(f"{tbl} ({n} rows)" for tbl, n in down["rows_lost"].items())
        warnings.append(
            "schema downgrade drops "
            + "; ".join(
                part
                for part in (
                    f"tables: {', '.join(down['drops']['tables'])}" if down["drops"]["tables"] else "",
                    f"columns: {', '.join(down['drops']['columns'])}" if down["drops"]["columns"] else "",
                )
                if part
            )
            + (f" — data lost: {lost}" if lost else "")
        )
    return plan


def _plan_pitr(
    cfg: Config,
    service: str,
    link: Any,
    current: dict[str, Any],
    plan: dict[str, Any],
    warnings: list[str],
) -> dict[str, Any]:
    """Describe the restore point of the current release and the writes a PITR to it would lose."""
    name, lsn = current.get("restore_point"), current.get("restore_lsn")
    if not name or not lsn:
        raise NotFoundError(
            f"release {current['version']} of '{service}' has no restore point",
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
        seconds_after=round(time.time() - current["created_at"], 1),
    )
    warnings.append(
        f"PITR to restore point {name} (LSN {lsn}) loses every write after it: "
        f"{since['bytes_after']} bytes of WAL over {plan['seconds_after']:.0f} s"
    )
    warnings.append(
        f"the database is stopped and replaced by a restore of {link.source} to {name}; "
        "its current data directory is kept beside it"
    )
    return plan


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
) -> dict[str, Any]:
    """Roll `service` back and return {result, from_version, to_version, steps, duration_s, ...}.

    With dry_run return the plan (result "planned") and change nothing; with resume continue
    the interrupted rollback of the service. Raise NotFoundError (nothing to roll back to,
    artifact gone), LockedError (a deploy/rollback of the service runs), VerificationError
    (health failed: target release marked failed), PartialError (some SSH hosts failed),
    RecoverctlError (a step failed; the error says what state the service is in).
    """
    who = actor or default_actor()
    if resume:
        rollback_id = _take_over(catalog, service, cfg)
        with catalog.begin() as conn:
            plan = conn.execute(
                sa.select(t.rollbacks.c.plan).where(t.rollbacks.c.id == rollback_id)
            ).scalar_one()
        # Same pre-flight as a fresh rollback; on failure the row stays resumable (our pid dies).
        target = open_target(service, cfg.service(service))
        try:
            target.preflight(plan["to_version"])
        finally:
            target.close()
        return _drive(cfg, catalog, rollback_id, who)
    plan = plan_rollback(cfg, catalog, service, to_version=to_version, schema=schema)
    if dry_run:
        return {
            "result": "planned",
            "dry_run": True,
            "rollback_id": None,
            "service": service,
            "from_version": plan["from_version"],
            "to_version": plan["to_version"],
            "schema_mode": schema,
            "steps": [{"name": s, "outcome": "planned", "seconds": 0.0} for s in STEPS],
            "duration_s": 0.0,
            "plan": plan,
        }
    now = time.time()
    with catalog.begin() as conn:
        lock_service(conn, service)
        rollback_id = int(
            conn.execute(
                t.rollbacks.insert().values(
                    service=service,
                    from_release=plan["from_release"],
                    to_release=plan["to_release"],
                    schema_mode=schema,
                    state="running",
                    reason=reason,
                    actor=who,
                    owner=owner_id(),
                    started_at=now,
                    plan=plan,
                )
            ).inserted_primary_key[0]  # type: ignore[index]
        )
        for seq, name in enumerate(STEPS):
            done = name == "lock"
            conn.execute(
                t.rollback_steps.insert().values(
                    rollback_id=rollback_id,
                    seq=seq,
                    name=name,
                    state="done" if done else "pending",
                    started_at=now if done else None,
                    finished_at=now if done else None,
                    output={"owner": owner_id()} if done else None,
                )
            )
    catalog.audit(
        "rollback.start",
        service,
        "running",
        {
            "rollback_id": rollback_id,
            "from": plan["from_version"],
            "to": plan["to_version"],
            "reason": reason,
        },
        who=who,
    )
    _maybe_crash("lock")
    return _drive(cfg, catalog, rollback_id, who)


def _take_over(catalog: Catalog, service: str, cfg: Config) -> int:
    cfg.service(service)
    with catalog.begin() as conn:
        rows = conn.execute(
            sa.select(t.rollbacks.c.id, t.rollbacks.c.owner)
            .where(t.rollbacks.c.service == service, t.rollbacks.c.state == "running")
            .order_by(t.rollbacks.c.id.desc())
        ).all()
        if not rows:
            raise NotFoundError(
                f"service '{service}' has no interrupted rollback to resume",
                hint=f"start one with: recoverctl rollback {service}",
            )
        rb = rows[0]
        if owner_alive(rb.owner):
            raise LockedError(
                f"rollback #{rb.id} of '{service}' is still running in {rb.owner}",
                hint="wait for it to finish",
                details={"rollback_id": rb.id, "owner": rb.owner},
            )
        conn.execute(t.rollbacks.update().where(t.rollbacks.c.id == rb.id).values(owner=owner_id()))
        return int(rb.id)


def _maybe_crash(step: str) -> None:
    if os.environ.get(ENV_CRASH_AFTER) == step:
        os.kill(os.getpid(), signal.SIGKILL)


def _steps(catalog: Catalog, rollback_id: int) -> list[dict[str, Any]]:
    with catalog.begin() as conn:
        rows = conn.execute(
            sa.select(t.rollback_steps)
            .where(t.rollback_steps.c.rollback_id == rollback_id)
            .order_by(t.rollback_steps.c.seq)
        ).all()
    return [dict(r._mapping) for r in rows]


def _mark(catalog: Catalog, step_id: int, **values: Any) -> None:
    with catalog.begin() as conn:
        conn.execute(t.rollback_steps.update().where(t.rollback_steps.c.id == step_id).values(**values))


def _summary(catalog: Catalog, rollback_id: int) -> dict[str, Any]:
    with catalog.begin() as conn:
        rb = conn.execute(sa.select(t.rollbacks).where(t.rollbacks.c.id == rollback_id)).one()
    plan = rb.plan or {}
    steps = []
    for s in _steps(catalog, rollback_id):
        seconds = (s["finished_at"] - s["started_at"]) if s["started_at"] and s["finished_at"] else 0.0
        outcome = {"done": "ok"}.get(s["state"], s["state"])
        steps.append(
            {"name": s["name"], "outcome": outcome, "seconds": round(seconds, 3), "output": s["output"]}
        )
    end = rb.finished_at or time.time()
    return {
        "result": {"succeeded": "succeeded", "running": "running"}.get(rb.state, "failed"),
        "rollback_id": rb.id,
        "service": rb.service,
        "from_version": plan.get("from_version"),
        "to_version": plan.get("to_version"),
        "schema_mode": rb.schema_mode,
        "reason": rb.reason,
        "actor": rb.actor,
        "steps": steps,
        "duration_s": round(end - rb.started_at, 3),
        "error": rb.error,
        "plan": plan,
    }


def _drive(cfg: Config, catalog: Catalog, rollback_id: int, who: str) -> dict[str, Any]:
    with catalog.begin() as conn:
        rb = conn.execute(sa.select(t.rollbacks).where(t.rollbacks.c.id == rollback_id)).one()
    plan: dict[str, Any] = rb.plan
    service = rb.service
    svc = cfg.service(service)
    target_release = get_release(catalog, int(rb.to_release))
    target = open_target(service, svc)
    health: list[dict[str, Any]] = []

    def stop_current() -> dict[str, Any]:
        outcomes = target.stop()
        raise_for_hosts("stopping the current version", service, outcomes)
        return {"hosts": [o.to_dict() for o in outcomes]}

    def schema_action() -> dict[str, Any] | None:
        link = svc.database
        if rb.schema_mode == "pitr":
            assert link is not None
            sp = plan["schema"]
            return pitr.restore_to_point(
                cfg, catalog, link.source, sp["restore_point"], sp["restore_lsn"], f"rollback-{rollback_id}"
            )
        if rb.schema_mode != "downgrade":
            return None
        assert link is not None
        url = migrations.database_url(cfg, service, link)
        return migrations.downgrade(url, plan["schema"]["script_location"], plan["schema"]["target_revision"])

    def start_target() -> dict[str, Any]:
        artifact = Artifact(
            target_release["version"],
            image=target_release["image"],
            release_dir=target_release["release_dir"],
        )
        outcomes = target.start(artifact)
        raise_for_hosts(f"starting {target_release['version']}", service, outcomes)
        return {"hosts": [o.to_dict() for o in outcomes]}

    def verify() -> dict[str, Any]:
        health[:] = verify_endpoints(target, svc)
        return {"health": health}

    def notify() -> dict[str, Any]:
        event_id = catalog.emit_event(
            "rollback.succeeded",
            "warning",
            service,
            f"{service} rolled back from {plan['from_version']} to {plan['to_version']}"
            + (f": {rb.reason}" if rb.reason else ""),
            {"rollback_id": rollback_id, **_event_details(catalog, rollback_id)},
            dedup_key=f"rollback:{rollback_id}",
        )
        return {"event_id": event_id}

    def record() -> dict[str, Any]:
        with catalog.begin() as conn:
            set_status(conn, int(rb.from_release), "rolled-back", rolled_back_by=rollback_id)
            set_status(conn, int(rb.to_release), "live", restored_by=rollback_id)
        return {"from_release": rb.from_release, "to_release": rb.to_release}

    actions: dict[str, Callable[[], dict[str, Any] | None]] = {
        "stop_current": stop_current,
        "schema": schema_action,
        "start_target": start_target,
        "verify": verify,
        "notify": notify,
        "record": record,
    }
    try:
        for step in _steps(catalog, rollback_id):
            if step["state"] in ("done", "skipped"):
                continue
            _mark(catalog, step["id"], state="running", started_at=time.time(), finished_at=None)
            try:
                output = actions[step["name"]]()
            except BaseException as e:
                _mark(
                    catalog,
                    step["id"],
                    state="failed",
                    finished_at=time.time(),
                    output={"error": str(e), **getattr(e, "details", {})},
                )
                raise
            if step["name"] == "verify" and not all(h["ok"] for h in health):
                _mark(catalog, step["id"], state="failed", finished_at=time.time(), output=output)
                raise VerificationError(
                    f"rollback of {service} to {plan['to_version']} failed verification on "
                    + ", ".join(f"{h['host']} ({h['last']})" for h in health if not h["ok"]),
                    hint="the service is NOT healthy: the release was marked failed; check the "
                    "target, then deploy or roll back to another version",
                    details={"health": health},
                )
            skipped = step["name"] == "schema" and output is None
            _mark(
                catalog,
                step["id"],
                state="skipped" if skipped else "done",
                finished_at=time.time(),
                output=output,
            )
            _maybe_crash(step["name"])
    except BaseException as e:
        _fail(catalog, rollback_id, service, plan, who, e)
        summary = _summary(catalog, rollback_id)
        if isinstance(e, RecoverctlError):
            e.details = {**e.details, "rollback": summary}
        raise
    finally:
        target.close()
    with catalog.begin() as conn:
        conn.execute(
            t.rollbacks.update()
            .where(t.rollbacks.c.id == rollback_id)
            .values(state="succeeded", finished_at=time.time())
        )
    summary = _summary(catalog, rollback_id)
    catalog.audit(
        "rollback",
        service,
        "succeeded",
        {"rollback_id": rollback_id, "reason": rb.reason, "timeline": summary["steps"]},
        who=who,
    )
    return summary


def _event_details(catalog: Catalog, rollback_id: int) -> dict[str, Any]:
    steps = _steps(catalog, rollback_id)
    return {"steps": [{"name": s["name"], "state": s["state"]} for s in steps]}


def _fail(
    catalog: Catalog, rollback_id: int, service: str, plan: dict[str, Any], who: str, err: BaseException
) -> None:
    steps = _steps(catalog, rollback_id)
    done = [s["name"] for s in steps if s["state"] == "done"]
    failed = next((s["name"] for s in steps if s["state"] == "failed"), None)
    state = (
        "current version stopped, target not running"
        if "stop_current" in done and "start_target" not in done
        else "target started but not verified healthy"
        if "start_target" in done
        else "nothing was stopped"
    )
    message = f"{type(err).__name__}: {err}"
    with catalog.begin() as conn:
        conn.execute(
            t.rollbacks.update()
            .where(t.rollbacks.c.id == rollback_id)
            .values(state="failed", finished_at=time.time(), error=message)
        )
        rb = conn.execute(
            sa.select(t.rollbacks.c.to_release, t.rollbacks.c.from_release).where(
                t.rollbacks.c.id == rollback_id
            )
        ).one()
        if isinstance(err, VerificationError):
            set_status(conn, int(rb.to_release), "failed", failed_by_rollback=rollback_id)
        if "stop_current" in done:
            # It no longer serves: leaving it `live` would make it look current.
            set_status(conn, int(rb.from_release), "rolled-back", rolled_back_by=rollback_id)
    catalog.emit_event(
        "rollback.failed",
        "critical",
        service,
        f"rollback of {service} from {plan.get('from_version')} to {plan.get('to_version')} failed at "
        f"step {failed}: {err} ({state})",
        {"rollback_id": rollback_id, "failed_step": failed, "service_state": state, "steps_done": done},
        dedup_key=f"rollback:{rollback_id}",
    )
    catalog.audit(
        "rollback",
        service,
        "failed",
        {"rollback_id": rollback_id, "failed_step": failed, "error": message, "service_state": state},
        who=who,
    )
    if isinstance(err, RecoverctlError):
        err.details = {**err.details, "service_state": state, "failed_step": failed}
        err.message = f"{err.message} [service state: {state}]"
