"""Scheduler use cases: run a schedule's current occurrence (cron mode) and install cron/systemd units."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from recoverctl import cron
from recoverctl.catalog import Catalog, jobs, leases
from recoverctl.config import Config
from recoverctl.errors import ExitCode, RecoverctlError, UsageError
from recoverctl.scheduler.execute import JobResult, run_claimed
from recoverctl.scheduler.install import crontab_lines, merge_crontab, systemd_units


class JobFailedError(RecoverctlError):
    """A scheduled job ran and failed; the CLI exits with the job's own exit code when it is one of ours."""

    def __init__(self, message: str, exit_code: int | None, **kwargs: Any):
        super().__init__(message, **kwargs)
        known = {int(c) for c in ExitCode}
        self.exit_code = ExitCode(exit_code) if exit_code in known and exit_code else ExitCode.FAILED


@dataclass(frozen=True)
class NotRun:
    """An occurrence this process did not run: another runner owns it (taken), or the previous
    run still holds its lease (overlap, recorded skipped)."""

    schedule: str
    due_at: float
    state: str  # taken / overlap
    detail: str


@dataclass(frozen=True)
class Installed:
    """Crontab lines or systemd units rendered, and where they went (nowhere when only printed)."""

    mode: str  # cron / systemd
    installed: bool
    crontab: str | None = None
    directory: str | None = None
    units: dict[str, str] | None = None  # file name -> text
    next: str | None = None  # what to run to activate the installed units

    def to_json(self) -> dict[str, Any]:
        """Only the keys of this mode (and, for systemd, of installing rather than printing)."""
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True)
class OccurrenceRun:
    schedule: str | None
    due_at: float | None
    state: str
    runner: str | None
    started_at: float | None
    finished_at: float | None


@dataclass(frozen=True)
class SchedulerStatus:
    """The scheduler runners' heartbeats and the most recent occurrences, newest first."""

    at: float
    heartbeats: list[leases.Heartbeat]
    runs: list[OccurrenceRun]

    def age_s(self, beat: leases.Heartbeat) -> float:
        """Return how long before this status `beat` was, in seconds."""
        return round(self.at - beat.at, 1)

    def to_json(self) -> dict[str, Any]:
        beats = [
            {"name": b.name, "at": b.at, "age_s": self.age_s(b), "details": b.details}
            for b in self.heartbeats
        ]
        return {"heartbeats": beats, "runs": [asdict(r) for r in self.runs]}


def run_occurrence(
    cfg: Config,
    catalog: Catalog,
    name: str,
    *,
    lease: float = 60.0,
    now_as_due: bool = False,
    metrics_textfile: str | None = None,
) -> JobResult | NotRun:
    """Claim the current occurrence of schedule `name` and run it; return the outcome.

    The occurrence is the latest cron time at or before now, so the same crontab line on several
    hosts runs the job once. Raise NotFoundError for an unknown schedule and JobFailedError when the
    job fails.
    """
    schedule = cfg.schedule(name)
    runner = leases.holder_id("run-job")
    jobs.recover_expired(catalog, leases.OCCURRENCES)
    now = time.time()
    due = float(int(now)) if now_as_due else cron.previous(schedule.cron, schedule.timezone, now)
    result = jobs.claim_occurrence(catalog, schedule.name, due, runner, lease)
    if result.state != "claimed" or result.claim is None:
        return NotRun(name, due, result.state, result.detail)
    r = run_claimed(cfg, catalog, schedule, result.claim, lease=lease, metrics_textfile=metrics_textfile)
    if r.state != "succeeded":
        why = "timed out" if r.timed_out else f"exited {r.exit_code}"
        raise JobFailedError(
            f"scheduled job '{name}' ({schedule.job}) {why}",
            r.exit_code,
            hint="the output tail is in the catalog (jobs.result); run the job by hand to see all",
            details={"output_tail": r.output[-2000:]},
        )
    return r


def scheduler_status(catalog: Catalog, limit: int) -> SchedulerStatus:
    """Return the scheduler runners' heartbeats and the `limit` most recent occurrences."""
    now = time.time()
    runs = jobs.recent_occurrences(catalog, limit)
    return SchedulerStatus(
        now,
        leases.heartbeats(catalog, "scheduler"),
        [
            OccurrenceRun(r.schedule, r.due_at, r.state, r.lease_owner, r.started_at, r.finished_at)
            for r in runs
        ],
    )


def _systemd_dir(user: bool) -> Path:
    if user:
        base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
        return base / "systemd" / "user"
    return Path("/etc/systemd/system")


def install(
    cfg: Config, *, mode: str, user: bool, print_only: bool, directory: str | None, dry_run: bool
) -> Installed:
    """Render crontab lines or systemd units; write/install them unless print_only or dry_run.

    Return what was rendered and where it went. Raise UsageError when nothing is scheduled or the
    crontab command is missing.
    """
    if not [s for s in cfg.schedules if s.enabled]:
        raise UsageError(
            "no enabled schedules to install", hint="add 'schedules:' (see 'recoverctl scheduler init')"
        )
    if mode == "cron":
        block = crontab_lines(cfg)
        if print_only or dry_run:
            return Installed("cron", False, crontab=block)
        crontab = shutil.which("crontab")
        if crontab is None:
            raise UsageError(
                "cannot install the crontab: the 'crontab' command is not installed",
                hint="install cron, or use --print and add the lines to your crontab by hand",
            )
        current = subprocess.run([crontab, "-l"], capture_output=True, text=True)
        existing = current.stdout if current.returncode == 0 else ""
        subprocess.run([crontab, "-"], input=merge_crontab(existing, block), text=True, check=True)
        return Installed("cron", True, crontab=block)
    units = systemd_units(cfg)
    rendered = {u.filename: u.text for u in units}
    if print_only or dry_run:
        return Installed("systemd", False, units=rendered)
    target = Path(directory) if directory else _systemd_dir(user)
    target.mkdir(parents=True, exist_ok=True)
    for u in units:
        (target / u.filename).write_text(u.text)
    scope = "--user " if user else ""
    timers = " ".join(u.filename for u in units if u.filename.endswith((".timer", "-wal-stream.service")))
    return Installed(
        "systemd",
        True,
        directory=str(target),
        units=rendered,
        next=f"systemctl {scope}daemon-reload && systemctl {scope}enable --now {timers}",
    )
