"""The alert hook routes. HookGuard answers POST /hooks/* before FastAPI routes; these routes
document the payload models in /openapi.json and answer when the guard hands a request on."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from recoverctl.service.payloads import AlertmanagerWebhook, GenericEvent, GrafanaWebhook
from recoverctl.service.state import ServiceState

HOOK_MODELS: dict[str, type[AlertmanagerWebhook | GrafanaWebhook | GenericEvent]] = {
    "alertmanager": AlertmanagerWebhook,
    "grafana": GrafanaWebhook,
    "generic": GenericEvent,
}


class Accepted(BaseModel):
    accepted: int
    decisions: list[dict[str, Any]]


def hooks_router(state: ServiceState) -> APIRouter:
    """Return the routes of the alert hooks, answering from `state`."""
    router = APIRouter()
    responses: dict[int | str, dict[str, Any]] = {
        202: {"model": Accepted, "description": "decided and committed"},
        400: {"description": "body is not JSON"},
        401: {"description": "bad or missing token/signature, missing or stale timestamp, replay"},
        413: {"description": "body too large"},
        422: {"description": "payload does not match the schema"},
        429: {"description": "too many unauthenticated requests from this address"},
        503: {"description": "catalog unavailable: retry"},
    }

    @router.post("/hooks/alertmanager", status_code=202, response_class=JSONResponse, responses=responses)
    async def alertmanager(payload: AlertmanagerWebhook) -> JSONResponse:
        """Alertmanager webhook (version 4)."""
        return JSONResponse(await state.accept("alertmanager", payload.to_alerts()), status_code=202)

    @router.post("/hooks/grafana", status_code=202, response_class=JSONResponse, responses=responses)
    async def grafana(payload: GrafanaWebhook) -> JSONResponse:
        """Grafana-managed alerting webhook (version 1)."""
        return JSONResponse(await state.accept("grafana", payload.to_alerts()), status_code=202)

    @router.post("/hooks/generic", status_code=202, response_class=JSONResponse, responses=responses)
    async def generic(payload: GenericEvent) -> JSONResponse:
        """A signed event from any other sender."""
        return JSONResponse(await state.accept("generic", payload.to_alerts()), status_code=202)

    return router
