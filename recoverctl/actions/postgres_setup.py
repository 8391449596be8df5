"""`postgres setup|restore-point|status`: archiving settings, named restore points, RPO exposure."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any

from recoverctl.actions.wal_stream import receiver_lags
from recoverctl.catalog import Catalog, recovery
from recoverctl.catalog import wal as catalog_wal
from recoverctl.config import Config, PostgresSource, loose_config_mode
from recoverctl.errors import UsageError
from recoverctl.sources.postgres.connection import connect
from recoverctl.sources.postgres.settings import (
    apply_settings,
    archive_timeout_of,
    archiver_status,
    archiving_plan,
    archiving_refusal,
    create_named_point,
    refuse_unreachable_settings,
    switch_wal,
)


@dataclass
class ArchivingSetup:
    """The archiving settings of a source: per setting current/wanted/change/restart."""

    source: str
    settings: list[dict[str, Any]]
    applied: bool
    changes: int
    restart_needed: bool
    warnings: list[str]


@dataclass
class CreatedRestorePoint:
    id: int
    source: str
    name: str
    lsn: str
    timeline: int
    time: float


@dataclass
class ArchiveCheck:
    """A forced WAL switch whose segment reached the repository."""

    source: str
    segment: str
    archived_after_s: float
    ok: bool = True


@dataclass(frozen=True)
class SourceRpo:
    """One postgres source's RPO exposure against its tier's target. `last_archived_at` is the
    newest archived WAL (recorded or seen live); `exposure_s` is measured from the source's
    recovery point (`catalog.recovery`), which a newer backup moves forward as `status` does.
    `archiver` is the live pg_stat_archiver row, None when the server could not be reached."""

    source: str
    tier: str
    rpo_target_s: float
    last_archived_segment: str | None
    last_archived_at: float | None
    exposure_s: float | None
    within_target: bool
    segments_archived: int
    server_reachable: bool
    archiver: dict[str, Any] | None = None
    # The server's archive_timeout and the loss bound archive mode guarantees with it (None when
    # archive_timeout is off); both absent when the server could not be reached.
    archive_timeout_s: int | None = None
    archive_bound_s: float | None = None
    has_archive_timeout: bool = False
    # The streaming receiver's lag (sources in `wal: {mode: stream}` only; None while it has not
    # reported).
    stream: dict[str, Any] | None = None
    streams: bool = False

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        del d["has_archive_timeout"], d["streams"]
        if not self.streams:
            del d["stream"]
        if self.archiver is None:
            del d["archiver"]
        if not self.has_archive_timeout:
            del d["archive_timeout_s"], d["archive_bound_s"]
        return d


@dataclass(frozen=True)
class RpoStatus:
    """Per postgres source: the RPO exposure against the tier's target (see `postgres_status`)."""

    sources: list[SourceRpo]
    at: float

    def to_json(self) -> dict[str, Any]:
        return {"sources": [s.to_json() for s in self.sources], "at": self.at}


def postgres_setup(cfg: Config, catalog: Catalog, *, source: str | None, apply: bool) -> ArchivingSetup:
    """Given a source, return the archiving settings plan; with `apply`, ALTER SYSTEM + reload.

    The result says whether a restart is still needed (wal_level/archive_mode are postmaster
    settings). Raise RecoverctlError when the server is unreachable, ConfigError (exit 2) when
    archive_command, run by the server, could not see the configuration we see (a `${VAR}`, a
    passphrase or catalog URL only this shell has): never a silently failing archiver.
    """
    name, src = cfg.source(source, "postgres")
    with connect(src, name) as conn:
        refuse_unreachable_settings(cfg, name, conn)
        plan = archiving_plan(cfg, name, conn)
        changes = [i for i in plan if i["change"]]
        applied = False
        if apply and changes:
            apply_settings(conn, {i["name"]: i["wanted"] for i in changes})
            applied = True
            catalog.audit(
                "postgres.setup", name, "applied", {"settings": {i["name"]: i["wanted"] for i in changes}}
            )
        restart = any(i["restart"] for i in changes)
    # The server's OS user must read the config file: a secret inline in it must not be
    # readable by more than that.
    warning = loose_config_mode(cfg)
    return ArchivingSetup(
        source=name,
        settings=plan,
        applied=applied,
        changes=len(changes),
        restart_needed=restart,
        warnings=[warning] if warning else [],
    )


