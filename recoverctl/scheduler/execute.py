"""Run one claimed occurrence: the job as a `python -m recoverctl` subprocess under `run_job` (a
renewed lease, the outcome recorded), with a timeout, and a failure turned into an event that is
delivered at once.

Jobs run as subprocesses so a crashing or hanging command cannot take the runner down, and the
runner does not depend on which commands exist in this build.
"""

from __future__ import annotations

import logging
import os
import random
import shlex
import threading
import time
from dataclasses import dataclass
from typing import Any, Literal

from recoverctl.catalog import Catalog, jobs
from recoverctl.catalog.jobs import Claim
from recoverctl.config import Config, Schedule
from recoverctl.errors import ExitCode
from recoverctl.scheduler.runner import Held, JobEvent, Outcome, recoverctl_argv, run_job, run_subprocess

log = logging.getLogger(__name__)

# Exit codes that mean "look at this soon" rather than "wake someone up".
_WARNING_CODES = {int(ExitCode.PARTIAL), int(ExitCode.LOCKED), int(ExitCode.CANCELLED), int(ExitCode.USAGE)}


Finished = Literal["succeeded", "failed", "abandoned"]


@dataclass
class JobResult:
    """How a claimed occurrence ran; `run_id` is its row in the catalog's jobs."""

    schedule: str
    due_at: float
    state: Finished
    exit_code: int | None
    duration: float
    timed_out: bool
    output: str
    run_id: int | None = None


def job_argv(cfg: Config, schedule: Schedule) -> list[str]:
    """Return the command line that runs `schedule.job` with this interpreter and config."""
    return recoverctl_argv(cfg, shlex.split(schedule.job))


def severity_for(exit_code: int | None, timed_out: bool) -> str:
    """Return the event severity for a failed job."""
    if timed_out or exit_code is None:
        return "critical"
    return "warning" if exit_code in _WARNING_CODES else "critical"


def run_claimed(
    cfg: Config,
    catalog: Catalog,
    schedule: Schedule,
    claim: Claim,
    *,
    lease: float,
    stopping: threading.Event | None = None,
    metrics_textfile: str | None = None,
) -> JobResult:
    """Run the job for a claimed occurrence through `run_job` and record it; return the JobResult.

    A failure emits a `job.failed` event (severity from the exit code); a success after a failure
    emits `job.recovered` with the same dedup key so incident trackers resolve it. Events are
    delivered before returning; delivery problems are recorded, never raised.
    """
    ran: list[JobResult] = []

    def execute(lost: threading.Event) -> Outcome:
        ran.append(_run_occurrence(cfg, schedule, claim, lost, stopping or threading.Event()))
        return _outcome(catalog, schedule, claim, ran[0])

    held = Held(claim.id, claim.runner, f"run of {claim.schedule} due {claim.due_at}")
    run_job(cfg, catalog, held, execute, lease=lease)
    if metrics_textfile:
        from recoverctl.scheduler.metrics import write_textfile

        write_textfile(cfg, catalog, metrics_textfile)
    return ran[0]


def _run_occurrence(
    cfg: Config, schedule: Schedule, claim: Claim, lost: threading.Event, stopping: threading.Event
) -> JobResult:
    started = time.time()
    if schedule.jitter > 0:
        stopping.wait(random.uniform(0, schedule.jitter))
    env = {
        **os.environ,
        "RECOVERCTL_SCHEDULE": schedule.name,
        "RECOVERCTL_SCHEDULE_DUE_AT": f"{claim.due_at:.0f}",
    }
    if cfg.path is not None:
        env["RECOVERCTL_CONFIG"] = str(cfg.path.absolute())
    # Losing the lease means another runner declared this run abandoned and may start the next
    # occurrence: stop the job rather than let two run at once.
    code, timed_out, output = run_subprocess(job_argv(cfg, schedule), schedule.timeout, env, cancel=lost)
    state: Finished = "failed"
    if code == 0:
        state = "succeeded"
    elif lost.is_set() or (timed_out and stopping.is_set()):
        state = "abandoned"
    duration = time.time() - started
    return JobResult(schedule.name, claim.due_at, state, code, duration, timed_out, output, claim.id)


def _outcome(catalog: Catalog, schedule: Schedule, claim: Claim, result: JobResult) -> Outcome:
    severity = severity_for(result.exit_code, result.timed_out) if result.state != "succeeded" else None
    recorded = {
        "exit_code": result.exit_code,
        "duration_s": round(result.duration, 3),
        "timed_out": result.timed_out,
        "severity": severity,
        "job": schedule.job,
        "output_tail": result.output[-1000:],
    }
    return Outcome(result.state, recorded, events=_events(catalog, schedule, claim, result, severity))


def _events(
    catalog: Catalog, schedule: Schedule, claim: Claim, result: JobResult, severity: str | None
) -> tuple[JobEvent, ...]:
    dedup = f"recoverctl/schedule/{schedule.name}"
    details: dict[str, Any] = {
        "schedule": schedule.name,
        "job": schedule.job,
        "due_at": claim.due_at,
        "exit_code": result.exit_code,
        "duration_s": round(result.duration, 1),
    }
    if severity is not None:
        why = "timed out" if result.timed_out else f"exited {result.exit_code}"
        if result.state == "abandoned":
            why = "was abandoned at shutdown after its timeout"
        last_line = next((ln for ln in reversed(result.output.splitlines()) if ln.strip()), "")
        summary = f"scheduled job '{schedule.name}' ({schedule.job}) {why}"
        if last_line:
            summary += f": {last_line[:300]}"
        return (JobEvent("job.failed", severity, schedule.name, summary, details, dedup),)
    prev = jobs.last_occurrence(catalog, schedule.name, jobs.FINISHED_STATES, before_id=claim.id)
    if prev is None or prev.state not in ("failed", "abandoned"):
        return ()
    sev = (prev.result or {}).get("severity") or "warning"
    summary = f"scheduled job '{schedule.name}' succeeded again after a {prev.state} run"
    return (JobEvent("job.recovered", sev, schedule.name, summary, {**details, "resolve": True}, dedup),)
