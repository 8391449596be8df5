"""The webhook server: FastAPI app with alert hooks, /health, /metrics and a small JSON API.

Request path for a hook, all in HookGuard in front of FastAPI: size limit and authentication on
the raw body, JSON check, the typed payload model, then the intake action decides and commits —
only then is 202 returned. A catalog outage answers 503 so Alertmanager (which retries only on
5xx) retries. Hooks skip FastAPI's middleware stack, routing and dependency solving: they are the
hot path under an alert storm, and those layers cost more CPU than the decision itself. The
FastAPI routes for them stay, so /openapi.json documents the same payload models.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import anyio
import sqlalchemy as sa
from fastapi import FastAPI, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ValidationError
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from recoverctl import __version__
from recoverctl.actions.alert_intake import SOURCES, AlertIn, list_decisions
from recoverctl.catalog import Catalog
from recoverctl.catalog import jobs as jobq
from recoverctl.catalog import tables as t
from recoverctl.config import Config
from recoverctl.errors import CatalogError, RecoverctlError
from recoverctl.service.auth import Secrets, authenticate
from recoverctl.service.batcher import IntakeBatcher
from recoverctl.service.metrics import Metrics
from recoverctl.service.payloads import AlertmanagerWebhook, GenericEvent, GrafanaWebhook, parse_body
from recoverctl.service.rejections import RejectionLog
from recoverctl.service.worker import HEARTBEAT_EVERY, Worker

log = logging.getLogger(__name__)

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
        if self.worker is not None and any(d["decision"] == "acted" for d in decisions):
            self.worker.wake()
        return {"accepted": len(decisions), "decisions": decisions}

    # --- health -----------------------------------------------------------------------------------

    def health(self) -> tuple[bool, dict[str, Any]]:
        checks: dict[str, dict[str, Any]] = {}
        now = time.time()
        beats: list[Any] = []
        try:
            with self.catalog.begin() as conn:
                conn.execute(sa.text("SELECT 1"))
                beats = list(conn.execute(sa.select(t.heartbeats)).all())
            checks["catalog"] = {"ok": True, "url": self.catalog.display_url}
        except CatalogError as e:
            checks["catalog"] = {"ok": False, "error": e.message}
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
            age = now - max(workers) if workers else None
            fresh = age is not None and age < 3 * HEARTBEAT_EVERY
            checks["worker"] = {"ok": fresh, "in_process": False, "heartbeat_age_s": age and round(age, 1)}
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


HOOK_MODELS: dict[str, type[AlertmanagerWebhook | GrafanaWebhook | GenericEvent]] = {
    "alertmanager": AlertmanagerWebhook,
    "grafana": GrafanaWebhook,
    "generic": GenericEvent,
}


class HookGuard:
    """ASGI app in front of FastAPI: answers POST /hooks/* itself, checks /api/* credentials."""

    def __init__(self, app: ASGIApp, state: ServiceState):
        self.app = app
        self.state = state

    async def refuse(
        self, scope: Scope, receive: Receive, send: Send, source: str, status: int, outcome: str, reason: str
    ) -> None:
        """Answer a refused request; count it, and past the peer's allowance answer 429."""
        state = self.state
        # Only failed authentication spends the peer's allowance: a 413 comes before
        # authentication and may be a genuine sender's oversized alert group.
        if state.reject(source, outcome, reason, scope, throttle=status == 401):
            status, outcome = 429, "rate_limited"
            reason = "too many unauthenticated requests from this address; retry later"
        extra = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        if status == 429:
            extra = {"Retry-After": str(state.rejections.retry_after)}
            # Sleeping costs no CPU; answering at once would let a flood that waits for its
            # answers send as fast as the server can refuse.
            await anyio.sleep(state.cfg.serve.rejections.delay)
        await JSONResponse({"error": outcome, "detail": reason}, status_code=status, headers=extra)(
            scope, receive, send
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if path.startswith("/api/") and self.state.secrets.configured:
            # The API shows alert labels and job payloads: same credentials as the hooks, and
            # the same counting and throttling of failures.
            why = authenticate(self.state.secrets, Headers(scope=scope), b"")
            if why is not None:
                await self.refuse(scope, receive, send, "api", 401, "unauthorized", why)
                return
        source = path.removeprefix("/hooks/").strip("/")
        if not path.startswith("/hooks/") or source not in SOURCES or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        state = self.state
        limit = state.cfg.serve.max_body_bytes
        headers = Headers(scope=scope)

        async def refuse(status: int, outcome: str, reason: str) -> None:
            await self.refuse(scope, receive, send, source, status, outcome, reason)

        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            await refuse(413, "too_large", f"body of {declared} bytes exceeds {limit}")
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await refuse(413, "too_large", f"body exceeds {limit} bytes")
                return
            chunks.append(chunk)
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        why = authenticate(state.secrets, headers, body)
        if why is not None:
            await refuse(401, "unauthorized", why)
            return
        try:
            parsed = parse_body(body)
        except ValueError as e:
            await refuse(400, "malformed", str(e))
            return

        try:
            try:
                payload = HOOK_MODELS[source].model_validate(parsed)
            except ValidationError as e:
                # The shape FastAPI gives: locations start at "body".
                errors: list[dict[str, Any]] = [
                    {**err, "loc": ("body", *err["loc"])} for err in e.errors(include_url=False)
                ]
                first = errors[0] if errors else {}
                where = ".".join(str(p) for p in first.get("loc", ()))
                state.reject(
                    source,
                    "invalid",
                    f"payload does not match the schema: {where}: {first.get('msg')}",
                    scope,
                    throttle=False,
                )
                await JSONResponse({"error": "invalid", "detail": jsonable_encoder(errors)}, status_code=422)(
                    scope, receive, send
                )
                return
            try:
                answer = await state.accept(source, payload.to_alerts())
            except HTTPException as e:
                await JSONResponse({"detail": e.detail}, status_code=e.status_code)(scope, receive, send)
                return
            await JSONResponse(answer, status_code=202)(scope, receive, send)
        finally:
            state.metrics.latency.labels(source).observe(time.perf_counter() - started)


class Accepted(BaseModel):
    accepted: int
    decisions: list[dict[str, Any]]


class WebhookAPI(FastAPI):
    """FastAPI with HookGuard in front of its whole middleware stack."""

    guard: HookGuard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.guard(scope, receive, send)

    async def _fastapi(self, scope: Scope, receive: Receive, send: Send) -> None:
        await super().__call__(scope, receive, send)


def create_app(state: ServiceState) -> FastAPI:
    """Return the FastAPI app serving `state` (worker lifecycle is the runner's business)."""
    app = WebhookAPI(
        title="recoverctl",
        version=__version__,
        description="Alert webhooks that become safe, deduplicated, rate-capped actions.",
    )
    app.guard = HookGuard(app._fastapi, state)

    @app.exception_handler(RequestValidationError)
    async def invalid_payload(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = jsonable_encoder(exc.errors())
        path = request.url.path
        if path.startswith("/hooks/"):
            source = path.removeprefix("/hooks/").strip("/")
            first = errors[0] if errors else {}
            where = ".".join(str(p) for p in first.get("loc", []))
            state.reject(
                source,
                "invalid",
                f"payload does not match the schema: {where}: {first.get('msg')}",
                request.scope,
                throttle=False,
            )
        return JSONResponse({"error": "invalid", "detail": errors}, status_code=422)

    responses: dict[int | str, dict[str, Any]] = {
        202: {"model": Accepted, "description": "decided and committed"},
        400: {"description": "body is not JSON"},
        401: {"description": "bad or missing token/signature, missing or stale timestamp, replay"},
        413: {"description": "body too large"},
        422: {"description": "payload does not match the schema"},
        429: {"description": "too many unauthenticated requests from this address"},
        503: {"description": "catalog unavailable: retry"},
    }

    @app.post("/hooks/alertmanager", status_code=202, response_class=JSONResponse, responses=responses)
    async def alertmanager(payload: AlertmanagerWebhook) -> JSONResponse:
        """Alertmanager webhook (version 4)."""
        return JSONResponse(await state.accept("alertmanager", payload.to_alerts()), status_code=202)

    @app.post("/hooks/grafana", status_code=202, response_class=JSONResponse, responses=responses)
    async def grafana(payload: GrafanaWebhook) -> JSONResponse:
        """Grafana-managed alerting webhook (version 1)."""
        return JSONResponse(await state.accept("grafana", payload.to_alerts()), status_code=202)

    @app.post("/hooks/generic", status_code=202, response_class=JSONResponse, responses=responses)
    async def generic(payload: GenericEvent) -> JSONResponse:
        """A signed event from any other sender."""
        return JSONResponse(await state.accept("generic", payload.to_alerts()), status_code=202)

    @app.get("/health")
    def health() -> JSONResponse:
        """Catalog, repository, scheduler and worker status; 200 when healthy, 503 otherwise."""
        healthy, body = state.health()
        return JSONResponse(body, status_code=200 if healthy else 503)

    @app.get("/metrics")
    def metrics() -> Response:
        """Prometheus exposition."""
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/api/jobs/{job_id}")
    def get_job(job_id: int) -> dict[str, Any]:
        """One job of the persistent queue."""
        try:
            job = jobq.get_job(state.catalog, job_id)
        except CatalogError as e:
            raise HTTPException(503, detail=e.message) from None
        if job is None:
            raise HTTPException(404, detail=f"job {job_id} does not exist")
        return job.to_json()

    @app.get("/api/alerts")
    def alerts(
        limit: int = 100, decision: str | None = None, service: str | None = None
    ) -> list[dict[str, Any]]:
        """Recent alert decisions, newest first."""
        try:
            return list_decisions(
                state.catalog, limit=max(1, min(limit, 1000)), decision=decision, service=service
            )
        except CatalogError as e:
            raise HTTPException(503, detail=e.message) from None

    return app
