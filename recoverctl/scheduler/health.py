"""Is anything running the schedules? For `status` and `/health`, from the catalog alone."""

from __future__ import annotations

import time
from typing import Any

from recoverctl import cron
from recoverctl.catalog import Catalog, jobs, leases
from recoverctl.config import Config

# The loop beats every 5 s; three missed beats mean the runner is gone.
HEARTBEAT_STALE = 30.0


def scheduler_health(cfg: Config, catalog: Catalog, now: float | None = None) -> dict[str, Any]:
    """Return {status: green|amber, reason, runners, last_runs} for the configured schedules.

    Green: no schedules, a live `scheduler run` heartbeat, or (cron mode) a recorded run of every
    schedule within two of its intervals, each last run successful. Amber otherwise, with a reason.
    """
    now = time.time() if now is None else now
    schedules = [s for s in cfg.schedules if s.enabled]
    beats = leases.heartbeats(catalog, "scheduler")
    last_runs: dict[str, dict[str, Any]] = {}
    for s in schedules:
        run = jobs.last_occurrence(catalog, s.name, (*jobs.FINISHED_STATES, "skipped"))
        if run is not None:
            last_runs[s.name] = {"due_at": run.due_at, "state": run.state, "runner": run.lease_owner}
    runners = [
        {"name": b.name, "age_s": round(now - b.at, 1), "state": b.details.get("state")}
        for b in beats
        if now - b.at <= HEARTBEAT_STALE and b.details.get("state") == "running"
    ]
    out: dict[str, Any] = {"runners": runners, "last_runs": last_runs}
    if not schedules:
        return {**out, "status": "green", "reason": "no schedules configured"}
    problems = []
    for s in schedules:
        last = last_runs.get(s.name)
        if last and last["state"] in ("failed", "abandoned"):
            problems.append(f"last run of '{s.name}' {last['state']}")
        if not runners:
            interval = cron.following(s.cron, s.timezone, now) - cron.previous(s.cron, s.timezone, now)
            if last is None or now - last["due_at"] > 2 * interval:
                problems.append(f"'{s.name}' has not run for two intervals and no scheduler is alive")
    if problems:
        return {**out, "status": "amber", "reason": "; ".join(problems)}
    how = f"{len(runners)} scheduler runner(s) alive" if runners else "cron mode: every schedule ran on time"
    return {**out, "status": "green", "reason": how}
