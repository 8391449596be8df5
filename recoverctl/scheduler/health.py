"""Is anything running the schedules? For `status` and `/health`, from the catalog alone."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any

from recoverctl import cron
from recoverctl.catalog import Catalog, jobs, leases
from recoverctl.config import Config

# The loop beats every 5 s; three missed beats mean the runner is gone.
HEARTBEAT_STALE = 30.0


@dataclass(frozen=True)
class Runner:
    """A `scheduler run` loop whose heartbeat is fresh: its name, the heartbeat's age, its state."""

    name: str
    age_s: float
    state: str | None


@dataclass(frozen=True)
class LastRun:
    """The newest finished (or skipped) occurrence of a schedule."""

    due_at: float | None
    state: str
    runner: str | None


@dataclass(frozen=True)
class SchedulerHealth:
    """Whether the schedules run: green or amber with the reason, live runners, last runs by name."""

    status: str
    reason: str
    runners: list[Runner]
    last_runs: dict[str, LastRun]

    def to_json(self) -> dict[str, Any]:
        # The key order `status --json` has always had.
        return {
            "runners": [dataclasses.asdict(r) for r in self.runners],
            "last_runs": {name: dataclasses.asdict(r) for name, r in self.last_runs.items()},
            "status": self.status,
            "reason": self.reason,
        }


def scheduler_health(cfg: Config, catalog: Catalog, now: float | None = None) -> SchedulerHealth:
    """Return the health of the configured schedules.

    Green: no schedules, a live `scheduler run` heartbeat, or (cron mode) a recorded run of every
    schedule within two of its intervals, each last run successful. Amber otherwise, with a reason.
    """
    now = time.time() if now is None else now
    schedules = [s for s in cfg.schedules if s.enabled]
    beats = leases.heartbeats(catalog, "scheduler")
    last_runs: dict[str, LastRun] = {}
    for s in schedules:
        run = jobs.last_occurrence(catalog, s.name, (*jobs.FINISHED_STATES, "skipped"))
        if run is not None:
            last_runs[s.name] = LastRun(run.due_at, run.state, run.lease_owner)
    runners = [
        Runner(b.name, round(now - b.at, 1), b.details.get("state"))
        for b in beats
        if now - b.at <= HEARTBEAT_STALE and b.details.get("state") == "running"
    ]
    if not schedules:
        return SchedulerHealth("green", "no schedules configured", runners, last_runs)
    problems = []
    for s in schedules:
        last = last_runs.get(s.name)
        if last and last.state in ("failed", "abandoned"):
            problems.append(f"last run of '{s.name}' {last.state}")
        if not runners:
            interval = cron.following(s.cron, s.timezone, now) - cron.previous(s.cron, s.timezone, now)
            if last is None or now - (last.due_at or 0.0) > 2 * interval:
                problems.append(f"'{s.name}' has not run for two intervals and no scheduler is alive")
    if problems:
        return SchedulerHealth("amber", "; ".join(problems), runners, last_runs)
    how = f"{len(runners)} scheduler runner(s) alive" if runners else "cron mode: every schedule ran on time"
    return SchedulerHealth("green", how, runners, last_runs)
