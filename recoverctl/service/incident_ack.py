"""Acknowledgement links: GET shows the incident and a confirmation form (it changes nothing:
mail scanners and chat unfurlers open links), the form's POST acknowledges. The signed,
expiring token in the link is the credential; no bearer token is asked of a phone."""

from __future__ import annotations

import html
from collections.abc import Callable
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from recoverctl.actions.incidents import AckLinkCheck, acknowledge_by_link, check_ack_link
from recoverctl.errors import CatalogError, NotFoundError
from recoverctl.service.state import ServiceState

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>{title}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:32rem;margin:2rem auto;padding:0 1rem}}
button{{font-size:1.2rem;padding:.6rem 1.2rem}}input{{font-size:1rem;padding:.3rem}}</style>
</head><body><h1>{title}</h1>{body}</body></html>"""


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(_PAGE.format(title=html.escape(title), body=body), status_code=status)


def _refused(checked: AckLinkCheck) -> HTMLResponse:
    return _page("Link not valid", f"<p>{html.escape(checked.problem or '')}</p>", 403)


def _answer(incident_id: int, check: Callable[[], AckLinkCheck]) -> AckLinkCheck | HTMLResponse:
    """Run `check`; return its result when it names the incident, else the error page to answer."""
    try:
        checked = check()
    except NotFoundError:
        return _page("No such incident", f"<p>incident {incident_id} does not exist</p>", 404)
    except CatalogError as e:
        return _page("Unavailable", f"<p>{html.escape(e.message)}</p>", 503)
    return _refused(checked) if checked.incident is None else checked


def incident_ack_router(state: ServiceState) -> APIRouter:
    """Return the /incidents/{id}/ack routes, answering from `state`."""
    router = APIRouter()

    @router.get("/incidents/{incident_id}/ack", response_class=HTMLResponse)
    def confirm(incident_id: int, token: str = "") -> HTMLResponse:
        """The confirmation page of an acknowledgement link."""
        checked = _answer(incident_id, lambda: check_ack_link(state.cfg, state.catalog, incident_id, token))
        if isinstance(checked, HTMLResponse):
            return checked
        i = checked.incident
        assert i is not None
        body = (
            f"<p><strong>#{i.id} [{html.escape(i.state)}] {html.escape(i.severity)}</strong>: "
            f"{html.escape(i.title)}</p><p>opened {html.escape(i.opened_at)}, escalation level "
            f"{i.escalation_level}</p>"
            f'<form method="post"><input type="hidden" name="token" value="{html.escape(token)}">'
            '<p><label>Your name <input name="by" autocomplete="name"></label></p>'
            "<p><button type=submit>Acknowledge</button></p></form>"
        )
        return _page(f"Acknowledge incident #{i.id}?", body)

    @router.post("/incidents/{incident_id}/ack", response_class=HTMLResponse)
    async def acknowledge(incident_id: int, request: Request) -> HTMLResponse:
        """Acknowledge the incident of a valid link (form fields `token` and `by`)."""
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        token = (form.get("token") or [""])[0]
        by = (form.get("by") or [""])[0]
        peer = request.client.host if request.client else "unknown"
        done = _answer(
            incident_id, lambda: acknowledge_by_link(state.cfg, state.catalog, incident_id, token, by, peer)
        )
        if isinstance(done, HTMLResponse):
            return done
        i = done.incident
        assert i is not None
        if done.problem is not None:
            return _page(f"Incident #{i.id}", f"<p>{html.escape(done.problem)}</p>", 409)
        who = html.escape(i.acknowledged_by or "")
        return _page(f"Incident #{i.id} acknowledged", f"<p>acknowledged by {who}; escalation stopped.</p>")

    return router
