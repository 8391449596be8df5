"""`status`: the one screen an on-call engineer reads first, from the catalog alone.

Per source: last full and incremental backup age vs schedule, RPO exposure (WAL archive lag) vs
target, last drill vs targets, last repository verify. Per service: current release and last
rollback. Each item is green, amber or red with a reason; red means a target is breached.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from croniter import croniter

from recoverctl.actions.copy import CopyStatus, copy_status
from recoverctl.actions.wal_stream import receiver_verdict
from recoverctl.catalog import Catalog
from recoverctl.catalog.drills import ever_drilled, last_scored_drill
from recoverctl.catalog.recovery import LastBackups, last_backups, rpo_exposure
from recoverctl.catalog.releases import newest_release_in
from recoverctl.catalog.rollbacks import last_started_rollback_in
from recoverctl.catalog.runs import finished_runs
from recoverctl.catalog.wal import WalOutage, outages
from recoverctl.config import Config, redact_url
from recoverctl.scheduler.health import SchedulerHealth, scheduler_health
from recoverctl.units import human_duration, human_size

GREEN, AMBER, RED = "green", "amber", "red"
_RANK = {GREEN: 0, AMBER: 1, RED: 2}

# Without a schedule, the runbook's cadence: daily full, hourly incremental (daily if non-critical).
DEFAULT_FULL_INTERVAL = 86400.0
DRILL_MAX_AGE = 7 * 86400.0
VERIFY_MAX_AGE = 7 * 86400.0
# Amber once exposure has used this share of the RPO target.
RPO_AMBER_SHARE = 0.8


def worst(*statuses: str) -> str:
    return max(statuses, key=lambda s: _RANK[s], default=GREEN)


@dataclass(frozen=True)
class StatusItem:
    """One green/amber/red line and the figures behind it (`values`; their keys depend on the
    item: ages for backups, exposure for RPO, the drill's numbers, the verify's result)."""

    status: str
    reason: str
    values: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "reason": self.reason, **self.values}


@dataclass(frozen=True)
class SourceStatus:
    source: str
    type: str
    tier: str
    targets: dict[str, float]
    status: str
    reasons: list[str]
    items: dict[str, StatusItem]

    def to_json(self) -> dict[str, Any]:
        return {
            **{f.name: getattr(self, f.name) for f in fields(self) if f.name != "items"},
            "items": {k: v.to_json() for k, v in self.items.items()},
        }


@dataclass(frozen=True)
class ReleaseRef:
    id: int
    version: str
    status: str
    at: float


@dataclass(frozen=True)
class RollbackRef:
    id: int
    state: str
    at: float
    reason: str | None


@dataclass(frozen=True)
class ServiceStatus:
    service: str
    status: str
    reasons: list[str]
    release: ReleaseRef | None
    last_rollback: RollbackRef | None


@dataclass(frozen=True)
class Status:
    """The whole status screen: overall colour, repository, sources, services, scheduler."""

    status: str
    at: float
    repository: StatusItem
    sources: list[SourceStatus]
    services: list[ServiceStatus]
    scheduler: SchedulerHealth
    copies: list[CopyStatus] = field(default_factory=list)

    @property
    def breached(self) -> bool:
        """True when a target is breached (the overall status is red)."""
        return self.status == RED

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "breached": self.breached,
            "at": self.at,
            "repository": self.repository.to_json(),
            "sources": [s.to_json() for s in self.sources],
            "services": [asdict(s) for s in self.services],
            # Reported, not folded into the overall status: cron-mode setups have no loop to watch.
            "scheduler": self.scheduler.to_json(),
            "copies": [asdict(c) for c in self.copies],
        }


def _item(status: str, reason: str, **values: Any) -> StatusItem:
    return StatusItem(status, reason, values)


def schedule_interval(cfg: Config, source: str, kind: str, now: float) -> tuple[float, str] | None:
    """Return (seconds between runs, schedule name) of the schedule backing up `source` as `kind`."""
    for s in cfg.schedules:
        job = s.job.split()
        if not s.enabled or "backup" not in job or source not in job:
            continue
        job_kind = "incremental" if "incremental" in job else "full"
        if "--logical" in job or job_kind != kind:
            continue
        try:
            it = croniter(s.cron, datetime.fromtimestamp(now, UTC))
            a = it.get_next(float)
            b = it.get_next(float)
        except (ValueError, KeyError):
            continue
        return float(b - a), s.name
    return None


def _age_item(
    what: str, at: float | None, expected: float, schedule: str | None, now: float, required: bool
) -> StatusItem:
    basis = f"schedule '{schedule}'" if schedule else "default cadence"
    if at is None:
        if not required:
            return _item(GREEN, f"no {what} backups (none scheduled)", at=None, age_s=None, expected_s=None)
        return _item(RED, f"no {what} backup recorded", at=None, age_s=None, expected_s=expected)
    age = now - at
    values = {"at": at, "age_s": round(age, 1), "expected_s": expected, "basis": basis}
    # Grace of a quarter interval (at least 5 minutes) for a run that is simply in progress.
    if age <= expected + max(expected * 0.25, 300):
        return _item(
            GREEN, f"last {what} {human_duration(age)} ago (every {human_duration(expected)})", **values
        )
    if age <= 2 * expected:
        return _item(
            AMBER,
            f"last {what} {human_duration(age)} ago, overdue (every {human_duration(expected)})",
            **values,
        )
    return _item(
        RED,
        f"last {what} {human_duration(age)} ago, missed (every {human_duration(expected)}, {basis})",
        **values,
    )


def _gap_text(outage: WalOutage, now: float) -> str:
    """Given the open WAL gap of a source, return ' (N failed attempts over 5m00s: error)'."""
    attempts = f"{outage.failures} failed attempt{'s' if outage.failures != 1 else ''}"
    error = f": {outage.error[:200]}" if outage.error else ""
    return f" ({attempts} over {human_duration(outage.duration(now))}{error})"


def _rpo_item(catalog: Catalog, source: str, target: float, backups: LastBackups, now: float) -> StatusItem:
    measured = rpo_exposure(catalog, source, now, backups=backups)
    point, wal = measured.point, measured.point.wal
    if measured.exposure_s is None:
        return _item(
            RED, "nothing recoverable recorded: no backup, no archived WAL", exposure_s=None, target_s=target
        )
    exposure, basis = measured.exposure_s, point.basis
    values: dict[str, Any] = {
        "exposure_s": round(exposure, 1),
        "target_s": target,
        "basis": basis,
        "last_archived_at": wal.last_archived_at if wal is not None else None,
        "last_segment": wal.last_segment if wal is not None else None,
    }
    failing = wal is not None and wal.failing
    failed_segment = wal.last_failed_segment if wal is not None and failing else None
    gap = ""
    if failing:
        values["last_failed_segment"] = failed_segment
        values["last_failed_at"] = wal.last_failed_at if wal is not None else None
        outage = next(iter(outages(catalog, sources=[source], limit=1)), None)
        if outage is not None and outage.ongoing:
            failed_segment, gap = outage.first_failed_segment, _gap_text(outage, now)
            values["wal_gap"] = {
                "started_at": outage.started_at,
                "first_failed_segment": outage.first_failed_segment,
                "failures": outage.failures,
                "error": outage.error,
            }
    if exposure > target:
        return _item(
            RED,
            f"RPO exposure {human_duration(exposure)} ({exposure:.0f}s) exceeds the target "
            f"{human_duration(target)} ({target:.0f}s), from the {basis}"
            + (f"; archiving failing since {failed_segment}{gap}" if failing else ""),
            **values,
        )
    if failing:
        return _item(AMBER, f"WAL archiving failing since segment {failed_segment}{gap}", **values)
    if exposure > RPO_AMBER_SHARE * target:
        return _item(
            AMBER,
            f"RPO exposure {human_duration(exposure)} is close to the target {human_duration(target)}",
            **values,
        )
    return _item(
        GREEN, f"RPO exposure {human_duration(exposure)} (target {human_duration(target)})", **values
    )


def _drill_item(catalog: Catalog, source: str, now: float) -> StatusItem:
    row = last_scored_drill(catalog, source)
    if row is None:
        return _item(AMBER, "never drilled: no restore has been proven", id=None)
    values = {
        "id": row.id,
        "name": row.name,
        "verdict": row.verdict,
        "at": row.started_at,
        "rto_s": row.rto_s,
        "rto_target_s": row.rto_target_s,
        "rpo_s": row.rpo_s,
        "rpo_target_s": row.rpo_target_s,
    }
    age = now - row.started_at
    if row.verdict == "fail":
        return _item(RED, f"last drill #{row.id} '{row.name}' failed: {row.reason}", **values)
    measured = (
        f"RTO {human_duration(row.rto_s)}/{human_duration(row.rto_target_s)}, "
        f"RPO {human_duration(row.rpo_s)}/{human_duration(row.rpo_target_s)}"
    )
    if age > DRILL_MAX_AGE:
        return _item(
            AMBER, f"last drill passed {human_duration(age)} ago ({measured}): drill again", **values
        )
    return _item(GREEN, f"last drill #{row.id} passed {human_duration(age)} ago ({measured})", **values)


def repository_url(cfg: Config) -> str | None:
    """Return the configured repository's URL as its storage names it in run records (no I/O)."""
    if cfg.repository is None:
        return None
    url = cfg.repository.url
    scheme = urlsplit(url).scheme
    # Mirrors the backends' own `url`: local paths absolute with file://, others redacted.
    if scheme in ("", "file"):
        return f"file://{Path(urlsplit(url).path if scheme == 'file' else url).expanduser().absolute()}"
    return redact_url(url.rstrip("/"))


