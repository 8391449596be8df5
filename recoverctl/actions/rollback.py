"""Roll a service back to its previous good release: a persisted, resumable step machine.

lock → stop_current → schema → start_target → verify → notify → record. Every step's start,
end, outcome and output is written to `rollback_steps` before the next one begins, so after a
crash or a failed step `--resume` re-runs the first unfinished step (each step is idempotent)
and continues. Targets ride out an unreachable engine or host (deploy/retry.py); steps and
their bookkeeping ride out an unreachable catalog within the same window.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import time
from collections.abc import Callable
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row

from recoverctl.actions.deploy import raise_for_hosts, verify_endpoints
from recoverctl.actions.releases import current_release_in, get_release, release_history, set_status
from recoverctl.actions.rollback_pitr import restore_to_point
from recoverctl.appdb import migrations
from recoverctl.catalog import Catalog
from recoverctl.catalog import actor as default_actor
from recoverctl.catalog import tables as t
from recoverctl.catalog.service_lock import lock_service, owner_alive, owner_id
from recoverctl.config import Config, ServiceRetry
from recoverctl.deploy import Artifact, TargetUnreachable, open_target
from recoverctl.deploy.retry import within_window
from recoverctl.deploy.version import check_stored_version, check_version
from recoverctl.errors import (
    CatalogError,
    LockedError,
    NotFoundError,
    RecoverctlError,
    UsageError,
    VerificationError,
)

STEPS = ("lock", "stop_current", "schema", "start_target", "verify", "notify", "record")
SCHEMA_MODES = ("keep", "downgrade", "pitr")

# Fault injection for the crash-and-resume tests: SIGKILL this process right after the named step.
ENV_CRASH_AFTER = "RECOVERCTL_FAULT_CRASH_AFTER_STEP"

T = TypeVar("T")


def catalog_fault(e: BaseException) -> bool:
    """Return True when the catalog did not answer (PostgreSQL down or restarting, SQLite locked).

    Catalog.begin turns an OperationalError into CatalogError and keeps it as the context.
    """
    return isinstance(e, CatalogError) and isinstance(e.__context__, sa.exc.OperationalError)


def _book(options: ServiceRetry, catalog: Catalog, what: str, fn: Callable[[], T]) -> T:
    """Run one piece of rollback bookkeeping, riding out an unreachable catalog within the window."""
    return within_window(options, f"{what} in catalog '{catalog.display_url}'", fn, transient=catalog_fault)


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
    if to_version is not None:
        check_version(to_version)
    if schema not in SCHEMA_MODES:
        raise UsageError(f"unknown schema mode '{schema}'", hint=f"use one of: {', '.join(SCHEMA_MODES)}")
    history = release_history(catalog, service)
    with catalog.begin() as conn:
        current = current_release_in(conn, service)
    if current is None:
        hint = f"releases: {_describe_releases(history)}; record one with 'recoverctl release record'"
        with catalog.begin() as conn:
            try:
                failed = _resumable_in(conn, service)
                hint = f"rollback #{failed.id} did not finish: recoverctl rollback {service} --resume"
            except RecoverctlError:
                pass
        raise NotFoundError(f"service '{service}' has no live release to roll back from", hint=hint)
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
    for release in (current, target_release):
        check_stored_version(release["version"], f"release #{release['id']} of '{service}'")
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
    rollback_id: int | None = None,
) -> dict[str, Any]:
    """Roll `service` back and return {result, from_version, to_version, steps, duration_s, ...}.

    With dry_run return the plan (result "planned") and change nothing; with resume continue
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
        with catalog.begin() as conn:
            plan = _resumable_in(conn, service, rollback_id).plan
        svc = cfg.service(service)
        # Same pre-flight as a fresh rollback, before the row is claimed: on failure it stays as it was.
        target = open_target(service, svc)
        try:
            target.preflight(check_version(plan["to_version"]))
        finally:
            target.close()
        rollback_id = _take_over(catalog, service, rollback_id)
        catalog.audit("rollback.resume", service, "running", {"rollback_id": rollback_id}, who=who)
        return _drive(cfg, catalog, service, rollback_id, who)
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
    return _drive(cfg, catalog, service, rollback_id, who)


def _resumable_in(conn: Connection, service: str, rollback_id: int | None = None) -> Row[Any]:
    """Return the service's newest rollback when it can be resumed: interrupted (its process is
    gone) or failed at a step, with no release of the service recorded since it started (and,
    with `rollback_id`, when it is that rollback).

    Raise NotFoundError (nothing to resume) or LockedError (it still runs).
    """
    rb = conn.execute(
        sa.select(t.rollbacks).where(t.rollbacks.c.service == service).order_by(t.rollbacks.c.id.desc())
    ).first()
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
    newer = conn.execute(
        sa.select(t.releases.c.id, t.releases.c.version)
        .where(t.releases.c.service == service, t.releases.c.created_at > rb.started_at)
        .order_by(t.releases.c.id.desc())
    ).first()
    if newer is not None:
        raise NotFoundError(
            f"rollback #{rb.id} of '{service}' {rb.state}, but release {newer.version} (#{newer.id}) "
            "was deployed or recorded since: there is nothing to resume",
            hint=f"check 'recoverctl releases {service}', then roll back afresh if needed",
        )
    return rb


