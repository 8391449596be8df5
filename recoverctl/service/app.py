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
from typing import Any

import anyio
from fastapi import FastAPI, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from recoverctl import __version__
from recoverctl.actions.alert_intake import SOURCES
from recoverctl.service.api import api_router
from recoverctl.service.auth import authenticate
from recoverctl.service.console import console_router
from recoverctl.service.hooks import HOOK_MODELS, hooks_router
from recoverctl.service.incident_ack import incident_ack_router
from recoverctl.service.ops import ops_router
from recoverctl.service.payloads import parse_body
from recoverctl.service.state import ServiceState

log = logging.getLogger(__name__)


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
        if (path.startswith("/api/") or path == "/openapi.json") and self.state.secrets.configured:
            # The API shows alert labels and job payloads: same credentials as the hooks (any
            # role reads), and the same counting and throttling of failures.
            why = authenticate(self.state.secrets, Headers(scope=scope), b"", role="viewer")
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
        docs_url="/docs" if state.cfg.serve.docs else None,
        redoc_url=None,
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

    app.include_router(hooks_router(state))
    app.include_router(ops_router(state))
    app.include_router(api_router(state))
    app.include_router(incident_ack_router(state))
    app.include_router(console_router(state))
    return app
