"""The states incidents show on status pages, as the catalog keeps them: each state posted is an
entry of the incident's timeline (`STATUS_ENTRY`), claimed before it is sent, so of several runners
one sends it."""

from __future__ import annotations

import time
from dataclasses import dataclass

import sqlalchemy as sa

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
