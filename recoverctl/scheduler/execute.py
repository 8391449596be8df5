"""Run one claimed occurrence: the job as a `python -m recoverctl` subprocess, with a renewed lease,
a timeout, the outcome recorded, and a failure turned into an event that is delivered at once.

Jobs run as subprocesses so a crashing or hanging command cannot take the runner down, and the
runner does not depend on which commands exist in this build.
"""

from __future__ import annotations

import ctypes
import logging
import os
import random
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Any

from recoverctl.catalog import Catalog, jobs, leases
from recoverctl.catalog.jobs import Claim
from recoverctl.config import Config, Schedule
from recoverctl.errors import ExitCode, RecoverctlError
from recoverctl.notify.delivery import deliver_pending

log = logging.getLogger(__name__)

OUTPUT_TAIL = 4000
# Exit codes that mean "look at this soon" rather than "wake someone up".
_WARNING_CODES = {int(ExitCode.PARTIAL), int(ExitCode.LOCKED), int(ExitCode.CANCELLED), int(ExitCode.USAGE)}


@dataclass
class JobResult:
    """How a claimed occurrence ran; `run_id` is its row in the catalog's jobs."""

    schedule: str
    due_at: float
    state: str  # succeeded / failed / abandoned
    exit_code: int | None
    duration: float
    timed_out: bool
    output: str
    run_id: int | None = None


def job_argv(cfg: Config, schedule: Schedule) -> list[str]:
    """Return the command line that runs `schedule.job` with this interpreter and config."""
    argv = [sys.executable, "-m", "recoverctl"]
    if cfg.path is not None:
        argv += ["--config", str(cfg.path.absolute())]
    return argv + shlex.split(schedule.job)


def severity_for(exit_code: int | None, timed_out: bool) -> str:
    """Return the event severity for a failed job."""
    if timed_out or exit_code is None:
        return "critical"
    return "warning" if exit_code in _WARNING_CODES else "critical"


def _die_with_parent() -> None:
    # If the runner is killed, its job must not live on unsupervised while its lease expires and
    # another runner starts the next occurrence.
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def run_subprocess(
    argv: list[str], timeout: float, env: dict[str, str], cancel: threading.Event | None = None
) -> tuple[int | None, bool, str]:
    """Run argv; return (exit code, stopped early, output tail).

    The job is terminated (then killed) when `timeout` passes or `cancel` is set; the exit code is
    then None.
    """
    cancel = cancel or threading.Event()
    # Output goes to a file, not a pipe: the wait loop below does not read, and a full pipe would
    # block the job forever.
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
        deadline = time.monotonic() + timeout
        stopped = False
        while True:
            try:
                proc.wait(timeout=max(0.0, min(0.5, deadline - time.monotonic())))
                break
            except subprocess.TimeoutExpired:
                if cancel.is_set() or time.monotonic() >= deadline:
                    stopped = True
                    proc.terminate()
                    try:
                        proc.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
                    break
        size = out.seek(0, os.SEEK_END)
        out.seek(max(0, size - OUTPUT_TAIL))
        text = out.read().decode(errors="replace")
    return (None if stopped else proc.returncode), stopped, text


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
    """Run the job for a claimed occurrence and record it; return the JobResult.

    A failure emits a `job.failed` event (severity from the exit code); a success after a failure
    emits `job.recovered` with the same dedup key so incident trackers resolve it. Events are
    delivered before returning; delivery problems are recorded, never raised.
    """
    stopping = stopping or threading.Event()
    keeper = leases.LeaseKeeper(
        catalog, claim.id, claim.runner, lease, f"{claim.schedule} (due {claim.due_at})"
    )
    keeper.start()
    started = time.time()
    try:
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
        code, timed_out, output = run_subprocess(
            job_argv(cfg, schedule), schedule.timeout, env, cancel=keeper.lost
        )
    finally:
        keeper.stop()
    duration = time.time() - started
    if code == 0:
        state = "succeeded"
    elif keeper.lost.is_set() or (timed_out and stopping.is_set()):
        state = "abandoned"
    else:
        state = "failed"
    result = JobResult(schedule.name, claim.due_at, state, code, duration, timed_out, output, claim.id)
    severity = severity_for(code, timed_out) if state != "succeeded" else None
    outcome = {
        "exit_code": code,
        "duration_s": round(duration, 3),
        "timed_out": timed_out,
        "severity": severity,
        "job": schedule.job,
        "output_tail": output[-1000:],
    }
    if jobs.finish(catalog, claim.id, claim.runner, state, result=outcome):
        _emit(catalog, schedule, claim, result, severity)
    else:
        # Whoever marked it abandoned has already recorded the job.abandoned event.
        log.warning("run of %s due %s was marked abandoned while it ran", schedule.name, claim.due_at)
    try:
        deliver_pending(cfg, catalog)
    except RecoverctlError as e:
        log.error("could not deliver notifications: %s", e)
    if metrics_textfile:
        from recoverctl.scheduler.metrics import write_textfile

        write_textfile(cfg, catalog, metrics_textfile)
    return result


def _emit(
    catalog: Catalog, schedule: Schedule, claim: Claim, result: JobResult, severity: str | None
) -> None:
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
        catalog.emit_event("job.failed", severity, schedule.name, summary, details, dedup)
        return
    prev = jobs.last_occurrence(catalog, schedule.name, jobs.FINISHED_STATES, before_id=claim.id)
    if prev is not None and prev.state in ("failed", "abandoned"):
        sev = (prev.result or {}).get("severity") or "warning"
        catalog.emit_event(
            "job.recovered",
            sev,
            schedule.name,
            f"scheduled job '{schedule.name}' succeeded again after a {prev.state} run",
            {**details, "resolve": True},
            dedup,
        )
