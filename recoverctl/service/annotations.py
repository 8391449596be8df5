"""Grafana annotations from the timeline: `/api/annotations` in the SimpleJSON datasource's shape
(POST with a range) and for the Infinity datasource (GET with from/to in epoch milliseconds).
Credentials are checked by HookGuard in front of /api/ (any role reads)."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException, Query

from recoverctl.catalog.timeline import KINDS, TimelineEntry, TimelineQuery, timeline
from recoverctl.errors import CatalogError
from recoverctl.service.state import ServiceState

MAX_ANNOTATIONS = 1000


def annotation(entry: TimelineEntry, now: float | None = None) -> dict[str, Any]:
    """Return one timeline entry as a Grafana annotation (times in epoch milliseconds). A WAL gap
    is a region (time to timeEnd; an ongoing one ends `now`)."""
    out: dict[str, Any] = {
        "time": int(entry.at * 1000),
        "title": f"{entry.kind} {entry.subject or ''}".strip() + f": {entry.status}",
        "text": entry.summary,
        "tags": [t for t in (entry.kind, entry.subject, entry.status) if t],
    }
    if entry.kind == "wal":
        end = entry.until if entry.until is not None else (time.time() if now is None else now)
        out.update(isRegion=True, timeEnd=int(max(end, entry.at) * 1000))
    return out


def _query(frm: float | None, to: float | None, filters: str, limit: int) -> TimelineQuery:
    """Given a range in seconds and filters 'kind=drill,rollback subject=db', return the query."""
    kinds: list[str] = []
    subject = None
    for part in filters.split():
        key, _, value = part.partition("=")
        if key == "kind":
            kinds += [k for k in value.split(",") if k]
        elif key == "subject":
            subject = value or None
        else:
            raise HTTPException(400, detail=f"unknown filter {part!r}: use kind=a,b and subject=name")
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        raise HTTPException(
            400, detail=f"unknown kind(s) {', '.join(unknown)}: choose from {', '.join(KINDS)}"
        )
    return TimelineQuery(
        kinds=kinds, subject=subject, since=frm, until=to, limit=max(1, min(limit, MAX_ANNOTATIONS))
    )


def _answer(state: ServiceState, query: TimelineQuery) -> list[dict[str, Any]]:
    try:
        now = time.time()
        return [annotation(e, now) for e in timeline(state.catalog, query).entries]
    except CatalogError as e:
        raise HTTPException(503, detail=e.message) from None


def _iso_seconds(text: Any) -> float | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise HTTPException(400, detail=f"range time {text!r} is not ISO 8601") from None


def annotations_router(state: ServiceState) -> APIRouter:
    """Return the /api/annotations routes, answering from `state`."""
    router = APIRouter()

    @router.get("/api/annotations")
    def infinity(
        from_: Annotated[int | None, Query(alias="from")] = None,
        to: int | None = None,
        kind: str = "",
        subject: str = "",
        limit: int = MAX_ANNOTATIONS,
    ) -> list[dict[str, Any]]:
        """Timeline entries as Grafana annotations; `from`/`to` in epoch milliseconds (Grafana's
        ${__from}/${__to}), `kind` a comma-separated list, `subject` a source or service."""
        filters = " ".join(
            p for p in (f"kind={kind}" if kind else "", f"subject={subject}" if subject else "") if p
        )
        return _answer(
            state,
            _query(
                from_ / 1000 if from_ is not None else None,
                to / 1000 if to is not None else None,
                filters,
                limit,
            ),
        )

    @router.post("/api/annotations")
    def simplejson(body: dict[str, Any] = Body(...)) -> list[dict[str, Any]]:
        """The SimpleJSON datasource's annotation query: {"range": {"from", "to"}, "annotation":
        {"query": "kind=drill,rollback subject=db"}}; each answer echoes the annotation."""
        rng: dict[str, Any] = body["range"] if isinstance(body.get("range"), dict) else {}
        ann: dict[str, Any] = body["annotation"] if isinstance(body.get("annotation"), dict) else {}
        query = _query(
            _iso_seconds(rng.get("from")),
            _iso_seconds(rng.get("to")),
            str(ann.get("query") or ""),
            MAX_ANNOTATIONS,
        )
        return [{**a, "annotation": ann} for a in _answer(state, query)]

    @router.get("/api/")
    def datasource_test() -> dict[str, str]:
        """What SimpleJSON's "Save & test" asks for."""
        return {"status": "ok"}

    return router
