"""The operations console at `/`: board, timeline, RTO/RPO trends, drill/rollback/snapshot pages,
incident pages with their Acknowledge button, the login form, the console's static assets and
the Grafana annotations endpoint.

Pages are server-rendered (Jinja2, templates in recoverctl/console/templates). Access: with
tokens configured, a page needs a session cookie (from the login form) or a bearer token; any
role reads, and POSTs carry the session's CSRF token. Without any credentials configured the
console is as open as the API (`serve` refuses to listen beyond loopback then).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import parse_qs, quote, urlsplit

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool

from recoverctl.actions.incidents import acknowledge_incident
from recoverctl.actions.status import status
from recoverctl.catalog.timeline import KINDS, Cursor, TimelineEntry, TimelineQuery, timeline
from recoverctl.console import STATIC_DIR, TEMPLATES_DIR, views
from recoverctl.errors import CatalogError, NotFoundError, RecoverctlError
from recoverctl.service.annotations import annotations_router
from recoverctl.service.auth import Identity, bearer_identity
from recoverctl.service.session import COOKIE, LOGIN_COOKIE, Session, SessionSigner, login_nonce
from recoverctl.service.state import ServiceState
from recoverctl.units import human_duration, human_size

# Everything the console loads comes from recoverctl itself.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
OPEN = Identity("anonymous", "operator")
PAGE_SIZES = (25, 50, 100, 200)


def _when(ts: float | None) -> str:
    return "-" if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _parse_time(text: str | None) -> float | None:
    """Given '2026-01-02', '2026-01-02T03:04' (UTC) or Unix seconds, return Unix seconds."""
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise HTTPException(400, detail=f"not a time: {text!r} (use 2026-01-02T03:04, UTC)") from None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


def templates() -> Jinja2Templates:
    """Return the console's template environment, with its filters."""
    env = Jinja2Templates(directory=str(TEMPLATES_DIR))
    env.env.filters.update(duration=human_duration, size=human_size, when=_when)
    env.env.globals.update(kinds=KINDS, page_sizes=PAGE_SIZES, entry_link=entry_link, now=time.time)
    return env


@dataclass(frozen=True)
class Viewer:
    """Who is looking, and the CSRF token their forms carry (None without a session)."""

    identity: Identity
    csrf: str | None


def _safe_next(target: str | None) -> str:
    """Return `target` when it is a path on this server, else '/' (no open redirect)."""
    if not target or not target.startswith("/") or target.startswith("//") or urlsplit(target).netloc:
        return "/"
    return target


@dataclass(frozen=True)
class Console:
    """What every console route needs: the server state, the templates and the session signer."""

    state: ServiceState
    pages: Jinja2Templates
    signer: SessionSigner

    def session_of(self, request: Request) -> Session | None:
        return self.signer.read(request.cookies.get(COOKIE), time.time())

    def viewer(self, request: Request) -> Viewer:
        """Return who is looking; raise a 303 to the login form when nobody is."""
        if not self.state.secrets.configured:
            return Viewer(OPEN, None)
        session = self.session_of(request)
        if session is not None:
            return Viewer(session.identity, session.csrf)
        identity = bearer_identity(self.state.secrets, request.headers)
        if identity is not None:
            return Viewer(identity, None)
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise HTTPException(303, headers={"Location": f"/login?next={quote(target)}"})

    def render(self, request: Request, name: str, who: Viewer, code: int = 200, **ctx: Any) -> Response:
        """Return template `name` rendered for `who`, with the console's security headers."""
        response = self.pages.TemplateResponse(
            request, name, {"viewer": who, "now": time.time(), **ctx}, status_code=code
        )
        response.headers.update(SECURITY_HEADERS)
        return response

    def page(self, request: Request, name: str, build: Callable[[], Any], **ctx: Any) -> Response:
        """Render `name` with what `build()` returns as `model`, for a signed-in viewer; the
        404 page on NotFoundError, 503 when the catalog cannot be read."""
        who = self.viewer(request)
        try:
            model = build()
        except NotFoundError as e:
            return self.render(request, "error.html", who, 404, title="Not found", message=e.message)
        except CatalogError as e:
            return self.render(
                request, "error.html", who, 503, title="Catalog unavailable", message=e.message
            )
        return self.render(request, name, who, model=model, **ctx)


