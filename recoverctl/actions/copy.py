"""The `copy` use case: bring every snapshot and WAL object of the primary repository to each copy
(`repositories:` after the first), and measure how far each copy is behind.

The primary is held under a shared lock (a prune there must not remove what is being read), each
copy under a shared lock too (backups and copies append side by side; a prune there waits). One
run is recorded per copy target.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from recoverctl.actions.operation import operation
from recoverctl.config import Config
from recoverctl.errors import ConfigError
from recoverctl.progress import Progress
from recoverctl.recorder import RunRecorder
from recoverctl.repo.configured import open_named_repository
from recoverctl.repo.copy import CopyStats, RepositoryCopy, copy_lag, plan_copy

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

    def to_json(self) -> dict[str, Any]:
        s = self.stats
        return {
            "name": self.name,
            "url": self.url,
            "dry_run": self.dry_run,
            "snapshots_to_copy": self.snapshots_to_copy,
            "wal_to_copy": self.wal_to_copy,
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


@dataclass
class CopyLagRow:
    name: str
    url: str
    snapshots_missing: int | None
    wal_missing: int | None
    wal_lag_s: float | None
    error: str | None = None


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
            if not dry_run:

                def report(text: str, name: str = name) -> None:
                    progress.update({"copy": name, "now": text})

                copier = RepositoryCopy(op.repo, dst, progress=report)
                target.stats = copier.run(plan)
                op.finish(
                    "succeeded",
                    bytes_read=target.stats.bytes_read,
                    bytes_added=target.stats.bytes_uploaded + target.stats.wal_bytes_uploaded,
                    details={"to": name, "url": dst.url, **target.to_json()},
                )
            result.copies.append(target)
    return result


def copy_lags(cfg: Config, password: str, passphrase_for: PassphraseFor) -> list[CopyLagRow]:
    """Return how far each copy repository is behind the primary; a copy that cannot be opened
    is listed with its error instead of failing the whole status."""
    from recoverctl.errors import RecoverctlError
    from recoverctl.repo.configured import open_repository

    targets = cfg.copy_targets()
    if not targets:
        return []
    rows = []
    with open_repository(cfg, password) as src:
        for name in targets:
            url = cfg.named_repository(name).url
            try:
                with open_named_repository(cfg, name, passphrase_for(name)) as dst:
                    lag = copy_lag(src, dst)
            except RecoverctlError as e:
                rows.append(CopyLagRow(name, url, None, None, None, error=e.message))
                continue
            rows.append(CopyLagRow(name, url, lag.snapshots_missing, lag.wal_missing, lag.wal_lag_s))
    return rows
