"""Operations routes: /health for load balancers and monitors, /metrics for Prometheus."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from recoverctl.service.state import ServiceState


def ops_router(state: ServiceState) -> APIRouter:
    """Return the /health and /metrics routes, answering from `state`."""
    router = APIRouter()

    @router.get("/health")
    def health() -> JSONResponse:
        """Catalog, repository, scheduler and worker status; 200 when healthy, 503 otherwise."""
        healthy, body = state.health()
        return JSONResponse(body, status_code=200 if healthy else 503)

    @router.get("/metrics")
    def metrics() -> Response:
        """Prometheus exposition."""
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return router
