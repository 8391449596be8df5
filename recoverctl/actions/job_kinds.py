"""What each job kind in the persistent queue does: one registry from kind to callable, the
payload an alert hands to the job it queues, and `execute_queued`, the executor the worker gives
`scheduler.runner.run_job` for a claimed queue job.

Executors import their actions lazily so a worker does not load (or need) the deploy machinery to
send a notification. Each returns a typed result or raises RecoverctlError (the job then fails).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from recoverctl.catalog import Catalog
from recoverctl.catalog.jobs import Job, earlier_rollback
from recoverctl.config import ENV_PASSWORD, Config, repository_password
from recoverctl.errors import ConfigError, RecoverctlError, VerificationError
from recoverctl.scheduler.runner import Outcome, recoverctl_argv, run_subprocess

log = logging.getLogger(__name__)

BACKUP_TIMEOUT = 6 * 3600.0
# A job retried later waits its executor's delay, doubled for every further attempt, at most this.
MAX_RETRY_DELAY = 600.0


class AlertJobPayload(BaseModel):
    """What a job queued by the alert intake carries to its executor; stored as `jobs.payload`.

    `resume` is added when an attempt is queued again (after a worker died or a passing failure),
    `job_id` by the worker that runs it; neither is stored by the intake.
    """

    # Rows written by another version may carry keys this one does not know: they are ignored.
    model_config = ConfigDict(extra="ignore", frozen=True)

    origin: str = "alert"
    action: str | None = None
    target: str  # service, source or playbook the action applies to
    policy: str | None = None
    severity: str = "warning"
    source: str | None = None  # alertmanager / grafana / generic
    alertname: str | None = None
    fingerprint: str | None = None
    starts_at: str | None = None
    incident_key: str | None = None
    labels: dict[str, str] | None = None
    summary: str | None = None
    resume: bool = False
    job_id: int | None = None

    @classmethod
    def from_json(cls, payload: dict[str, Any]) -> AlertJobPayload:
        """Given a stored payload, return it validated; raise RecoverctlError when it is malformed."""
        try:
            return cls.model_validate(payload)
        except ValidationError as e:
            raise RecoverctlError(
                f"malformed job payload: {e.errors(include_url=False)[0]['msg']}",
                details={"payload": payload},
            ) from None

    def to_json(self) -> dict[str, Any]:
        """Return the payload as stored, without the attempt's own `resume` and `job_id` unless set."""
        d = self.model_dump()
        if not self.resume:
            del d["resume"]
        if self.job_id is None:
            del d["job_id"]
        return d


@dataclass(frozen=True)
class NotifyJobResult:
    event_id: int


@dataclass(frozen=True)
class BackupJobResult:
    result: str
    source: str
    summary: dict[str, Any]  # the backup command's --json output


@dataclass(frozen=True)
class DrillJobResult:
    result: str
    playbook: str
    drills: list[dict[str, Any]]  # per drill: id, name, source, verdict, rto_s, rpo_s, reason


@dataclass(frozen=True)
class CopyJobResult:
    result: str
    to: str
    copies: list[dict[str, Any]]  # the copy command's --json `copies`


# A rollback job's result is the rollback action's own.
JobOutcome = NotifyJobResult | BackupJobResult | DrillJobResult | CopyJobResult | dict[str, Any]
Executor = Callable[[Config, Catalog, AlertJobPayload], JobOutcome]


def _alert_summary(payload: AlertJobPayload) -> str:
    summary = payload.summary
    return f"{payload.alertname} on '{payload.target}'" + (f": {summary}" if summary else "")


def run_notify(cfg: Config, catalog: Catalog, payload: AlertJobPayload) -> NotifyJobResult:
    """Record an `alert.notify` event for the notification layer; return its id."""
    event_id = catalog.emit_event(
        "alert.notify",
        payload.severity,
        payload.target,
        _alert_summary(payload),
        details=payload.model_dump(include={"policy", "source", "fingerprint", "starts_at", "labels"}),
        dedup_key=f"alert:{payload.incident_key}",
    )
    return NotifyJobResult(event_id)


class RetryLater(RecoverctlError):
    """The job failed on something passing (an engine, host or catalog that did not answer):
    its worker queues it again, to run no sooner than `delay` seconds from now, while it has
    attempts left; its next attempt continues what this one began."""

    def __init__(self, cause: RecoverctlError, delay: float):
        super().__init__(cause.message, hint=cause.hint, details={**cause.details, "retry_in_s": delay})
        self.exit_code = cause.exit_code
        self.delay = delay


def run_rollback(cfg: Config, catalog: Catalog, payload: AlertJobPayload) -> dict[str, Any]:
    """Roll the payload's service back to its previous good release; raise when it failed.

    Every attempt of the job first looks for the rollback an earlier attempt started (after a
    worker crash, or after a step failed): succeeded → done (never roll back twice); interrupted
    or failed at a step → resume it from that step, through the same action and refusals as
    `rollback --resume`; none → start one. A failed rollback whose target release failed its
    health check is not resumed (never roll back onto a version that failed). Raise RetryLater
    when the engine, a host or the catalog did not answer, so the job is tried again later.
    """
    from recoverctl.actions.rollback import rollback, transient_fault

    service = payload.target
    marker = f"[job {payload.job_id}]"
    earlier = earlier_rollback(catalog, service, marker)
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
            reason=f"alert {_alert_summary(payload)} (policy {payload.policy}) {marker}",
            actor=f"{payload.source or 'alert'}:{payload.policy}",
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
            f"rollback of '{payload.target}' ended {result.get('result')}",
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


