"""The `forget` and `prune` use cases: retention decisions, pins, S3 Object Lock, catalog upkeep."""

from __future__ import annotations

import time
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from recoverctl.actions.operation import Operation, operation
from recoverctl.catalog import Catalog
from recoverctl.catalog.retention import pinned_snapshots
from recoverctl.catalog.snapshot_sync import remove_snapshot_rows
from recoverctl.config import Config, KeepRules, RepositoryConfig
from recoverctl.errors import UsageError, WriteRefused
from recoverctl.progress import Progress
from recoverctl.repo import Repository
from recoverctl.repo import prune as pruning
from recoverctl.repo.retention import Decision, Policy, PolicyFor, apply_policy
from recoverctl.sources.postgres.walresults import WalExpiry
from recoverctl.storage.base import ObjectInfo


@dataclass
class PruneReport:
    """What a prune removed (or, with dry_run, would remove): packs, WAL, leftovers of crashed
    writes. `partial_writes_unknown` says why those leftovers could not be listed, if they could not."""

    dry_run: bool
    plan: pruning.PrunePlan
    wal: list[WalExpiry]
    partial_writes: list[str]
    partial_writes_unknown: str | None = None

    def to_json(self) -> dict[str, Any]:
        out = {
            "dry_run": self.dry_run,
            **self.plan.to_dict(),
            "wal": [w.to_json() for w in self.wal],
            "partial_writes": self.partial_writes,
        }
        if self.partial_writes_unknown is not None:
            out["partial_writes_unknown"] = self.partial_writes_unknown
        return out


@dataclass
class PruneResult:
    """The repository `prune` ran on and its report."""

    repository: str
    report: PruneReport

    def to_json(self) -> dict[str, Any]:
        return {"repository": self.repository, **self.report.to_json()}


@dataclass
class ForgetResult:
    """The retention decision per snapshot, what was removed, and the prune report with --prune."""

    dry_run: bool
    rules_from: str
    decisions: list[Decision]
    removed: list[str]
    prune: PruneReport | None = None

    @property
    def kept(self) -> int:
        return len(self.decisions) - len(self.removed)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "dry_run": self.dry_run,
            "rules_from": self.rules_from,
            "decisions": [d.to_dict() for d in self.decisions],
            "kept": self.kept,
            "removed": self.removed,
        }
        if self.prune is not None:
            out["prune"] = self.prune.to_json()
        return out


def object_lock_check(options: RepositoryConfig) -> pruning.IsLocked:
    """Return a predicate telling whether an object is still under S3 Object Lock retention."""
    days = options.s3.object_lock_days if options.s3.object_lock_mode else None

    def is_locked(o: ObjectInfo) -> bool:
        if not days:
            return False
        if o.mtime is None:
            return True  # unknown age: never try to delete what may be locked
        return o.mtime + days * 86400 > time.time()

    return is_locked


def _pins_for(pinned: dict[str, str], ids: list[str]) -> dict[str, str]:
    # Pins may name a full id or a unique prefix.
    out = {}
    for pin, reason in pinned.items():
        for sid in ids:
            if sid.startswith(pin):
                out[sid] = reason
    return out


# A write in flight takes seconds; anything this old was left by a crashed process.
PARTIAL_WRITE_AGE_S = 24 * 3600


def _prune(
    cfg: Config, repo: Repository, max_unused: float, dry_run: bool, progress: Progress | None
) -> PruneReport:
    """Given a repository under the caller's exclusive lock, delete unreferenced data, WAL no kept
    backup needs and leftovers of crashed writes; return what was (or would be) removed."""
    from recoverctl.actions.wal import postgres_sources
    from recoverctl.sources.postgres.walarchive import expire_wal_locked

    is_locked = object_lock_check(cfg.require_repository())
    p = pruning.plan(repo, max_unused, is_locked, dry_run=dry_run)
    if not dry_run:
        p = pruning.execute(repo, p, is_locked, progress)
    wal = expire_wal_locked(repo, postgres_sources(cfg), dry_run=dry_run)
    try:
        partial = repo.storage.sweep_partial_writes(time.time() - PARTIAL_WRITE_AGE_S, dry_run=dry_run)
    except WriteRefused as e:
        # Read-only credentials may not even list unfinished uploads (only writers abort them):
        # a dry run says it could not tell instead of failing the whole preview.
        if not dry_run:
            raise
        return PruneReport(dry_run, p, wal, [], e.message)
    return PruneReport(dry_run, p, wal, partial)


