"""The `copy` use case: bring every snapshot and WAL object of the primary repository to each copy
(`repositories:` after the first), and measure how far each copy is behind.

The primary is held under a shared lock (a prune there must not remove what is being read), each
copy under a shared lock too (backups and copies append side by side; a prune there waits). One
run is recorded per copy target.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from recoverctl.actions.operation import operation
from recoverctl.catalog import Catalog, recovery
from recoverctl.catalog.runs import Run, finished_runs
from recoverctl.config import Config
from recoverctl.errors import ConfigError
from recoverctl.progress import Progress
from recoverctl.recorder import RunRecorder
from recoverctl.repo.configured import open_named_repository
from recoverctl.repo.copy import CopyStats, RepositoryCopy, copy_lag, plan_copy
from recoverctl.units import human_duration

# Given a copy repository's name, return its passphrase; raise ConfigError when there is none.
PassphraseFor = Callable[[str], str]


@dataclass
class CopyTarget:
    """What one copy repository received (or, with dry_run, lacks)."""

    name: str
    url: str
    dry_run: bool
    snapshots_to_copy: int
    wal_to_copy: int
    stats: CopyStats = field(default_factory=CopyStats)
    # The source time of the newest WAL minus that of the newest WAL the copy holds, measured
    # after the run (before it, with dry_run).
    wal_lag_s: float | None = None

    def to_json(self) -> dict[str, Any]:
        s = self.stats
        return {
            "name": self.name,
            "url": self.url,
            "dry_run": self.dry_run,
            "snapshots_to_copy": self.snapshots_to_copy,
            "wal_to_copy": self.wal_to_copy,
            "wal_lag_s": self.wal_lag_s,
            "snapshots_copied": s.snapshots_copied,
            "snapshots_present": s.snapshots_present,
            "blobs_read": s.blobs_read,
            "blobs_sent": s.blobs_sent,
            "blobs_deduplicated": s.blobs_deduplicated,
            "bytes_read": s.bytes_read,
            "packs_uploaded": s.packs_uploaded,
            "bytes_uploaded": s.bytes_uploaded,
            "wal_copied": s.wal_copied,
            "wal_present": s.wal_present,
            "wal_bytes_uploaded": s.wal_bytes_uploaded,
            "copied": s.copied,
        }


@dataclass
class CopyResult:
    primary: str
    copies: list[CopyTarget]

    def to_json(self) -> dict[str, Any]:
        return {"primary": self.primary, "copies": [c.to_json() for c in self.copies]}


def copy_targets(cfg: Config, to: str | None) -> list[str]:
    """Return the copy repositories to fill: `to`, or every one after the primary. Raise
    ConfigError for an unknown name or the primary itself."""
    if to is None:
        return cfg.copy_targets()
    cfg.named_repository(to)
    if to == cfg.primary_name:
        raise ConfigError(
            f"'{to}' is the primary repository: copies go from it to the others",
            hint=f"copy targets: {', '.join(cfg.copy_targets()) or '(none: add one under repositories:)'}",
        )
    return [to]


def copy_repositories(
    cfg: Config,
    catalog: RunRecorder,
    password: str,
    passphrase_for: PassphraseFor,
    *,
    to: str | None = None,
    source: str | None = None,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> CopyResult:
    """Copy every snapshot (of `source`, if given) and WAL object missing from each copy target.

    Each target is opened (with its own passphrase) before the primary's run starts, so a wrong
    passphrase or a missing copy repository fails before anything is read or written. Return per
    target what was copied. Raise WrongKeyError, NotFoundError, LockedError, StorageError, or
    VerificationError when what arrived does not read back.
    """
    progress = progress or Progress()
    result = CopyResult(primary=cfg.require_repository().url, copies=[])
    for name in copy_targets(cfg, to):
        dst = open_named_repository(cfg, name, passphrase_for(name))
        with (
            dst,
            operation(
                cfg,
                password,
                "copy",
                recorder=None if dry_run else catalog,
                source=source,
                lock="reader" if dry_run else "shared",
                lock_name="copy",
            ) as op,
            dst.lock(operation=f"copy from {op.repo.id[:8]}", reader=dry_run),
        ):
            plan = plan_copy(op.repo, dst, source=source)
            target = CopyTarget(name, dst.url, dry_run, len(plan.snapshots), len(plan.wal))
            target.stats.snapshots_present = plan.snapshots_present
            target.stats.wal_present = plan.wal_present
            if dry_run:
                target.wal_lag_s = copy_lag(op.repo, dst, source=source).wal_lag_s
            else:

                def report(counters: dict[str, Any], name: str = name) -> None:
                    progress.update({"copy": name, **counters})

                copier = RepositoryCopy(op.repo, dst, progress=report)
                target.stats = copier.run(plan)
                # Measured at the end, so `status` can tell from the catalog how far behind it is.
                lag = copy_lag(op.repo, dst, source=source)
                target.wal_lag_s = lag.wal_lag_s
                op.finish(
                    "succeeded",
                    bytes_read=target.stats.bytes_read,
                    bytes_added=target.stats.bytes_uploaded + target.stats.wal_bytes_uploaded,
                    details={"to": name, "url": dst.url, **target.to_json(), "lag": dataclasses.asdict(lag)},
                )
            result.copies.append(target)
    return result


# Run kinds that write a snapshot into the primary.
BACKUP_KINDS = ("backup", "backup-postgres")


@dataclass
class CopyStatus:
    """How far one copy repository is behind, from the runs the catalog holds: snapshots backed
    up since its last copy started, and WAL archived after the newest WAL the copy holds."""

    name: str
    url: str
    status: str  # green / amber / red
    reason: str
    last_copy_at: float | None
    snapshots_missing: int | None
    wal_lag_s: float | None


def _backups_since(catalog: Catalog, since: float) -> int:
    runs: list[Run] = []
    for kind in BACKUP_KINDS:
        runs += finished_runs(catalog, kind, limit=1000)
    return sum(1 for r in runs if r.started_at >= since and r.status in ("succeeded", "partial"))


def copy_status(cfg: Config, catalog: Catalog, now: float | None = None) -> list[CopyStatus]:
    """Return, per copy repository, its lag as far as the catalog knows it (no repository is
    opened: `status` reads the catalog alone; `copy --dry-run` measures the repositories)."""
    now = time.time() if now is None else now
    targets = cfg.copy_targets()
    if not targets:
        return []
    runs = finished_runs(catalog, "copy", with_details=True, limit=200)
    rpo = min((cfg.targets.for_tier(s.tier).rpo for s in cfg.sources.values()), default=None)
    archived = [recovery.wal_progress(catalog, n) for n, s in cfg.sources.items() if s.type == "postgres"]
    newest_archived = max((w.last_archived_at or 0.0 for w in archived if w is not None), default=None)
    out = []
    for name in targets:
        url = cfg.named_repository(name).url
        mine = [r for r in runs if isinstance(r.details, dict) and r.details.get("to") == name]
        ok = next((r for r in mine if r.status == "succeeded"), None)
        if ok is None:
            why = f"never copied to '{name}'" + (f": last copy failed: {mine[0].error}" if mine else "")
            out.append(CopyStatus(name, url, "red", why + " (run 'recoverctl copy')", None, None, None))
            continue
        missing = _backups_since(catalog, ok.started_at)
        lag_doc = ok.details.get("lag") or {}
        wal_newest = lag_doc.get("wal_newest_at")
        wal_lag = None
        if newest_archived is not None and wal_newest is not None:
            wal_lag = max(0.0, newest_archived - float(wal_newest))
        status, reason = "green", f"last copy {int(now - ok.started_at)}s ago"
        if mine[0].status != "succeeded":
            status, reason = "red", f"last copy failed: {mine[0].error}"
        elif missing or (wal_lag is not None and rpo is not None and wal_lag > rpo):
            status = "amber"
        reason += f", {missing} snapshot(s) not copied yet"
        if wal_lag is not None:
            reason += f", WAL {human_duration(wal_lag)} behind"
        out.append(CopyStatus(name, url, status, reason, ok.started_at, missing, wal_lag))
    return out