def _repository_item(catalog: Catalog, now: float, url: str | None) -> StatusItem:
    """Return the repository item: last verify (status and age) and the size it measured."""
    verify = next(iter(finished_runs(catalog, "verify", repository=url)), None)
    measured = None
    for row in finished_runs(catalog, "verify", repository=url, with_details=True, limit=20):
        d = row.details if isinstance(row.details, dict) else {}
        if isinstance(d.get("repository_bytes"), int | float):
            measured = (row, d)
            break
    values: dict[str, Any] = {"url": url, "size_bytes": None, "size_measured_at": None}
    if measured is not None:
        row, d = measured
        raw = d.get("usage")
        usage: dict[str, Any] = raw if isinstance(raw, dict) else {}
        values.update(
            size_bytes=d["repository_bytes"],
            size_measured_at=row.finished_at or row.started_at,
            size_by_prefix=usage.get("by_prefix"),
            objects=usage.get("objects"),
        )
    if verify is None:
        return _item(AMBER, "repository never verified", last_verify=None, **values)
    details = verify.details if isinstance(verify.details, dict) else {}
    values["last_verify"] = {
        "at": verify.started_at,
        "finished_at": verify.finished_at,
        "status": verify.status,
        "error": verify.error,
        "packs_total": details.get("packs_total"),
        "packs_read": details.get("packs_read"),
        "damaged_packs": details.get("damaged_packs"),
    }
    age = now - verify.started_at
    size = f", {human_size(values['size_bytes'])}" if values["size_bytes"] is not None else ""
    if verify.status != "succeeded":
        return _item(
            RED,
            f"last verify {human_duration(age)} ago {verify.status}: {verify.error or ''}".strip(),
            **values,
        )
    if age > VERIFY_MAX_AGE:
        return _item(AMBER, f"last verify {human_duration(age)} ago{size}", **values)
    return _item(GREEN, f"verified {human_duration(age)} ago{size}", **values)