def run_backup(cfg: Config, catalog: Catalog, payload: AlertJobPayload) -> BackupJobResult:
    """Back up the payload's source with the backup command in a child process; raise when it failed.

    A child process, like scheduled jobs: a crashing backup cannot take the worker down, and the
    backup command's own locking, progress and recording apply unchanged.
    """
    argv = recoverctl_argv(cfg, backup_argv(cfg, payload.target))
    code, timed_out, output = run_subprocess(argv, BACKUP_TIMEOUT, dict(os.environ))
    if code != 0:
        raise RecoverctlError(
            f"backup of '{payload.target}' {'timed out' if timed_out else f'exited {code}'}",
            details={"output": output[-2000:]},
        )
    summary: dict[str, Any] = {}
    for line in reversed(output.strip().splitlines()):
        try:
            summary = json.loads(line)
            break
        except ValueError:
            continue
    return BackupJobResult("succeeded", payload.target, summary)


def run_copy(cfg: Config, catalog: Catalog, payload: AlertJobPayload) -> CopyJobResult:
    """Copy the primary repository to the payload's copy repository ('*': every one) with the
    copy command in a child process, as `run_backup` does; raise when it failed."""
    from recoverctl.scheduler.execute import run_subprocess

    argv = [sys.executable, "-m", "recoverctl"]
    if cfg.path is not None:
        argv += ["--config", str(cfg.path.absolute())]
    argv += ["copy", "--json", *([] if payload.target == "*" else ["--to", payload.target])]
    code, timed_out, output = run_subprocess(argv, BACKUP_TIMEOUT, dict(os.environ))
    if code != 0:
        raise RecoverctlError(
            f"copy to '{payload.target}' {'timed out' if timed_out else f'exited {code}'}",
            details={"output": output[-2000:]},
        )
    start = output.rfind("\n{\n")  # the result document follows the progress lines
    copies: list[dict[str, Any]] = json.loads(output[start + 1 if start >= 0 else 0 :]).get("copies", [])
    return CopyJobResult("succeeded", payload.target, copies)


def playbook_path(cfg: Config, playbook: str) -> Path:
    """Return the playbook file: as given when it exists, else relative to the config's directory."""
    path = Path(playbook)
    if not path.is_absolute() and not path.exists() and cfg.path is not None:
        beside = cfg.path.parent / path
        if beside.exists():
            return beside
    return path


def run_drill(cfg: Config, catalog: Catalog, payload: AlertJobPayload) -> DrillJobResult:
    """Run the drill playbook(s) named by the payload's target; return each drill's verdict.

    Raise VerificationError when a drill failed (the job fails; the drill is recorded and its
    `drill.failed` event emitted either way), ConfigError for a missing playbook or passphrase.
    """
    from recoverctl.actions.drill import drill_run

    if not cfg.repository_chosen:  # weekly drills alternate repositories (see Config.drill_rotation)
        cfg = cfg.for_repository(cfg.drill_rotation(time.time()))
    path = playbook_path(cfg, payload.target)

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
        {k: getattr(r, k) for k in ("id", "name", "source", "verdict", "rto_s", "rpo_s", "reason")}
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
    return DrillJobResult("succeeded", str(path), drills)


JOB_KINDS: dict[str, Executor] = {
    "notify": run_notify,
    "rollback": run_rollback,
    "backup": run_backup,
    "drill": run_drill,
    "copy": run_copy,
}


def execute_kind(cfg: Config, catalog: Catalog, kind: str, payload: dict[str, Any]) -> dict[str, Any]:
    """Run the executor of `kind` on a stored `payload`; return its result as stored in the job;
    raise RecoverctlError for an unknown kind, a malformed payload or a failure."""
    try:
        executor = JOB_KINDS[kind]
    except KeyError:
        raise RecoverctlError(
            f"job kind '{kind}' is not known to this worker", hint=f"known kinds: {', '.join(JOB_KINDS)}"
        ) from None
    out = executor(cfg, catalog, AlertJobPayload.from_json(payload))
    return out if isinstance(out, dict) else asdict(out)


def execute_queued(cfg: Config, catalog: Catalog, job: Job) -> Outcome:
    """Given a claimed queue job, run its kind's executor; return the Outcome to record.

    Succeeded with the executor's result; failed with the error; queued again after a delay
    (doubled for every further attempt) when the executor asked to be retried later and the job
    has attempts left. A bug in an executor fails the job instead of the worker thread.
    """
    try:
        return Outcome("succeeded", execute_kind(cfg, catalog, job.kind, {**job.payload, "job_id": job.id}))
    except RetryLater as e:
        if job.attempts < job.max_attempts:
            delay = min(MAX_RETRY_DELAY, e.delay * 2 ** (job.attempts - 1))
            return Outcome("queued", {"error": e.to_dict()}, e.message, retry_in=delay)
        return Outcome("failed", {"error": e.to_dict()}, e.message)
    except RecoverctlError as e:
        return Outcome("failed", {"error": e.to_dict()}, e.message)
    except Exception as e:
        log.exception("job %s (%s) crashed", job.id, job.kind)
        return Outcome("failed", None, f"unexpected {type(e).__name__}: {e}")
