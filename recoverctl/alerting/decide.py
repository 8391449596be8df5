"""Decide what to do with one alert: act, deduplicate, suppress or ignore, and why.

Reads the catalog through the intake transaction's connection and writes nothing: the intake
use case (`actions/alert_intake.py`) queues the job and stores the decision.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Container

from sqlalchemy.engine import Connection

from recoverctl.alerting.alert import AlertIn, Decision
from recoverctl.alerting.policy import conditions_hold, firing_seconds, match_policy, resolve_target
from recoverctl.catalog import jobs as jobq
from recoverctl.catalog.alerts import Handled, handled_in, recent_alert_jobs_in
from recoverctl.catalog.releases import release_history_in
from recoverctl.config import Config, Policy
from recoverctl.units import human_duration


class IncidentMemory:
    """Incidents whose key a committed decision took, newest `size` kept.

    A taken key is never released (decisions are not deleted), so a repeat found here is decided
    as `deduplicated` without reading the catalog; a miss falls back to the catalog, which stays
    the authority (another `serve` process may have taken the key). Filled only after a commit.
    """

    def __init__(self, size: int = 20_000):
        self.size = size
        self._handled: OrderedDict[str, Handled] = OrderedDict()

    def get(self, key: str) -> Handled | None:
        return self._handled.get(key)

    def remember(self, taken: dict[str, Handled]) -> None:
        self._handled.update(taken)
        while len(self._handled) > self.size:
            self._handled.popitem(last=False)


def _release_check(conn: Connection, policy: Policy, service: str, now: float) -> str | None:
    """Return why a rollback of `service` must not start, or None.

    Mirrors the rollback action's choice: from the newest live release to the newest older good one.
    """
    rows = release_history_in(conn, service)
    current = next((r for r in rows if r.status == "live"), None)
    if current is None:
        return f"service '{service}' has no live release to roll back from"
    if not any(r.id < current.id and r.status == "good" for r in rows):
        failed = [r.version for r in rows if r.id < current.id and r.status in ("failed", "rolled-back")]
        extra = f" (earlier releases failed: {', '.join(failed)})" if failed else ""
        return f"no earlier good release of '{service}' to roll back onto{extra}"
    if policy.max_release_age is not None and now - current.created_at > policy.max_release_age:
        return (
            f"current release {current.version} is {human_duration(now - current.created_at)} old, over "
            f"max_release_age {human_duration(policy.max_release_age)}: an old release is not the cause"
        )
    return None


def _rate_limited(conn: Connection, policy: Policy, target: str, now: float, d: Decision) -> bool:
    """Return True (with `d` filled in) when the cooldown or the cap withholds the action."""
    horizon = max(policy.cooldown, policy.max_actions.window if policy.max_actions else 0.0)
    recent = recent_alert_jobs_in(conn, policy.action, target, now - horizon)
    if recent and now - recent[0].created_at < policy.cooldown:
        d.reason = (
            f"cooldown: last {policy.action} of '{target}' {human_duration(now - recent[0].created_at)} ago "
            f"(job {recent[0].id}), cooldown {human_duration(policy.cooldown)}"
        )
        return True
    cap = policy.max_actions
    if cap is not None:
        in_window = [j for j in recent if now - j.created_at < cap.window]
        if len(in_window) >= cap.count:
            d.reason = (
                f"cap: {len(in_window)} automatic {policy.action}(s) of '{target}' in the last "
                f"{human_duration(cap.window)} (max {cap.count}); escalated to a human"
            )
            d.take_incident = True
            d.escalate = True
            return True
    return False


def decide(
    conn: Connection,
    cfg: Config,
    alert: AlertIn,
    now: float,
    force_dry_run: bool,
    known: Callable[[str], Handled | None] | None = None,
    *,
    runnable: Container[str],
) -> Decision:
    """Return the decision for one alert, reading the catalog through `conn` (nothing written).

    `known(incident_key)` answers for incidents handled that the catalog may not show yet (this
    batch's unwritten decisions) or need not be asked about (an `IncidentMemory`). `runnable`
    names the actions this build can run from an alert.
    """
    policy = match_policy(cfg.policies, alert)
    if policy is None:
        return Decision("ignored", "no policy matches the alert's labels")
    name = policy.name
    if alert.status != "firing":
        return Decision("ignored", f"alert {alert.status}: no action", policy=name)
    key = alert.incident_key()
    seen = (known(key) if known is not None else None) or handled_in(conn, key)
    if seen is not None:
        return Decision(
            "deduplicated",
            f"incident already {seen.decision}" + (f" (job {seen.job_id})" if seen.job_id else ""),
            policy=name,
            service=seen.service,
            job_id=seen.job_id,
        )
    if policy.action not in runnable:
        return Decision(
            "ignored", f"action '{policy.action}' cannot run from alerts in this build", policy=name
        )
    target, why = resolve_target(cfg, policy, alert)
    if target is None:
        return Decision("ignored", why, policy=name)
    d = Decision("suppressed", "", policy=name, service=target)
    firing = firing_seconds(alert, now)
    if policy.min_firing and (firing is None or firing < policy.min_firing):
        d.reason = (
            f"firing {human_duration(firing or 0)}, less than min_firing {human_duration(policy.min_firing)}"
        )
        return d
    ok, explanation = conditions_hold(alert, policy)
    if not ok:
        d.reason = f"conditions not met: {explanation}"
        return d
    running = jobq.active_job(conn, policy.action, target)
    if running is not None:
        return Decision(
            "deduplicated",
            f"{policy.action} of '{target}' already {running.state} (job {running.id}) absorbs it",
            policy=name,
            service=target,
            job_id=running.id,
            take_incident=True,
        )
    if policy.action == "rollback":
        blocked = _release_check(conn, policy, target, now)
        if blocked:
            d.reason = blocked
            return d
    if _rate_limited(conn, policy, target, now, d):
        return d
    if force_dry_run or policy.mode == "dry-run":
        d.reason = f"dry-run: would {policy.action} '{target}'"
        d.take_incident = True
        return d
    return Decision("acted", f"{policy.action} '{target}' queued", policy=name, service=target)
