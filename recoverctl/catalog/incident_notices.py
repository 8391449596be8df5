"""What incidents tell people besides their escalations, as the catalog keeps it: the states posted
to status pages (each an entry of the incident's timeline, `STATUS_ENTRY`, claimed before it is
sent, so of several runners one sends it), and which channels already heard of an incident's
first event, so its route delivery and its level-1 escalation tell each channel once."""

from __future__ import annotations

import time
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from recoverctl.catalog import Catalog
from recoverctl.catalog import tables as t
from recoverctl.catalog.incidents import (
    ACTIVE_STATES,
    Incident,
    TimelineEntry,
    add_entry_in,
    incident_from_row,
)

# The timeline entry that records a state posted to the status pages for an incident.
STATUS_ENTRY = "status_page"
# Kinds on an incident's timeline that make its service's state a major outage.
_OUTAGE_KINDS = ("rollback.failed", "job.rollback.abandoned")


@dataclass(frozen=True)
class StatusDue:
    """A state the status pages are to show for an incident's service, not posted yet."""

    incident: Incident
    state: str


def status_notices_due(catalog: Catalog) -> list[StatusDue]:
    """Return the states incidents about services imply and have not posted yet, oldest incident
    first: an active one degraded_performance (major_outage once a rollback of it failed), a
    resolved one that posted a state operational again."""
    tl, inc = t.incident_timeline, t.incidents
    with catalog.begin() as conn:
        active = [
            incident_from_row(r)
            for r in conn.execute(
                sa.select(inc).where(
                    inc.c.subject_type == "service",
                    inc.c.subject.isnot(None),
                    inc.c.state.in_(ACTIVE_STATES),
                )
            )
        ]
        last: dict[int, str] = {}
        for r in conn.execute(
            sa.select(tl.c.incident_id, tl.c.details)
            .where(tl.c.kind == STATUS_ENTRY)
            .order_by(tl.c.at, tl.c.id)
        ):
            last[int(r.incident_id)] = str((r.details or {}).get("state"))
        failed = set(
            conn.execute(
                sa.select(tl.c.incident_id).where(
                    tl.c.kind.in_(_OUTAGE_KINDS), tl.c.incident_id.in_([i.id for i in active])
                )
            ).scalars()
        )
        told = [i for i, state in last.items() if state != "operational"]
        resolved = [
            incident_from_row(r)
            for r in conn.execute(sa.select(inc).where(inc.c.id.in_(told), inc.c.state == "resolved"))
        ]
    due = [StatusDue(i, "operational") for i in resolved]
    for i in active:
        state = "major_outage" if i.id in failed or i.kind in _OUTAGE_KINDS else "degraded_performance"
        if last.get(i.id) != state:
            due.append(StatusDue(i, state))
    return sorted(due, key=lambda d: d.incident.id)


def claim_status_notice(catalog: Catalog, incident_id: int, state: str, summary: str) -> bool:
    """Record on incident `incident_id` that its service's status pages are told `state`; return
    False when that is the state told last (another runner claimed it a moment ago)."""
    tl = t.incident_timeline
    with catalog.begin() as conn:
        # A write first: it locks the incident row (PostgreSQL) or the database (SQLite), so of
        # several runners claiming at once the second sees the first one's entry.
        conn.execute(
            t.incidents.update()
            .where(t.incidents.c.id == incident_id)
            .values(escalation_level=t.incidents.c.escalation_level)
        )
        told = conn.execute(
            sa.select(tl.c.details)
            .where(tl.c.incident_id == incident_id, tl.c.kind == STATUS_ENTRY)
            .order_by(tl.c.at.desc(), tl.c.id.desc())
            .limit(1)
        ).scalar()
        if told is not None and told.get("state") == state:
            return False
        add_entry_in(conn, incident_id, TimelineEntry(time.time(), STATUS_ENTRY, summary, {"state": state}))
    return True


# Timeline entries recoverctl writes about the incident itself: never its first event.
_OWN_ENTRIES = ("escalation", "resolution.notice", STATUS_ENTRY)


def _first_event_in(conn: Connection, incident_id: int) -> int | None:
    tl = t.incident_timeline
    return conn.execute(
        sa.select(tl.c.event_id)
        .where(tl.c.incident_id == incident_id, tl.c.event_id.isnot(None), tl.c.kind.notin_(_OWN_ENTRIES))
        .order_by(tl.c.at, tl.c.id)
        .limit(1)
    ).scalar()


def incident_opened_by(catalog: Catalog, event_id: int) -> int | None:
    """Return the id of the incident whose first event is `event_id`, or None (the event joined an
    incident later, or concerns none)."""
    tl = t.incident_timeline
    with catalog.begin() as conn:
        found = conn.execute(
            sa.select(tl.c.incident_id)
            .where(tl.c.event_id == event_id, tl.c.kind.notin_(_OWN_ENTRIES))
            .limit(1)
        ).scalar()
        if found is None or _first_event_in(conn, int(found)) != event_id:
            return None
    return int(found)


def first_event_channels(catalog: Catalog, incident_id: int) -> list[str]:
    """Return the channels the first event of incident `incident_id` was sent to, in order."""
    n = t.notifications
    with catalog.begin() as conn:
        first = _first_event_in(conn, incident_id)
        if first is None:
            return []
        rows = conn.execute(
            sa.select(n.c.channel).where(n.c.event_id == first, n.c.status == "sent").order_by(n.c.id)
        ).scalars()
        return list(dict.fromkeys(str(c) for c in rows))
