"""What each job kind in the persistent queue does: one registry from kind to callable.

Executors are imported lazily so a worker does not load (or need) the deploy machinery to send a
notification. Each returns a JSON-able result or raises RecoverctlError (the job then fails).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from recoverctl.catalog import Catalog
from recoverctl.catalog import tables as t
from recoverctl.config import ENV_PASSWORD, Config, repository_password
from recoverctl.errors import ConfigError, RecoverctlError, VerificationError

Executor = Callable[[Config, Catalog, dict[str, Any]], dict[str, Any]]
BACKUP_TIMEOUT = 6 * 3600.0


def _alert_summary(payload: dict[str, Any]) -> str:
    summary = payload.get("summary")
    return f"{payload.get('alertname')} on '{payload.get('target')}'" + (f": {summary}" if summary else "")


def run_notify(cfg: Config, catalog: Catalog, payload: dict[str, Any]) -> dict[str, Any]:
    """Record an `alert.notify` event for the notification layer; return its id."""
    event_id = catalog.emit_event(
        "alert.notify",
        payload.get("severity", "warning"),
        payload.get("target"),
        _alert_summary(payload),
        details={k: payload.get(k) for k in ("policy", "source", "fingerprint", "starts_at", "labels")},
        dedup_key=f"alert:{payload.get('incident_key')}",
    )
    return {"event_id": event_id}


class RetryLater(RecoverctlError):
    """The job failed on something passing (an engine, host or catalog that did not answer):
    its worker queues it again, to run no sooner than `delay` seconds from now, while it has
    attempts left; its next attempt continues what this one began."""

    def __init__(self, cause: RecoverctlError, delay: float):
        super().__init__(cause.message, hint=cause.hint, details={**cause.details, "retry_in_s": delay})
        self.exit_code = cause.exit_code
        self.delay = delay


def _earlier_attempt(catalog: Catalog, service: str, marker: str) -> Any:
    with catalog.begin() as conn:
        return conn.execute(
            sa.select(t.rollbacks.c.id, t.rollbacks.c.state, t.releases.c.version, t.releases.c.status)
            .join(t.releases, t.releases.c.id == t.rollbacks.c.to_release, isouter=True)
            .where(t.rollbacks.c.service == service, t.rollbacks.c.reason.contains(marker, autoescape=True))
            .order_by(t.rollbacks.c.id.desc())
        ).first()


def run_rollback(cfg: Config, catalog: Catalog, payload: dict[str, Any]) -> dict[str, Any]:
    """Roll the payload's service back to its previous good release; raise when it failed.

    Every attempt of the job first looks for the rollback an earlier attempt started (after a
    worker crash, or after a step failed): succeeded → done (never roll back twice); interrupted
    or failed at a step → resume it from that step, through the same action and refusals as
    `rollback --resume`; none → start one. A failed rollback whose target release failed its
    health check is not resumed (never roll back onto a version that failed). Raise RetryLater
    when the engine, a host or the catalog did not answer, so the job is tried again later.
    """
    from recoverctl.actions.rollback import rollback, transient_fault

    service = payload["target"]
    marker = f"[job {payload.get('job_id')}]"
    earlier = _earlier_attempt(catalog, service, marker)
    if earlier is not None and earlier.state == "succeeded":
        return {"result": "succeeded", "rollback_id": earlier.id, "finished_before_restart": True}
    if earlier is not None and earlier.status == "failed":
        raise RecoverctlError(
            f"rollback #{earlier.id} of '{service}' ended {earlier.state}: {earlier.version} failed "
            "its health check, and an automatic rollback never goes onto a version that failed",
            hint=f"check 'recoverctl releases {service}' and roll back by hand to another version",
        )
    if earlier is not None and earlier.state not in ("running", "failed"):
        raise RecoverctlError(
            f"rollback #{earlier.id} of '{service}' ended {earlier.state}",
            hint=f"check 'recoverctl releases {service}' and roll back by hand if needed",
        )
    try:
        result = rollback(
            cfg,
            catalog,
            service,
            to_version=None,
            schema="keep",
            dry_run=False,
            reason=f"alert {_alert_summary(payload)} (policy {payload.get('policy')}) {marker}",
            actor=f"{payload.get('source', 'alert')}:{payload.get('policy')}",
            resume=earlier is not None,
            rollback_id=earlier.id if earlier is not None else None,
        ).to_json()
    except RecoverctlError as e:
        if transient_fault(e) or e.details.get("transient"):
            # The step already rode out the window; give the infrastructure as long again.
            raise RetryLater(e, max(cfg.service(service).retry.window, 1.0)) from e
        raise
    if result.get("result") != "succeeded":
        raise RecoverctlError(
            f"rollback of '{payload['target']}' ended {result.get('result')}",
            details={"result": result},
        )
    return result


def backup_argv(cfg: Config, source: str) -> list[str]:
    """Return the `recoverctl` arguments that back up `source`; raise RecoverctlError for volumes."""
    _, src = cfg.source(source)
    if src.type == "postgres":
        return ["backup", "postgres", "--source", source, "--json"]
    if src.type == "files":
        args = ["backup", "files", *src.paths, "--source", source, "--json"]
        for glob in src.exclude:
            args += ["--exclude", glob]
        return args + (["--one-file-system"] if src.one_file_system else [])
    raise RecoverctlError(f"source '{source}' of type {src.type} cannot be backed up from an alert yet")


def run_backup(cfg: Config, catalog: Catalog, payload: dict[str, Any]) -> dict[str, Any]:
    """Back up the payload's source with the backup command in a child process; raise when it failed.

    A child process, like scheduled jobs: a crashing backup cannot take the worker down, and the
    backup command's own locking, progress and recording apply unchanged.
    """
    from recoverctl.scheduler.execute import run_subprocess

    argv = [sys.executable, "-m", "recoverctl"]
    if cfg.path is not None:
        argv += ["--config", str(cfg.path.absolute())]
    argv += backup_argv(cfg, payload["target"])
    code, timed_out, output = run_subprocess(argv, BACKUP_TIMEOUT, dict(os.environ))
    if code != 0:
        raise RecoverctlError(
            f"backup of '{payload['target']}' {'timed out' if timed_out else f'exited {code}'}",
            details={"output": output[-2000:]},
        )
    summary: dict[str, Any] = {}
    for line in reversed(output.strip().splitlines()):
        try:
            summary = json.loads(line)
            break
        except ValueError:
            continue
    return {"result": "succeeded", "source": payload["target"], "summary": summary}


def playbook_path(cfg: Config, playbook: str) -> Path:
    """Return the playbook file: as given when it exists, else relative to the config's directory."""
    path = Path(playbook)
    if not path.is_absolute() and not path.exists() and cfg.path is not None:
        beside = cfg.path.parent / path
        if beside.exists():
            return beside
    return path


