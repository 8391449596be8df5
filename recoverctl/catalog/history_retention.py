"""Deleting old history rows: events, alerts, notification deliveries and ended WAL outages past
their retention.

Only these four tables are ever pruned: runs, snapshots, drills, releases, rollbacks, jobs and
the audit log are not touched. A row is kept, however old, while something still needs it:

- an event not yet delivered (the deliverer has still to send it);
- a WAL outage still open (no end yet), or one that ended within the window;
- an alert whose job is queued or running, or the alert row that took an incident
  (source + fingerprint + startsAt) while that alert is still being received within the
  retention window: deleting it would let the same firing alert act a second time;
- any row another table points at with a foreign key (other than the pruned tables' own
  links): a table added later that references events or alerts (an incident's timeline)
  holds its rows without a change here.

An event's delivery rows go with it (the `notifications` foreign key).
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from recoverctl.catalog import Catalog
from recoverctl.catalog import tables as t

_PRUNED = frozenset({"events", "alerts", "notifications", "wal_outages"})
_ACTIVE_JOB_STATES = ("queued", "running")


@dataclass(frozen=True)
class HistoryCutoffs:
    """Per group, the Unix time before which rows may go; None keeps the group whole."""

    events: float | None
    alerts: float | None
    notifications: float | None
    wal_outages: float | None


@dataclass(frozen=True)
class PrunedHistory:
    """How many rows of each table were (or, in a dry run, would be) deleted."""

    events: int
    alerts: int
    notifications: int
    wal_outages: int


def _unreferenced(column: sa.Column[int]) -> ColumnElement[bool]:
    """Return the condition "no row of a table outside the pruned ones points at `column`"."""
    held = [
        column.in_(sa.select(fk.parent).where(fk.parent.is_not(None)))
        for table in t.metadata.tables.values()
        if table.name not in _PRUNED
        for fk in table.foreign_keys
        if fk.column is column
    ]
    return sa.not_(sa.or_(*held)) if held else sa.true()


def _old_events(cutoff: float) -> ColumnElement[bool]:
    return sa.and_(t.events.c.at < cutoff, t.events.c.delivered.is_(True), _unreferenced(t.events.c.id))


def _old_alerts(cutoff: float) -> ColumnElement[bool]:
    a, newer = t.alerts, t.alerts.alias("newer")
    still_received = sa.exists().where(
        newer.c.source == a.c.source,
        newer.c.fingerprint == a.c.fingerprint,
        newer.c.starts_at == a.c.starts_at,
        newer.c.received_at >= cutoff,
    )
    active_job = a.c.job_id.in_(sa.select(t.jobs.c.id).where(t.jobs.c.state.in_(_ACTIVE_JOB_STATES)))
    return sa.and_(
        a.c.received_at < cutoff,
        sa.not_(sa.and_(a.c.job_id.is_not(None), active_job)),
        sa.not_(sa.and_(a.c.incident_key.is_not(None), still_received)),
        _unreferenced(a.c.id),
    )


def _old_outages(cutoff: float) -> ColumnElement[bool]:
    o = t.wal_outages
    return sa.and_(o.c.ended_at.is_not(None), o.c.ended_at < cutoff, _unreferenced(o.c.id))


def _old_notifications(cuts: HistoryCutoffs) -> ColumnElement[bool]:
    """Return the notification rows that go: old ones, and those of events that go."""
    n = t.notifications
    parts: list[ColumnElement[bool]] = []
    if cuts.notifications is not None:
        parts.append(sa.and_(n.c.at < cuts.notifications, _unreferenced(n.c.id)))
    if cuts.events is not None:
        parts.append(n.c.event_id.in_(sa.select(t.events.c.id).where(_old_events(cuts.events))))
    return sa.or_(*parts) if parts else sa.false()


def _count(conn: Connection, table: sa.Table, where: ColumnElement[bool]) -> int:
    return int(conn.execute(sa.select(sa.func.count()).select_from(table).where(where)).scalar_one())


def prune_history(catalog: Catalog, cuts: HistoryCutoffs, *, dry_run: bool = False) -> PrunedHistory:
    """Delete (with dry_run: count) the events, alerts, notification and WAL outage rows older
    than their cutoffs that nothing holds (module docstring), in one transaction; return the
    counts. Raise CatalogError when the catalog is unreachable."""
    with catalog.begin() as conn:
        notes = _old_notifications(cuts)
        events = _old_events(cuts.events) if cuts.events is not None else sa.false()
        alerts = _old_alerts(cuts.alerts) if cuts.alerts is not None else sa.false()
        outages = _old_outages(cuts.wal_outages) if cuts.wal_outages is not None else sa.false()
        if dry_run:
            return PrunedHistory(
                events=_count(conn, t.events, events),
                alerts=_count(conn, t.alerts, alerts),
                notifications=_count(conn, t.notifications, notes),
                wal_outages=_count(conn, t.wal_outages, outages),
            )
        # Deliveries first: an event can only go once no row points at it.
        n_notes = conn.execute(t.notifications.delete().where(notes)).rowcount
        n_events = conn.execute(t.events.delete().where(events)).rowcount
        n_alerts = conn.execute(t.alerts.delete().where(alerts)).rowcount
        n_outages = conn.execute(t.wal_outages.delete().where(outages)).rowcount
    return PrunedHistory(events=n_events, alerts=n_alerts, notifications=n_notes, wal_outages=n_outages)
