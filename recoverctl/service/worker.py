"""The job worker: threads that claim queued jobs with a lease, run them, and record the outcome.

Used inside `recoverctl serve` and alone as `recoverctl worker`. A job is claimed atomically, its
lease is extended while it runs, and a job whose worker died is requeued or abandoned by whichever
worker next notices the expired lease — so a job accepted before a crash runs once after restart.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from recoverctl.actions.job_kinds import JOB_KINDS, execute_queued
from recoverctl.catalog import Catalog, leases
from recoverctl.catalog import jobs as jobq
from recoverctl.config import Config
from recoverctl.errors import CatalogError
from recoverctl.incidents.escalation import EscalationPace
from recoverctl.scheduler.runner import Held, run_job

log = logging.getLogger(__name__)

HEARTBEAT_EVERY = 5.0


class Worker:
    """Run `concurrency` job threads against the catalog until `stop()`."""

    def __init__(
        self,
        cfg: Config,
        catalog: Catalog,
        *,
        concurrency: int = 2,
        lease: float = 30.0,
        poll_interval: float = 0.5,
        name: str = "worker",
    ):
        self.cfg = cfg
        self.catalog = catalog
        self.concurrency = concurrency
        self.lease = lease
        self.poll_interval = poll_interval
        self.owner = leases.holder_id(name)
        self.kinds = list(JOB_KINDS)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self.jobs_run = 0
        self._count_lock = threading.Lock()
        self._next_recovery = 0.0
        self.escalation = EscalationPace(cfg, catalog, self.owner)

    # --- lifecycle --------------------------------------------------------------------------------

    def start(self) -> None:
        for i in range(self.concurrency):
            th = threading.Thread(target=self._loop, name=f"recoverctl-worker-{i}", daemon=True)
            th.start()
            self._threads.append(th)
        hb = threading.Thread(target=self._heartbeat_loop, name="recoverctl-worker-heartbeat", daemon=True)
        hb.start()
        self._threads.append(hb)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop claiming and wait up to `timeout` for running jobs to finish."""
        self._stop.set()
        self._wake.set()
        deadline = time.monotonic() + timeout
        for th in self._threads:
            th.join(max(0.0, deadline - time.monotonic()))

    def wake(self) -> None:
        """Tell idle threads a job was queued, so they claim it without waiting for the next poll."""
        self._wake.set()

    @property
    def alive(self) -> bool:
        return bool(self._threads) and all(th.is_alive() for th in self._threads) and not self._stop.is_set()

    # --- work -------------------------------------------------------------------------------------

    def run_once(self) -> dict[str, Any] | None:
        """Recover expired leases, claim one job and run it; return the finished job or None."""
        now = time.monotonic()
        if now >= self._next_recovery:
            self._next_recovery = now + min(5.0, self.lease / 2)
            self._recover()
        self.escalation.run_if_due(now)
        job = jobq.claim(self.catalog, self.owner, self.kinds, self.lease)
        if job is None:
            return None
        return self._execute(job)

    def _recover(self) -> None:
        for job in jobq.recover_expired(self.catalog):
            log.warning("job %s (%s): %s", job.id, job.kind, job.error or "lease expired, requeued")
            if job.state == "abandoned":
                self.catalog.emit_event(
                    f"job.{job.kind}.abandoned",
                    "critical",
                    job.payload.get("target"),
                    f"job {job.id} ({job.kind}) was abandoned: {job.error}",
                    details={"job_id": job.id},
                )

    def run_until_idle(self) -> list[dict[str, Any]]:
        """Run jobs until none is queued; return the finished jobs (for `worker --once`)."""
        done = []
        while (job := self.run_once()) is not None:
            done.append(job)
        return done

    def _execute(self, job: jobq.Job) -> dict[str, Any]:
        log.info("job %s (%s) started for %s", job.id, job.kind, job.payload.get("target"))
        what = f"job {job.id} ({job.kind}) attempt {job.attempts} of {job.max_attempts}"
        outcome = run_job(
            self.cfg,
            self.catalog,
            Held(job.id, self.owner, what),
            lambda lost: execute_queued(self.cfg, self.catalog, job),
            lease=self.lease,
        )
        with self._count_lock:
            self.jobs_run += 1
        error = outcome.error
        log.info("job %s (%s) %s%s", job.id, job.kind, outcome.state, f": {error}" if error else "")
        return {**job.to_json(), "state": outcome.state, "result": outcome.result, "error": error}

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                finished = self.run_once()
            except CatalogError as e:
                log.warning("worker: catalog unavailable, retrying: %s", e)
                finished = None
            if finished is None:
                self._wake.wait(self.poll_interval)
                self._wake.clear()

    def _heartbeat_loop(self) -> None:
        while True:
            try:
                leases.heartbeat(
                    self.catalog,
                    self.owner,
                    "worker",
                    {"concurrency": self.concurrency, "jobs_run": self.jobs_run, "kinds": self.kinds},
                )
            except CatalogError as e:
                log.warning("worker heartbeat failed: %s", e)
            if self._stop.wait(HEARTBEAT_EVERY):
                return