def run_drill(cfg: Config, catalog: Catalog, payload: dict[str, Any]) -> dict[str, Any]:
    """Run the drill playbook(s) named by the payload's target; return each drill's verdict.

    Raise VerificationError when a drill failed (the job fails; the drill is recorded and its
    `drill.failed` event emitted either way), ConfigError for a missing playbook or passphrase.
    """
    from recoverctl.actions.drill import drill_run

    path = playbook_path(cfg, payload["target"])

    def password() -> str:
        secret = repository_password(cfg)
        if secret is None:
            raise ConfigError(
                "a drill job needs the repository passphrase and cannot prompt",
                hint=f"set {ENV_PASSWORD} or repository.password_file for the worker",
            )
        return secret

    results = drill_run(cfg, catalog, password, [str(path)])
    drills = [
        {k: r.get(k) for k in ("id", "name", "source", "verdict", "rto_s", "rpo_s", "reason")}
        for r in results
    ]
    failed = [d for d in drills if d["verdict"] != "pass"]
    if failed:
        raise VerificationError(
            f"{len(failed)} of {len(drills)} drill(s) from '{path}' failed: "
            + "; ".join(f"{d['name']}: {d['reason']}" for d in failed),
            hint=f"read the report: recoverctl drill report {failed[0]['id']}",
            details={"drills": drills},
        )
    return {"result": "succeeded", "playbook": str(path), "drills": drills}


JOB_KINDS: dict[str, Executor] = {
    "notify": run_notify,
    "rollback": run_rollback,
    "backup": run_backup,
    "drill": run_drill,
}


def run_job(cfg: Config, catalog: Catalog, kind: str, payload: dict[str, Any]) -> dict[str, Any]:
    """Run one job of `kind`; return its result; raise RecoverctlError for an unknown kind or failure."""
    try:
        executor = JOB_KINDS[kind]
    except KeyError:
        raise RecoverctlError(
            f"job kind '{kind}' is not known to this worker", hint=f"known kinds: {', '.join(JOB_KINDS)}"
        ) from None
    return executor(cfg, catalog, payload)