def _removing(
    cfg: Config, password: str, kind: str, catalog: Catalog, dry_run: bool
) -> AbstractContextManager[Operation]:
    """Return the operation of a `forget`/`prune`: exclusive and recorded, or for a dry run a
    reader that records nothing (so it also works on a read-only repository)."""
    return operation(
        cfg,
        password,
        kind,
        recorder=None if dry_run else catalog,
        lock="reader" if dry_run else "exclusive",
    )


def _from_rules(rules: KeepRules | None) -> Policy | None:
    if rules is None:
        return None
    return Policy(
        rules.keep_last,
        rules.keep_hourly,
        rules.keep_daily,
        rules.keep_weekly,
        rules.keep_monthly,
        rules.keep_yearly,
        rules.keep_within,
    )


def configured_policy(cfg: Config) -> PolicyFor:
    """Return the config's retention as a policy per source; raise UsageError when there is none."""
    retention = cfg.retention
    if retention is None:
        raise UsageError(
            "no keep rule given and no 'retention:' in the config: refusing to forget every snapshot",
            hint="give --keep-daily 30 (and the like), or add a retention block to the config, e.g. "
            "'retention: {default: {keep_hourly: 48, keep_daily: 30, keep_weekly: 13}}' "
            "(printed by 'recoverctl scheduler init')",
        )
    return lambda source: _from_rules(retention.rules_for(source))


def forget(
    cfg: Config,
    catalog: Catalog,
    password: str,
    policy: Policy | None = None,
    *,
    tags: dict[str, str] | None = None,
    kind: str | None = None,
    prune: bool = False,
    max_unused: float = 5.0,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> ForgetResult:
    """Apply the policy (per kind/source/paths group); remove what no rule or pin keeps.

    Without a policy (or an empty one) the config's `retention:` decides, per source; a group of
    a source it has no rules for is kept whole. Return the decision per snapshot (and the prune
    result with `prune`). Raise UsageError when there is no keep rule at all, LockedError when
    another operation holds the repository.
    """
    rules: Policy | PolicyFor
    if policy is None or policy.empty():
        rules, origin = configured_policy(cfg), "config"
    else:
        rules, origin = policy, "options"
    cfg.require_repository()
    with _removing(cfg, password, "forget", catalog, dry_run) as op:
        repo = op.repo
        snaps = repo.find_snapshots(kind=kind, tags=tags)
        pins = _pins_for(pinned_snapshots(catalog), [s.id for s in snaps])
        decisions = apply_policy(snaps, rules, pins)
        removed = [d.snapshot.id for d in decisions if not d.keep]
        if not dry_run:
            for sid in removed:
                repo.delete_snapshot(sid)
            remove_snapshot_rows(catalog, removed)
        result = ForgetResult(dry_run, origin, decisions, removed)
        if prune:
            result.prune = _prune(cfg, repo, max_unused, dry_run, progress)
        if op.run_id is not None:
            op.finish("succeeded", details={"removed": removed, "kept": result.kept})
            catalog.audit("snapshots.forget", repo.url, "succeeded", {"removed": removed})
    return result


def prune(
    cfg: Config,
    catalog: Catalog,
    password: str,
    *,
    max_unused: float = 5.0,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> PruneResult:
    """Delete unreferenced packs and repack partly used ones under an exclusive lock; return counts.

    With `dry_run`, return what would be removed and write nothing to the repository.
    """
    if not 0 <= max_unused <= 100:
        raise UsageError(f"--max-unused must be between 0 and 100, got {max_unused}")
    cfg.require_repository()
    with _removing(cfg, password, "prune", catalog, dry_run) as op:
        report = _prune(cfg, op.repo, max_unused, dry_run, progress)
        if op.run_id is not None:
            details = report.to_json()
            op.finish("succeeded", details=details)
            catalog.audit("repository.prune", op.repo.url, "succeeded", details)
    return PruneResult(op.repo.url, report)
