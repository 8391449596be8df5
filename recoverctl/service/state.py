"""What the webhook server shares between its requests: config, catalog, credentials, metrics,
the intake batcher, the rejection log and the in-process worker; and the health it reports."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from fastapi import HTTPException
from starlette.types import Scope

from recoverctl import __version__
from recoverctl.actions.alert_intake import AlertIn
from recoverctl.catalog import Catalog
from recoverctl.catalog.runs import Heartbeat, heartbeats
from recoverctl.config import Config
from recoverctl.errors import CatalogError, RecoverctlError
from recoverctl.service.auth import Secrets
from recoverctl.service.batcher import IntakeBatcher
from recoverctl.service.metrics import Metrics
from recoverctl.service.rejections import RejectionLog
from recoverctl.service.worker import HEARTBEAT_EVERY, Worker

SCHEDULER_STALE_AFTER = 180.0
REPOSITORY_CHECK_EVERY = 30.0


@dataclass
class ServiceState:
    cfg: Config
    catalog: Catalog
    secrets: Secrets
    metrics: Metrics
    worker: Worker | None = None
    force_dry_run: bool = False
    _repo_check: tuple[float, dict[str, Any]] | None = field(default=None, repr=False)
    _batcher: IntakeBatcher | None = field(default=None, repr=False)
    _rejections: RejectionLog | None = field(default=None, repr=False)

    @property
    def batcher(self) -> IntakeBatcher:
        if self._batcher is None:
            self._batcher = IntakeBatcher(self.cfg, self.catalog, force_dry_run=self.force_dry_run)
        return self._batcher

    @property
    def rejections(self) -> RejectionLog:
        if self._rejections is None:
            self._rejections = RejectionLog(self.catalog, self.cfg.serve.rejections)
        return self._rejections

    def reject(self, source: str, outcome: str, reason: str, scope: Scope, *, throttle: bool) -> bool:
        """Count a refused request (written later, aggregated); return True to answer 429."""
        client = scope.get("client")
        peer = str(client[0]) if client else "unknown"
        limited = self.rejections.refuse(source, outcome, reason, peer, throttle=throttle)
        self.metrics.requests.labels(source, "rate_limited" if limited else outcome).inc()
        return limited

    async def accept(self, source: str, alerts: list[AlertIn]) -> dict[str, Any]:
        try:
            # Awaited on the event loop: the batcher's writer thread is the only one that blocks.
            decisions = await self.batcher.submit(alerts)
        except CatalogError as e:
            self.metrics.requests.labels(source, "unavailable").inc()
            raise HTTPException(503, detail=f"catalog unavailable, retry later: {e.message}") from None
        self.metrics.requests.labels(source, "accepted").inc()
        if self.worker is not None and any(d.decision == "acted" for d in decisions):
            self.worker.wake()
        return {"accepted": len(decisions), "decisions": [d.to_json() for d in decisions]}

    # --- health -----------------------------------------------------------------------------------

    def liveness(self) -> dict[str, Any]:
        """Return what a liveness probe needs: that this process answers. Touches nothing else, so
        an unreachable catalog or repository never gets a running replica restarted."""
        return {"status": "ok", "version": __version__}

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Given the catalog, return (ready, body): ready when this replica can accept alerts, i.e.
        the catalog answers. Workers, scheduler and repository are left to /health: a replica
        still queues alerts while they are down, so it must stay in the load balancer."""
        catalog, _ = self._catalog()
        ready = bool(catalog["ok"])
        return ready, {
            "status": "ok" if ready else "unready",
            "version": __version__,
            "checks": {"catalog": catalog},
        }

    def _catalog(self) -> tuple[dict[str, Any], list[Heartbeat]]:
        try:
            beats = heartbeats(self.catalog)
        except CatalogError as e:
            return {"ok": False, "error": e.message}, []
        return {"ok": True, "url": self.catalog.display_url}, beats

    def health(self) -> tuple[bool, dict[str, Any]]:
        """Return (healthy, body): the whole installation's state, for monitoring and readiness of
        single-process setups: catalog, repository, scheduler and worker heartbeats."""
        checks: dict[str, dict[str, Any]] = {}
        now = time.time()
        checks["catalog"], beats = self._catalog()
        checks["repository"] = self._repository(now)
        sched = [b.at for b in beats if b.role == "scheduler"]
        if sched:
            age = now - max(sched)
            checks["scheduler"] = {"ok": age < SCHEDULER_STALE_AFTER, "heartbeat_age_s": round(age, 1)}
        elif self.cfg.schedules:
            checks["scheduler"] = {"ok": False, "error": "schedules are configured but no scheduler has run"}
        else:
            checks["scheduler"] = {"ok": True, "configured": False}
        if self.worker is not None:
            checks["worker"] = {"ok": self.worker.alive, "in_process": True, "jobs_run": self.worker.jobs_run}
        else:
            workers = [b.at for b in beats if b.role == "worker"]
            worker_age = now - max(workers) if workers else None
            fresh = worker_age is not None and worker_age < 3 * HEARTBEAT_EVERY
            checks["worker"] = {
                "ok": fresh,
                "in_process": False,
                "heartbeat_age_s": worker_age and round(worker_age, 1),
            }
        healthy = all(c["ok"] for c in checks.values())
        return healthy, {"status": "ok" if healthy else "unhealthy", "version": __version__, "checks": checks}

    def _repository(self, now: float) -> dict[str, Any]:
        repo = self.cfg.repository
        if repo is None:
            return {"ok": True, "configured": False}
        if self._repo_check and now - self._repo_check[0] < REPOSITORY_CHECK_EVERY:
            return self._repo_check[1]
        # The bare backend: a health probe must answer now, not after the retry layer's backoff.
        from recoverctl.storage import open_backend

        result: dict[str, Any]
        try:
            storage = open_backend(repo.url, repo)
            try:
                next(iter(storage.list("config")), None)
            finally:
                storage.close()
            result = {"ok": True, "url": storage.url}
        except RecoverctlError as e:
            result = {"ok": False, "error": e.message}
        self._repo_check = (now, result)
        return result