def console_router(state: ServiceState) -> APIRouter:
    """Return the console routes, answering from `state`."""
    console = Console(state, templates(), SessionSigner(state.secrets))
    router = APIRouter(include_in_schema=False)
    router.include_router(_access_routes(console))
    router.include_router(_board_routes(console))
    router.include_router(_record_routes(console))
    router.include_router(_incident_routes(console))
    router.include_router(annotations_router(state))
    return router


def _access_routes(console: Console) -> APIRouter:
    """Static assets (public), the login form, logging in and out."""
    router = APIRouter(include_in_schema=False)
    state, signer, render, session_of = console.state, console.signer, console.render, console.session_of

    @router.get("/static/{path:path}")
    def static(path: str) -> Response:
        file = (STATIC_DIR / path).resolve()
        if not file.is_relative_to(STATIC_DIR) or not file.is_file():
            raise HTTPException(404, detail="no such asset")
        return FileResponse(
            file, headers={"Cache-Control": "max-age=3600", "X-Content-Type-Options": "nosniff"}
        )

    @router.get("/login")
    def login_form(request: Request, next: str = "/", error: str | None = None) -> Response:
        nonce = login_nonce()
        response = render(
            request, "login.html", Viewer(OPEN, None), next=_safe_next(next), nonce=nonce, error=error
        )
        response.set_cookie(LOGIN_COOKIE, nonce, max_age=600, httponly=True, samesite="strict", path="/login")
        return response

    @router.post("/login")
    async def login(request: Request) -> Response:
        form = await _form(request)
        target = _safe_next(form.get("next"))
        nonce = request.cookies.get(LOGIN_COOKIE)
        if not nonce or form.get("csrf") != nonce:
            return RedirectResponse(f"/login?next={quote(target)}&error=expired", status_code=303)
        identity = state.secrets.identify(form.get("token", "").strip())
        if identity is None:
            # Counted and throttled like any refused credential.
            if state.reject(
                "console", "unauthorized", "login with an unknown token", request.scope, throttle=True
            ):
                return JSONResponse({"error": "rate_limited"}, status_code=429)
            return RedirectResponse(f"/login?next={quote(target)}&error=token", status_code=303)
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            COOKIE,
            signer.issue(identity, time.time()),
            max_age=int(state.secrets.settings.session_ttl),
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path="/",
        )
        response.delete_cookie(LOGIN_COOKIE, path="/login")
        return response

    @router.post("/logout")
    async def logout(request: Request) -> Response:
        session = session_of(request)
        form = await _form(request)
        if session is None or not signer.check_csrf(session, form.get("csrf")):
            raise HTTPException(403, detail="missing or wrong CSRF token")
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response

    return router


def _board_routes(console: Console) -> APIRouter:
    """The board and the timeline."""
    router = APIRouter(include_in_schema=False)
    state, page = console.state, console.page

    @router.get("/")
    def board(request: Request) -> Response:
        def build() -> Any:
            s = status(state.cfg, state.catalog)
            return {
                "status": s,
                "releases": {n: views.release_pair(state.catalog, n) for n in state.cfg.services},
                "incidents": views.open_incidents(state.catalog),
            }

        return page(request, "board.html", build)

    @router.get("/timeline")
    def timeline_page(
        request: Request,
        kind: Annotated[list[str] | None, Query()] = None,
        subject: str | None = None,
        since: str | None = None,
        until: str | None = None,
        before: str | None = None,
        limit: int = 50,
    ) -> Response:
        query = TimelineQuery(
            kinds=[k for k in kind or [] if k],
            subject=subject or None,
            since=_parse_time(since),
            until=_parse_time(until),
            after=_cursor(before),
            limit=max(1, min(limit, 500)),
        )
        if not set(query.kinds) <= set(KINDS):
            raise HTTPException(400, detail=f"kind must be one of {', '.join(KINDS)}")
        subjects = sorted({*state.cfg.sources, *state.cfg.services})
        return page(
            request,
            "timeline.html",
            lambda: timeline(state.catalog, query),
            query=query,
            subjects=subjects,
            since=since or "",
            until=until or "",
            next_url=lambda cursor: _with_cursor(request, cursor),
        )

    return router


