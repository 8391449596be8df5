"""Operations routes: /health for monitors, /health/live and /health/ready for orchestrator
probes, /metrics for Prometheus."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from recoverctl.service.state import ServiceState


def ops_router(state: ServiceState) -> APIRouter:
    """Return the /health, /health/live, /health/ready and /metrics routes, answering from `state`."""
    router = APIRouter()

    @router.get("/health")
    def health() -> JSONResponse:
        """Catalog, repository, scheduler and worker status; 200 when healthy, 503 otherwise."""
        healthy, body = state.health()
        return JSONResponse(body, status_code=200 if healthy else 503)

    @router.get("/health/live")
    async def live() -> JSONResponse:
        """200 while the process serves requests (liveness); nothing else is asked."""
        # async: answered on the event loop, so a thread pool stuck on a slow catalog cannot make
        # a serving process look dead.
        return JSONResponse(state.liveness())

    @router.get("/health/ready")
    def ready() -> JSONResponse:
        """200 when this replica can accept alerts (the catalog answers), 503 otherwise (readiness)."""
        is_ready, body = state.readiness()
        return JSONResponse(body, status_code=200 if is_ready else 503)

    @router.get("/metrics")
    def metrics() -> Response:
        """Prometheus exposition."""
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return router