def _service_entry(catalog: Catalog, name: str) -> ServiceStatus:
    with catalog.begin() as conn:
        release = newest_release_in(conn, name)
        rollback = last_started_rollback_in(conn, name)
    reasons: list[str] = []
    status = GREEN
    current = None
    if release is None:
        status, reasons = AMBER, ["no release recorded"]
    else:
        current = ReleaseRef(release.id, release.version, release.status, release.created_at)
        if release.status == "failed":
            status = RED
            reasons.append(f"release {release.version} failed")
        elif release.status == "deploying":
            status = AMBER
            reasons.append(f"release {release.version} is deploying")
        else:
            reasons.append(f"release {release.version} ({release.status})")
    last_rb = None
    if rollback is not None:
        last_rb = RollbackRef(rollback.id, rollback.state, rollback.started_at, rollback.reason)
        if rollback.state in ("failed", "interrupted"):
            status = RED
            reasons.append(
                f"last rollback #{rollback.id} {rollback.state}: "
                f"{rollback.error or rollback.reason or ''}".strip()
            )
        elif rollback.state == "running":
            status = worst(status, AMBER)
            reasons.append(f"rollback #{rollback.id} running")
        else:
            reasons.append(f"last rollback #{rollback.id} {rollback.state}")
    return ServiceStatus(name, status, reasons, current, last_rb)