def _record_routes(console: Console) -> APIRouter:
    """Trends per source and the pages of one drill, rollback or snapshot."""
    router = APIRouter(include_in_schema=False)
    state, page = console.state, console.page

    @router.get("/trends")
    def trends_index(request: Request) -> Response:
        who = console.viewer(request)
        if state.cfg.sources:
            return RedirectResponse(f"/trends/{quote(min(state.cfg.sources))}", status_code=303)
        return console.render(request, "error.html", who, 404, title="No sources", message="none configured")

    @router.get("/trends/{source}")
    def trends(request: Request, source: str) -> Response:
        def build() -> views.Trend:
            if source not in state.cfg.sources:
                raise NotFoundError(f"source '{source}' is not configured")
            return views.trend(state.catalog, source)

        return page(request, "trends.html", build, sources=sorted(state.cfg.sources), source=source)

    @router.get("/drills/{drill_id}")
    def drill(request: Request, drill_id: int) -> Response:
        return page(request, "drill.html", lambda: views.drill_page(state.catalog, drill_id))

    @router.get("/rollbacks/{rollback_id}")
    def rollback(request: Request, rollback_id: int) -> Response:
        return page(request, "rollback.html", lambda: views.rollback_page(state.catalog, rollback_id))

    @router.get("/snapshots/{snapshot_id}")
    def snapshot(request: Request, snapshot_id: str) -> Response:
        return page(request, "snapshot.html", lambda: views.snapshot_page(state.catalog, snapshot_id))

    return router


def _incident_routes(console: Console) -> APIRouter:
    """An incident's page and its Acknowledge button."""
    router = APIRouter(include_in_schema=False)
    state = console.state

    @router.get("/incidents/{incident_id}")
    def incident(request: Request, incident_id: int) -> Response:
        return console.page(request, "incident.html", lambda: views.incident_page(state.catalog, incident_id))

    # Not /ack: that path is the signed link in escalation messages (service/incident_ack.py).
    @router.post("/incidents/{incident_id}/acknowledge")
    async def acknowledge(request: Request, incident_id: int) -> Response:
        # Only a signed-in session carries a CSRF token: a form post without one is refused.
        session = console.session_of(request)
        form = await _form(request)
        if session is None or not console.signer.check_csrf(session, form.get("csrf")):
            raise HTTPException(403, detail="missing or wrong CSRF token")
        if not session.identity.may("operator"):
            role = f"token '{session.identity.name}' has the {session.identity.role} role"
            raise HTTPException(403, detail=f"{role}: acknowledging needs operator")
        who = Viewer(session.identity, session.csrf)
        try:
            await run_in_threadpool(
                acknowledge_incident, state.catalog, incident_id, session.identity.name, "console"
            )
        except NotFoundError as e:
            return console.render(request, "error.html", who, 404, title="Not found", message=e.message)
        except RecoverctlError as e:  # resolved already
            return console.render(
                request, "error.html", who, 409, title="Not acknowledged", message=e.message
            )
        return RedirectResponse(f"/incidents/{incident_id}", status_code=303)

    return router


async def _form(request: Request) -> dict[str, str]:
    """Return the fields of an urlencoded form body (the first value of each)."""
    return {k: v[0] for k, v in parse_qs((await request.body()).decode(errors="replace")).items()}


def _cursor(text: str | None) -> Cursor | None:
    """Given the `before` parameter (a page cursor), return it; 400 when it is not one."""
    if not text:
        return None
    try:
        return Cursor.parse(text)
    except ValueError:
        raise HTTPException(400, detail=f"not a timeline cursor: {text!r}") from None


def _with_cursor(request: Request, cursor: Cursor) -> str:
    """Return the current page's URL asking for entries older than `cursor`."""
    params = [(k, v) for k, v in request.query_params.multi_items() if k != "before"]
    params.append(("before", str(cursor)))
    return request.url.path + "?" + "&".join(f"{quote(k)}={quote(v)}" for k, v in params)


def entry_link(entry: TimelineEntry) -> str | None:
    """Return the console page of a timeline entry, None when it has none."""
    if entry.kind == "drill":
        return f"/drills/{entry.ref}"
    if entry.kind == "rollback":
        return f"/rollbacks/{entry.ref}"
    if entry.details.get("snapshot_id"):
        return f"/snapshots/{entry.details['snapshot_id']}"
    return None
