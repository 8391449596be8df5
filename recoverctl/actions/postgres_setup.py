"""`postgres setup|restore-point|status`: archiving settings, named restore points, RPO exposure."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any

from recoverctl.actions.wal_stream import receiver_lags
from recoverctl.catalog import Catalog
from recoverctl.catalog import wal as catalog_wal
from recoverctl.config import Config, PostgresSource, loose_config_mode
from recoverctl.errors import UsageError
from recoverctl.sources.postgres.connection import connect
from recoverctl.sources.postgres.settings import (
    apply_settings,
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


@dataclass
class RpoStatus:
    """Per postgres source: the RPO exposure against the tier's target (see `postgres_status`)."""

    sources: list[dict[str, Any]]
    at: float


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


def postgres_status(cfg: Config, catalog: Catalog, *, source: str | None = None) -> RpoStatus:
    """Return, per postgres source, the RPO exposure (now - last archived WAL time) against the
    tier's target, from the live server (pg_stat_archiver) and the catalog's wal_status."""
    names = (
        [cfg.source(source, "postgres")[0]]
        if source
        else [n for n, s in cfg.sources.items() if s.type == "postgres"]
    )
    now = time.time()
    out = []
    for name in names:
        src = cfg.sources[name]
        assert isinstance(src, PostgresSource)
        status = catalog_wal.wal_status(catalog, name)
        recorded = dataclasses.asdict(status) if status else None
        live = archiver_status(src, name)
        candidates = [
            x
            for x in (
                recorded and recorded.get("last_archived_at"),
                live and live.get("last_archived_at"),
            )
            if x
        ]
        last_at = max(candidates) if candidates else None
        target = cfg.targets.for_tier(src.tier).rpo
        exposure = None if last_at is None else max(0.0, now - float(last_at))
        entry: dict[str, Any] = {
            "source": name,
            "tier": src.tier,
            "rpo_target_s": target,
            "last_archived_segment": (recorded or {}).get("last_segment")
            or (live or {}).get("last_archived_wal"),
            "last_archived_at": last_at,
            "exposure_s": None if exposure is None else round(exposure, 1),
            "within_target": exposure is not None and exposure <= target,
            "segments_archived": (recorded or {}).get("segments_total", 0),
            "server_reachable": live is not None,
        }
        if live is not None:
            entry["archiver"] = live
        if src.wal.mode == "stream":
            lag = receiver_lags(cfg, catalog, now).get(name)
            entry["stream"] = dataclasses.asdict(lag) if lag else None
        out.append(entry)
    return RpoStatus(sources=out, at=now)


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
