"""View models of the console's pages: catalog records shaped for the templates and the charts.

Board states are not computed here: the board renders the `Status` of `recoverctl status` as it
is; this module only adds what a page shows beside it (the previous good release, a drill's trend,
a rollback's steps with their durations).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy.exc import NoResultFound

from recoverctl.catalog import Catalog, incidents
from recoverctl.catalog.drills import DrillRecord, drill_record, newest_drills
from recoverctl.catalog.incidents import Incident, TimelineEntry
from recoverctl.catalog.releases import Release, get_release, release_history
from recoverctl.catalog.rollbacks import Rollback, RollbackStep, get_rollback, list_steps
from recoverctl.catalog.runs import Run, finished_runs
from recoverctl.catalog.snapshots import SnapshotRecord, snapshot_record
from recoverctl.catalog.wal import with_wal_gaps
from recoverctl.errors import NotFoundError

# Drills a trend chart shows at most (a year of daily drills stays readable on a 640 px chart).
TREND_DRILLS = 400
SCORED = ("pass", "fail")


@dataclass(frozen=True)
class ReleasePair:
    """What runs now and what a rollback would go back to."""

    live: Release | None
    previous_good: Release | None


def release_pair(catalog: Catalog, service: str) -> ReleasePair:
    """Given a service, return its live release and the newest older release that was good."""
    history = release_history(catalog, service)
    live = next((r for r in history if r.status == "live"), None)
    older = [r for r in history if live is None or r.id < live.id]
    previous = next((r for r in older if r.status in ("good", "live") and r is not live), None)
    return ReleasePair(live, previous)


@dataclass(frozen=True)
class Trend:
    """Scored drills of one source, oldest first, and the phases of the newest one."""

    source: str
    drills: list[DrillRecord]
    latest: DrillRecord | None

    def to_json(self) -> dict[str, Any]:
        """Return the data trend.js draws (see its header)."""
        latest = asdict(self.latest) if self.latest is not None else None
        return trend_payload(self.source, [asdict(d) for d in self.drills], latest)


# The order a drill runs its phases in (the catalog may hand them back sorted by name).
PHASE_ORDER = ("select", "fetch", "recovery", "startup", "checks")


def _in_drill_order(phases: Mapping[str, float]) -> list[tuple[str, float]]:
    rank = {name: i for i, name in enumerate(PHASE_ORDER)}
    return sorted(phases.items(), key=lambda kv: rank.get(kv[0], len(rank)))


def trend_payload(
    source: str | None, drills: Sequence[Mapping[str, Any]], latest: Mapping[str, Any] | None
) -> dict[str, Any]:
    """Given drills as mappings (oldest first; drill records or `drill history` rows) and the
    drill whose phases to show, return the data trend.js draws (see its header)."""
    return {
        "source": source,
        "drills": [
            {
                "id": d["id"],
                "at": d["started_at"],
                "verdict": d.get("verdict"),
                "rto_s": d.get("rto_s"),
                "rpo_s": d.get("rpo_s"),
                "rto_target_s": d.get("rto_target_s"),
                "rpo_target_s": d.get("rpo_target_s"),
            }
            for d in drills
            if d.get("verdict") in SCORED
        ],
        # Pairs, not an object: JSON encoders may sort keys, and the bar follows the drill's order.
        "phases": _in_drill_order(latest.get("phases") or {}) if latest is not None else [],
        "phases_of": latest["id"] if latest is not None else None,
    }


def trend(catalog: Catalog, source: str, limit: int = TREND_DRILLS) -> Trend:
    """Given a source, return its scored drills (newest `limit`) for the trend charts."""
    drills = [d for d in newest_drills(catalog, source=source, limit=limit) if d.verdict in SCORED]
    drills.reverse()
    return Trend(source, drills, drills[-1] if drills else None)


@dataclass(frozen=True)
class DrillPage:
    drill: DrillRecord
    trend: Trend

    @property
    def phases(self) -> list[tuple[str, float]]:
        """The drill's phase durations in the order it ran them."""
        return _in_drill_order(self.drill.phases or {})


def drill_page(catalog: Catalog, drill_id: int) -> DrillPage:
    """Given a drill id, return the drill and its source's trend; raise NotFoundError."""
    drill = drill_record(catalog, drill_id)
    if drill is None:
        raise NotFoundError(f"drill #{drill_id} does not exist in the catalog")
    history = trend(catalog, drill.source) if drill.source else Trend("", [], None)
    # The phase bar shows this drill, not the source's newest one.
    return DrillPage(drill, Trend(history.source, history.drills, drill))


