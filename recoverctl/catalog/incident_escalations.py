"""Escalation of incidents as the catalog keeps it: one row per (incident, level, repeat), inserted
by the runner that sends that notification, so of several runners exactly one does; a runner that
died before sending leaves a claim whose lease expires and another runner takes it over."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from recoverctl.catalog import Catalog
from recoverctl.catalog import tables as t
from recoverctl.catalog.incidents import (
    ESCALATING_STATES,
    Incident,
    TimelineEntry,
    add_entry_in,
    incident_from_row,
)


@dataclass(frozen=True)
class EscalationClaim:
    """The right to send one escalation notification: this runner inserted (or took over) its row."""

    id: int
    incident_id: int
    level: int
    repeat: int
    due_at: float


def escalating(catalog: Catalog) -> list[Incident]:
    """Return the incidents nobody has acknowledged yet, oldest first."""
    q = sa.select(t.incidents).where(t.incidents.c.state.in_(ESCALATING_STATES)).order_by(t.incidents.c.id)
    with catalog.begin() as conn:
        return [incident_from_row(r) for r in conn.execute(q)]


def escalation_steps_taken(catalog: Catalog, incident_ids: list[int]) -> dict[int, set[tuple[int, int]]]:
    """Return, per incident of `incident_ids`, the (level, repeat) escalation steps already claimed."""
    e = t.incident_escalations
    taken: dict[int, set[tuple[int, int]]] = {i: set() for i in incident_ids}
    if not incident_ids:
        return taken
    q = sa.select(e.c.incident_id, e.c.level, e.c.repeat).where(e.c.incident_id.in_(incident_ids))
    with catalog.begin() as conn:
        for incident_id, level, repeat in conn.execute(q):
            taken[int(incident_id)].add((int(level), int(repeat)))
    return taken


def claim_escalation(
    catalog: Catalog, incident_id: int, level: int, repeat: int, due_at: float, owner: str, lease: float
) -> EscalationClaim | None:
    """Insert the row of escalation step (level, repeat) of incident `incident_id` for `owner`;
    return the claim, or None when another runner has it or the incident was acknowledged. The
    incident row is locked while claiming, so an acknowledgement lands before or after, never
    between the check and the claim."""
    now = time.time()
    try:
        with catalog.begin() as conn:
            state = conn.execute(
                sa.select(t.incidents.c.state).where(t.incidents.c.id == incident_id).with_for_update()
            ).scalar()
            if state not in ESCALATING_STATES:
                return None
            claim_id = conn.execute(
                t.incident_escalations.insert().values(
                    incident_id=incident_id,
                    level=level,
                    repeat=repeat,
                    state="sending",
                    owner=owner,
                    claimed_until=now + lease,
                    due_at=due_at,
                )
            ).inserted_primary_key[0]  # type: ignore[index]
    except sa.exc.IntegrityError:
        return None
    return EscalationClaim(int(claim_id), incident_id, level, repeat, due_at)


def take_over_expired(catalog: Catalog, owner: str, lease: float) -> list[EscalationClaim]:
    """Take over escalation steps whose runner died before sending them; return them. Each
    update re-checks the expiry, so of several runners one takes a step over."""
    now = time.time()
    taken: list[EscalationClaim] = []
    with catalog.begin() as conn:
        rows = conn.execute(
            sa.select(t.incident_escalations).where(
                t.incident_escalations.c.state == "sending", t.incident_escalations.c.claimed_until < now
            )
        ).all()
        for r in rows:
            changed = conn.execute(
                t.incident_escalations.update()
                .where(
                    t.incident_escalations.c.id == r.id,
                    t.incident_escalations.c.state == "sending",
                    t.incident_escalations.c.claimed_until < now,
                )
                .values(owner=owner, claimed_until=now + lease)
            ).rowcount
            if changed:
                taken.append(EscalationClaim(r.id, r.incident_id, r.level, r.repeat, r.due_at))
    return taken


def incident_event(
    catalog: Catalog, incident: Incident, kind: str, summary: str, details: dict[str, Any]
) -> int:
    """Write the event an escalation (`incident.escalated`) or a resolution notice
    (`incident.resolved`) is sent as, and its timeline entry; return the event id. The event is
    written delivered: only the routes the escalation names get it, not the severity's route."""
    now = time.time()
    with catalog.begin() as conn:
        event_id = int(
            conn.execute(
                t.events.insert().values(
                    at=now,
                    kind=kind,
                    severity=incident.severity if kind == "incident.escalated" else "info",
                    subject=incident.subject,
                    summary=summary,
                    details=details,
                    dedup_key=f"incident:{incident.id}",
                    delivered=True,
                )
            ).inserted_primary_key[0]  # type: ignore[index]
        )
        entry = "escalation" if kind == "incident.escalated" else "resolution.notice"
        add_entry_in(conn, incident.id, TimelineEntry(now, entry, summary, details, event_id=event_id))
    return event_id


def notified_channels(catalog: Catalog, incident_id: int) -> list[str]:
    """Return the channels escalation notifications of incident `incident_id` reached, in order."""
    q = (
        sa.select(t.incident_escalations.c.result)
        .where(t.incident_escalations.c.incident_id == incident_id, t.incident_escalations.c.state == "sent")
        .order_by(t.incident_escalations.c.id)
    )
    seen: list[str] = []
    with catalog.begin() as conn:
        for result in conn.execute(q).scalars():
            for d in (result or {}).get("deliveries", []):
                if d.get("status") == "sent" and d.get("channel") not in seen:
                    seen.append(d["channel"])
    return seen


def finish_escalation(catalog: Catalog, claim: EscalationClaim, owner: str, result: dict[str, Any]) -> None:
    """Mark escalation step `claim` sent and raise the incident's level to it."""
    with catalog.begin() as conn:
        conn.execute(
            t.incident_escalations.update()
            .where(t.incident_escalations.c.id == claim.id, t.incident_escalations.c.owner == owner)
            .values(state="sent", sent_at=time.time(), result=result)
        )
        conn.execute(
            t.incidents.update()
            .where(t.incidents.c.id == claim.incident_id, t.incidents.c.escalation_level < claim.level)
            .values(escalation_level=claim.level)
        )
