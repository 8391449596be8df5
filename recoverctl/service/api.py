"""The small JSON API: jobs of the persistent queue and recent alert decisions (credentials are
checked by HookGuard in front of it)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException

from recoverctl.actions.alert_intake import list_decisions
from recoverctl.catalog import jobs as jobq
from recoverctl.errors import CatalogError
from recoverctl.service.state import ServiceState


def api_router(state: ServiceState) -> APIRouter:
    """Return the /api routes, answering from `state`."""
    router = APIRouter()

    @router.get("/api/jobs/{job_id}")
    def get_job(job_id: int) -> dict[str, Any]:
        """One job of the persistent queue."""
        try:
            job = jobq.get_job(state.catalog, job_id)
        except CatalogError as e:
            raise HTTPException(503, detail=e.message) from None
        if job is None:
            raise HTTPException(404, detail=f"job {job_id} does not exist")
        return job.to_json()

    @router.get("/api/alerts")
    def alerts(
        limit: int = 100, decision: str | None = None, service: str | None = None
    ) -> list[dict[str, Any]]:
        """Recent alert decisions, newest first."""
        try:
            found = list_decisions(
                state.catalog, limit=max(1, min(limit, 1000)), decision=decision, service=service
            )
        except CatalogError as e:
            raise HTTPException(503, detail=e.message) from None
        return [d.to_json() for d in found]

    return router