def _source_status(cfg: Config, catalog: Catalog, name: str, now: float) -> SourceStatus:
    """Return the status of source `name`: backups by type, RPO exposure and (where it applies)
    the last drill."""
    src = cfg.sources[name]
    targets = cfg.targets.for_tier(src.tier)
    backups = last_backups(catalog, name)
    full_sched = schedule_interval(cfg, name, "full", now)
    incr_sched = schedule_interval(cfg, name, "incremental", now)
    items: dict[str, StatusItem] = {
        "full_backup": _age_item(
            "full",
            backups.full,
            full_sched[0] if full_sched else DEFAULT_FULL_INTERVAL,
            full_sched[1] if full_sched else None,
            now,
            required=True,
        ),
        "incremental_backup": _age_item(
            "incremental",
            backups.incremental,
            incr_sched[0] if incr_sched else float(targets.rpo),
            incr_sched[1] if incr_sched else None,
            now,
            # Incrementals only matter where they are scheduled or have been taken.
            required=incr_sched is not None,
        ),
        "rpo": _rpo_item(catalog, name, float(targets.rpo), backups, now),
    }
    streaming = receiver_verdict(cfg, catalog, name, now)
    if streaming is not None:
        items["wal_stream"] = _item(streaming[0], streaming[1], **streaming[2])
    # File and volume drills are optional: their item shows once one was run.
    if src.type == "postgres" or ever_drilled(catalog, name):
        items["drill"] = _drill_item(catalog, name, now)
    return SourceStatus(
        source=name,
        type=src.type,
        tier=src.tier,
        targets={"rto_s": float(targets.rto), "rpo_s": float(targets.rpo)},
        status=worst(*(i.status for i in items.values())),
        reasons=[f"{k}: {v.reason}" for k, v in items.items() if v.status != GREEN],
        items=items,
    )


def status(cfg: Config, catalog: Catalog, now: float | None = None) -> Status:
    """Return the overall status: sources and services, each green/amber/red with reasons."""
    now = time.time() if now is None else now
    repository = _repository_item(catalog, now, repository_url(cfg))
    sources = [_source_status(cfg, catalog, name, now) for name in sorted(cfg.sources)]
    services = [_service_entry(catalog, n) for n in sorted(cfg.services)]
    copies = copy_status(cfg, catalog, now)
    overall = worst(
        repository.status,
        *(s.status for s in sources),
        *(s.status for s in services),
        *(c.status for c in copies),
    )
    return Status(overall, now, repository, sources, services, scheduler_health(cfg, catalog, now), copies)