@dataclass(frozen=True)
class StepView:
    step: RollbackStep

    @property
    def duration_s(self) -> float | None:
        s = self.step
        return s.finished_at - s.started_at if s.finished_at and s.started_at else None


@dataclass(frozen=True)
class RollbackPage:
    rollback: Rollback
    steps: list[StepView]
    from_release: Release | None
    to_release: Release | None

    @property
    def duration_s(self) -> float | None:
        r = self.rollback
        return r.finished_at - r.started_at if r.finished_at else None


def _release_or_none(catalog: Catalog, release_id: int | None) -> Release | None:
    if release_id is None:
        return None
    try:
        return get_release(catalog, release_id)
    except NotFoundError:
        return None


def rollback_page(catalog: Catalog, rollback_id: int) -> RollbackPage:
    """Given a rollback id, return it with its steps and both releases; raise NotFoundError."""
    try:
        rollback = get_rollback(catalog, rollback_id)
    except NoResultFound:
        raise NotFoundError(f"rollback #{rollback_id} does not exist in the catalog") from None
    return RollbackPage(
        rollback,
        [StepView(s) for s in list_steps(catalog, rollback_id)],
        _release_or_none(catalog, rollback.from_release),
        _release_or_none(catalog, rollback.to_release),
    )


@dataclass(frozen=True)
class SnapshotPage:
    snapshot: SnapshotRecord
    # The newest finished verify of the snapshot's repository (verify checks a repository's packs,
    # not one snapshot), None when it was never verified.
    last_verify: Run | None

    @property
    def summary(self) -> dict[str, Any]:
        return self.snapshot.summary if isinstance(self.snapshot.summary, dict) else {}

    @property
    def dedup_ratio(self) -> float | None:
        """Share of the bytes read that were already in the repository (0..1)."""
        read, added = self.summary.get("bytes_read"), self.summary.get("bytes_added")
        if not isinstance(read, int | float) or not isinstance(added, int | float) or not read:
            return None
        return max(0.0, 1.0 - added / read)


def snapshot_page(catalog: Catalog, snapshot_id: str) -> SnapshotPage:
    """Given a snapshot id, return its catalog record; raise NotFoundError."""
    snap = snapshot_record(catalog, snapshot_id)
    if snap is None:
        raise NotFoundError(
            f"snapshot {snapshot_id} is not in the catalog",
            hint="run `recoverctl catalog sync` if it exists in the repository",
        )
    verify = next(iter(finished_runs(catalog, "verify", repository=snap.repository)), None)
    return SnapshotPage(snap, verify)


# Open incidents the board lists at most (a storm of more is a link to `recoverctl incidents`).
BOARD_INCIDENTS = 50


@dataclass(frozen=True)
class OpenIncidents:
    """The active incidents (open, acknowledged, reopened), newest first, and per subject."""

    all: list[Incident]

    def about(self, subject: str) -> list[Incident]:
        """Return the active incidents about source or service `subject`."""
        return [i for i in self.all if i.subject == subject]


def open_incidents(catalog: Catalog) -> OpenIncidents:
    """Return the active incidents the board shows."""
    return OpenIncidents(
        incidents.list_incidents(catalog, states=incidents.ACTIVE_STATES, limit=BOARD_INCIDENTS)
    )


@dataclass(frozen=True)
class IncidentPage:
    """An incident with its whole timeline and the rollbacks it refers to."""

    incident: Incident
    timeline: list[TimelineEntry]
    rollback_ids: list[int]

    @property
    def acknowledgeable(self) -> bool:
        """True while nobody acknowledged it (acknowledging stops its escalation)."""
        return self.incident.state in incidents.ESCALATING_STATES


def incident_page(catalog: Catalog, incident_id: int) -> IncidentPage:
    """Given an incident id, return its page; raise NotFoundError."""
    incident = incidents.get_incident(catalog, incident_id)
    entries = with_wal_gaps(catalog, incident, incidents.timeline(catalog, incident_id))
    rollback_ids = sorted({e.rollback_id for e in entries if e.rollback_id is not None})
    return IncidentPage(incident, entries, rollback_ids)