def _take_over(catalog: Catalog, service: str, rollback_id: int | None) -> int:
    """Claim the resumable rollback of `service` (that one, with `rollback_id`) for this process;
    return its id."""
    with catalog.begin() as conn:
        rb = _resumable_in(conn, service, rollback_id)
        if rb.state == "failed":
            lock_service(conn, service)  # no deploy or other rollback of it may run meanwhile
        conn.execute(
            t.rollbacks.update()
            .where(t.rollbacks.c.id == rb.id)
            .values(state="running", owner=owner_id(), finished_at=None, error=None)
        )
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


def _drive(cfg: Config, catalog: Catalog, service: str, rollback_id: int, who: str) -> dict[str, Any]:
    svc = cfg.service(service)
    book = functools.partial(_book, svc.retry, catalog)

    def load() -> Any:
        with catalog.begin() as conn:
            return conn.execute(sa.select(t.rollbacks).where(t.rollbacks.c.id == rollback_id)).one()

    rb = book("reading the rollback", load)
    plan: dict[str, Any] = rb.plan
    target_release = book("reading the target release", lambda: get_release(catalog, int(rb.to_release)))
    check_stored_version(target_release["version"], f"release #{target_release['id']} of '{service}'")
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
            return restore_to_point(
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

    def where(step: str | None) -> dict[str, Any]:
        if step == "schema" and svc.database is not None:
            return {"target": "database", "source": svc.database.source}
        return target.describe()

    current: str | None = None
    finished = False  # the current step's action has completed; only recording it is left
    try:
        for step in book("reading the steps", lambda: _steps(catalog, rollback_id)):
            if step["state"] in ("done", "skipped"):
                continue
            current, finished = step["name"], False
            mark = functools.partial(_mark, catalog, step["id"])
            started = functools.partial(mark, state="running", started_at=time.time(), finished_at=None)
            book(f"starting step {current}", started)
            # Every step is idempotent, so one that met an unreachable catalog is simply run again.
            output = within_window(svc.retry, f"step {current}", actions[current], transient=catalog_fault)
            finished = current != "verify" or all(h["ok"] for h in health)
            if current == "verify" and not all(h["ok"] for h in health):
                failed = functools.partial(mark, state="failed", finished_at=time.time(), output=output)
                book("recording step verify", failed)
                raise VerificationError(
                    f"{plan['to_version']} failed verification on "
                    + ", ".join(f"{h['host']} ({h['last']})" for h in health if not h["ok"]),
                    hint="the service is NOT healthy: the release was marked failed; check the "
                    "target, then deploy or roll back to another version",
                    details={"health": health},
                )
            skipped = current == "schema" and output is None
            state = "skipped" if skipped else "done"
            ended = functools.partial(mark, state=state, finished_at=time.time(), output=output)
            book(f"recording step {current}", ended)
            _maybe_crash(current)
        current, finished = "record", True  # what is left is marking the rollback succeeded

        def finish() -> None:
            with catalog.begin() as conn:
                conn.execute(
                    t.rollbacks.update()
                    .where(t.rollbacks.c.id == rollback_id)
                    .values(state="succeeded", finished_at=time.time())
                )

        book("recording success", finish)
    except BaseException as e:
        raise _fail(
            catalog, svc.retry, rollback_id, service, plan, who, current, finished, where(current), e
        ) from None
    finally:
        target.close()
    summary = book("reading the summary", lambda: _summary(catalog, rollback_id))
    book(
        "auditing",
        lambda: catalog.audit(
            "rollback",
            service,
            "succeeded",
            {"rollback_id": rollback_id, "reason": rb.reason, "timeline": summary["steps"]},
            who=who,
        ),
    )
    return summary


def _event_details(catalog: Catalog, rollback_id: int) -> dict[str, Any]:
    steps = _steps(catalog, rollback_id)
    return {"steps": [{"name": s["name"], "state": s["state"]} for s in steps]}


def _service_state(step: str | None, plan: dict[str, Any], finished: bool) -> str:
    """Say what runs after a rollback stopped in `step`, or right after it `finished` (when only
    recording the step failed), from what the step does."""
    frm, to = plan.get("from_version"), plan.get("to_version")
    healthy = f"{to} runs and passed its health check"
    during = {
        "stop_current": f"unknown: {frm} may still run or be stopped (the stop did not complete); "
        f"{to} is not started",
        "schema": f"{frm} is stopped, {to} is not started; the database schema may be partly changed",
        "start_target": f"{frm} is stopped; {to} may be started on some hosts or none",
        "verify": f"{to} is started but not verified healthy",
        "notify": f"{healthy}; the notification was not sent",
        "record": f"{healthy}; the release records are not updated",
    }
    after = {
        "stop_current": f"{frm} is stopped, {to} is not started",
        "schema": f"{frm} is stopped, {to} is not started; the schema step is done",
        "start_target": f"{to} is started but not verified healthy",
        "verify": f"{healthy}; the notification was not sent",
        "notify": f"{healthy}; the release records are not updated",
        "record": f"{to} is live",
    }
    if step is None:
        return "unknown: the rollback stopped between steps"
    if finished:
        return f"{after[step]} (step {step} finished, but the catalog could not record it)"
    return during[step]


def _where(err: BaseException, target: dict[str, Any], catalog: Catalog) -> str:
    """Name what the failure happened on: the catalog, the engine, or the hosts that failed."""
    if catalog_fault(err):
        return f"catalog '{catalog.display_url}'"
    if isinstance(err, TargetUnreachable):
        return err.where
    hosts = getattr(err, "details", {}).get("hosts")
    if isinstance(hosts, list) and any(not h.get("ok") for h in hosts):
        return "hosts " + ", ".join(str(h["host"]) for h in hosts if not h.get("ok"))
    if target.get("target") == "database":
        return f"the database of source '{target['source']}'"
    if target.get("target") == "docker":
        return f"docker host {target['engine']}"
    return "hosts " + ", ".join(target.get("hosts", []))


def _fail(
    catalog: Catalog,
    options: ServiceRetry,
    rollback_id: int,
    service: str,
    plan: dict[str, Any],
    who: str,
    step: str | None,
    finished: bool,
    target: dict[str, Any],
    err: BaseException,
) -> BaseException:
    """Record that the rollback failed at `step` (when the catalog answers) and return the error to
    raise: a RecoverctlError saying which step failed on what, the state the service is in, and
    how to resume. Anything else is a bug and is returned unchanged, keeping its traceback."""
    state = _service_state(step, plan, finished)
    message = f"{type(err).__name__}: {err}"
    # A catalog that stayed away for the whole window is tried once more, not for another window.
    options = options.model_copy(update={"window": 0.0}) if catalog_fault(err) else options
    recorded = True
    try:
        record = functools.partial(_record_failure, catalog, rollback_id, step, err, message)
        _book(options, catalog, "recording the failure", record)
    except CatalogError:
        recorded = False  # still "running" under this process: resumable once it has exited
    if recorded:
        versions = f"from {plan.get('from_version')} to {plan.get('to_version')}"
        summary = f"failed at step {step}: {err} ({state})"
        with contextlib.suppress(CatalogError):  # the failure itself is recorded; these are extras
            catalog.emit_event(
                "rollback.failed",
                "critical",
                service,
                f"rollback of {service} {versions} {summary}",
                {"rollback_id": rollback_id, "failed_step": step, "service_state": state},
                dedup_key=f"rollback:{rollback_id}",
            )
            catalog.audit(
                "rollback",
                service,
                "failed",
                {"rollback_id": rollback_id, "failed_step": step, "error": message, "service_state": state},
                who=who,
            )
    if not isinstance(err, RecoverctlError):
        return err
    resume = f"recoverctl rollback {service} --resume"
    err.message = (
        f"rollback of '{service}' failed at step '{step}' on {_where(err, target, catalog)}: "
        f"{err.message} — service state: {state}; resume with '{resume}'"
    )
    if not recorded:
        err.message += " (the catalog could not record this failure)"
    err.hint = f"{err.hint + '; ' if err.hint else ''}once the cause is fixed: {resume}"
    timeline: dict[str, Any] | None = None
    if recorded:
        with contextlib.suppress(CatalogError):
            timeline = _summary(catalog, rollback_id)
    err.details = {
        **err.details,
        "service_state": state,
        "failed_step": step,
        "rollback_id": rollback_id,
        "transient": recorded and transient_fault(err),
        **({"rollback": timeline} if timeline is not None else {}),
    }
    return err


def transient_fault(err: BaseException) -> bool:
    """Return True when `err` came from an engine, hosts or a catalog that did not answer (past the
    retry window): the infrastructure, not the release, so resuming later may finish the rollback."""
    if catalog_fault(err) or isinstance(err, TargetUnreachable):
        return True
    hosts = getattr(err, "details", {}).get("hosts")
    failed = [h for h in hosts if not h.get("ok")] if isinstance(hosts, list) else []
    return bool(failed) and all(h.get("unreachable") for h in failed)


def _record_failure(
    catalog: Catalog, rollback_id: int, step: str | None, err: BaseException, message: str
) -> None:
    with catalog.begin() as conn:
        if step is not None:
            conn.execute(
                t.rollback_steps.update()
                .where(
                    t.rollback_steps.c.rollback_id == rollback_id,
                    t.rollback_steps.c.name == step,
                    t.rollback_steps.c.state != "failed",
                )
                .values(
                    state="failed",
                    finished_at=time.time(),
                    output={"error": str(err), **getattr(err, "details", {})},
                )
            )
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
        done = conn.execute(
            sa.select(t.rollback_steps.c.id).where(
                t.rollback_steps.c.rollback_id == rollback_id,
                t.rollback_steps.c.name == "stop_current",
                t.rollback_steps.c.state == "done",
            )
        ).first()
        if done is not None:
            # It no longer serves: leaving it `live` would make it look current.
            set_status(conn, int(rb.from_release), "rolled-back", rolled_back_by=rollback_id)
