"""`scheduler run`: the long-running loop that claims due occurrences and runs them.

Every tick: mark expired leases abandoned, then for each schedule claim the latest due
occurrence not yet seen. Runs happen in threads so the loop keeps ticking (heartbeat, leases).
SIGTERM/SIGINT stop claiming; running jobs get their own timeout to finish.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import dataclass, field

from recoverctl import cron
from recoverctl.catalog import Catalog, jobs, leases
from recoverctl.config import Config, Schedule
from recoverctl.errors import RecoverctlError
from recoverctl.incidents.escalation import EscalationPace
from recoverctl.notify.delivery import deliver_pending
from recoverctl.scheduler.execute import run_claimed

log = logging.getLogger(__name__)

HEARTBEAT_EVERY = 5.0
DELIVER_EVERY = 30.0


def grace(schedule: Schedule, due: float) -> float:
    """Return how late an occurrence may be noticed and still count as on time (not 'missed')."""
    period = cron.following(schedule.cron, schedule.timezone, due) - due
    return min(60.0, max(0.5, period / 4))


@dataclass(frozen=True)
class Started:
    """An occurrence this runner claimed and started."""

    schedule: str
    due_at: float


@dataclass(frozen=True)
class LoopResult:
    """What a `scheduler run` did before it stopped."""

    runner: str
    started: list[Started]


@dataclass
class SchedulerLoop:
    cfg: Config
    catalog: Catalog
    poll: float = 1.0
    lease: float = 60.0
    metrics_textfile: str | None = None
    runner: str = field(default_factory=lambda: leases.holder_id("scheduler"))
    stopping: threading.Event = field(default_factory=threading.Event)
    started: list[Started] = field(default_factory=list)
    _threads: list[threading.Thread] = field(default_factory=list)
    _last_seen: dict[str, float] = field(default_factory=dict)
    _since: float = 0.0
    _signalled: bool = False

    def schedules(self) -> list[Schedule]:
        return [s for s in self.cfg.schedules if s.enabled]

    def _init_last_seen(self, now: float) -> None:
        for s in self.schedules():
            recorded = jobs.last_due(self.catalog, s.name)
            latest = cron.previous(s.cron, s.timezone, now)
            # Never-run schedules start from now; otherwise the first tick sees what was missed.
            self._last_seen[s.name] = latest if recorded is None else recorded

    def tick(self, now: float) -> None:
        for job in jobs.recover_expired(self.catalog, leases.OCCURRENCES):
            log.warning(
                "run of %s due %s abandoned: lease of %s expired", job.schedule, job.due_at, job.lease_owner
            )
            self.catalog.emit_event(
                "job.abandoned",
                "warning",
                job.schedule,
                f"scheduled job '{job.schedule}' was abandoned: "
                f"runner {job.lease_owner} stopped renewing its lease",
                {"id": job.id, "schedule": job.schedule, "due_at": job.due_at, "runner": job.lease_owner},
                f"recoverctl/schedule/{job.schedule}",
            )
        for s in self.schedules():
            due = cron.previous(s.cron, s.timezone, now)
            if due <= self._last_seen.get(s.name, due):
                continue
            self._last_seen[s.name] = due
            late = now - due > grace(s, due)
            if late and s.catch_up == "skip":
                if jobs.record_skipped(self.catalog, s.name, due, self.runner, "missed (catch_up: skip)"):
                    log.info("skipping missed occurrence of %s due %s", s.name, due)
                continue
            result = jobs.claim_occurrence(self.catalog, s.name, due, self.runner, self.lease)
            if result.state != "claimed" or result.claim is None:
                log.debug("%s due %s: %s (%s)", s.name, due, result.state, result.detail)
                continue
            log.info("running %s (due %s%s)", s.name, due, ", catching up" if late else "")
            self.started.append(Started(s.name, due))
            th = threading.Thread(target=self._run, args=(s, result.claim), name=f"job-{s.name}")
            th.start()
            self._threads.append(th)
        self._threads = [th for th in self._threads if th.is_alive()]

    def _run(self, s: Schedule, claim: jobs.Claim) -> None:
        try:
            r = run_claimed(
                self.cfg,
                self.catalog,
                s,
                claim,
                lease=self.lease,
                stopping=self.stopping,
                metrics_textfile=self.metrics_textfile,
            )
            log.info("%s due %s: %s (exit %s, %.1fs)", s.name, claim.due_at, r.state, r.exit_code, r.duration)
        except Exception:
            log.exception("running %s failed", s.name)

    def _heartbeat(self, state: str) -> None:
        running = [th.name.removeprefix("job-") for th in self._threads if th.is_alive()]
        leases.heartbeat(
            self.catalog,
            self.runner,
            "scheduler",
            {
                "state": state,
                "since": self._since,
                "running": running,
                "schedules": len(self.schedules()),
                "poll": self.poll,
            },
        )
        if self.metrics_textfile:
            from recoverctl.scheduler.metrics import write_textfile

            write_textfile(self.cfg, self.catalog, self.metrics_textfile, heartbeat=time.time())

    def _wait(self, now: float) -> None:
        upcoming = [cron.following(s.cron, s.timezone, now) for s in self.schedules()]
        delay = min([self.poll, *(u - now + 0.01 for u in upcoming)])
        self.stopping.wait(max(0.01, delay))

    def _on_signal(self, signum: int, frame: object) -> None:
        # Only a plain assignment: `stopping.set()` takes the lock of the Event that the interrupted
        # main thread may hold (inside `stopping.wait`), and the runner would hang forever.
        self._signalled = True

    def _stop_requested(self) -> bool:
        """Return whether to stop claiming; a signal received meanwhile sets `stopping` now."""
        if self._signalled:
            self.stopping.set()
        return self.stopping.is_set()

    def run(self, *, install_signals: bool = True) -> LoopResult:
        """Loop until SIGTERM/SIGINT; return what was started. Running jobs finish before returning."""
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, self._on_signal)
        self._since = time.time()
        self._init_last_seen(self._since)
        self._heartbeat("running")
        last_beat = last_deliver = time.monotonic()
        escalation = EscalationPace(self.cfg, self.catalog, self.runner)
        while not self._stop_requested():
            try:
                self.tick(time.time())
                escalation.run_if_due()
                if time.monotonic() - last_beat >= HEARTBEAT_EVERY:
                    self._heartbeat("running")
                    last_beat = time.monotonic()
                if time.monotonic() - last_deliver >= DELIVER_EVERY:
                    deliver_pending(self.cfg, self.catalog)
                    last_deliver = time.monotonic()
            except RecoverctlError as e:
                # A catalog hiccup must not kill the runner; the next tick retries.
                log.error("scheduler tick failed: %s", e)
            self._wait(time.time())
        log.info("stopping: no new jobs are claimed; waiting for %d running job(s)", len(self._threads))
        self._heartbeat("stopping")
        for th in self._threads:
            th.join()
        self._heartbeat("stopped")
        return LoopResult(self.runner, self.started)