def create_restore_point(
    cfg: Config, catalog: Catalog, *, source: str | None, name: str
) -> CreatedRestorePoint:
    """Create a named restore point on the source and record it; return its LSN and timeline."""
    if not name or len(name) >= 64:
        raise UsageError(f"restore point name '{name}' must be 1-63 characters (PostgreSQL's limit)")
    src_name, src = cfg.source(source, "postgres")
    with connect(src, src_name) as conn:
        lsn, timeline, at = create_named_point(conn, src_name, name)
    rp_id = catalog_wal.add_restore_point(catalog, src_name, name, lsn, timeline, at)
    catalog.audit("postgres.restore-point", src_name, "created", {"name": name, "lsn": lsn})
    return CreatedRestorePoint(id=int(rp_id), source=src_name, name=name, lsn=lsn, timeline=timeline, time=at)


def postgres_status(
    cfg: Config, catalog: Catalog, *, source: str | None = None, now: float | None = None
) -> RpoStatus:
    """Return, per postgres source, the RPO exposure at `now` (default: the current time) against
    the tier's target: the catalog's recovery point (`recovery.rpo_exposure`, as `status`,
    `summary` and /metrics measure it) with the live server's last archived WAL (pg_stat_archiver)
    folded in, since the server may have archived past what the catalog heard of."""
    names = (
        [cfg.source(source, "postgres")[0]]
        if source
        else [n for n, s in cfg.sources.items() if s.type == "postgres"]
    )
    now = time.time() if now is None else now
    return RpoStatus(sources=[_source_rpo(cfg, catalog, name, now) for name in names], at=now)


def _source_rpo(cfg: Config, catalog: Catalog, name: str, now: float) -> SourceRpo:
    src = cfg.sources[name]
    assert isinstance(src, PostgresSource)
    point = recovery.rpo_exposure(catalog, name, now).point
    wal = point.wal
    live = archiver_status(src, name)
    live_at = live.get("last_archived_at") if live else None
    _, exposure = recovery.exposure_at(now, point.at, live_at)
    last_at = max((t for t in (point.last_archived_at, live_at) if t is not None), default=None)
    target = cfg.targets.for_tier(src.tier).rpo
    return SourceRpo(
        source=name,
        tier=src.tier,
        rpo_target_s=target,
        last_archived_segment=(wal.last_segment if wal else None) or (live or {}).get("last_archived_wal"),
        last_archived_at=last_at,
        exposure_s=None if exposure is None else round(exposure, 1),
        within_target=exposure is not None and exposure <= target,
        segments_archived=wal.segments_total if wal else 0,
        server_reachable=live is not None,
        archiver=live,
        **archive_bound(src, name),
        **_stream_lag(cfg, catalog, src, name, now),
    )


def _stream_lag(cfg: Config, catalog: Catalog, src: PostgresSource, name: str, now: float) -> dict[str, Any]:
    """Return the streaming receiver's lag fields of a source in stream mode, {} otherwise."""
    if src.wal.mode != "stream":
        return {}
    lag = receiver_lags(cfg, catalog, now).get(name)
    return {"streams": True, "stream": dataclasses.asdict(lag) if lag else None}


def archive_bound(src: PostgresSource, name: str) -> dict[str, Any]:
    """Return the server's archive_timeout and the RPO bound archive mode guarantees with it
    (`archive_bound_s`, None when archive_timeout is off: a quiet server may never switch a
    segment, so nothing bounds the loss), or {} when the server cannot be reached."""
    timeout_s = archive_timeout_of(src, name)
    if timeout_s is None:
        return {}
    return {
        "archive_timeout_s": timeout_s,
        "archive_bound_s": float(timeout_s) if timeout_s > 0 else None,
        "has_archive_timeout": True,
    }


def postgres_check(
    cfg: Config, catalog: Catalog, password: str, *, source: str | None, timeout: float = 60.0
) -> ArchiveCheck:
    """Force a WAL switch and wait until that segment is in the repository; return timings.

    Raise ConfigError (exit 2) when archiving is not configured, VerificationError (exit 13)
    when the segment does not arrive within `timeout`.
    """
    from recoverctl.repo.configured import open_repository
    from recoverctl.sources.postgres.walarchive import wait_for_wal

    name, src = cfg.source(source, "postgres")
    with connect(src, name) as conn:
        refusal = archiving_refusal(name, archiving_plan(cfg, name, conn))
        if refusal is not None:
            raise refusal
        segment = switch_wal(conn)
    with open_repository(cfg, password) as repo:
        try:
            waited = wait_for_wal(repo, name, segment, segment, timeout)
        except Exception:
            catalog.audit("postgres.check", name, "failed", {"segment": segment})
            raise
    catalog.audit("postgres.check", name, "succeeded", {"segment": segment, "seconds": waited})
    return ArchiveCheck(source=name, segment=segment, archived_after_s=round(waited, 3))
