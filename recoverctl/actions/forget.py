"""The `forget` and `prune` use cases: retention decisions, pins, S3 Object Lock, catalog upkeep."""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa

from recoverctl.actions.repository import open_repository
from recoverctl.catalog import Catalog
from recoverctl.catalog import tables as t
from recoverctl.config import Config, KeepRules, RepositoryConfig
from recoverctl.errors import UsageError, WriteRefused
from recoverctl.progress import Progress
from recoverctl.recorder import record_failed_run
from recoverctl.repo import Repository
from recoverctl.repo import prune as pruning
from recoverctl.repo.retention import Policy, PolicyFor, apply_policy
from recoverctl.storage.base import ObjectInfo


def pinned_snapshots(catalog: Catalog) -> dict[str, str]:
    """Return snapshot id → reason for every unexpired pin (releases, running drills)."""
    now = time.time()
    with catalog.begin() as conn:
        rows = conn.execute(
            sa.select(t.pins.c.snapshot_id, t.pins.c.reason, t.pins.c.owner).where(
                sa.or_(t.pins.c.expires_at.is_(None), t.pins.c.expires_at > now)
            )
        ).all()
    return {r.snapshot_id: f"{r.reason}" + (f" ({r.owner})" if r.owner else "") for r in rows}


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
) -> dict[str, Any]:
    """Given a repository under the caller's exclusive lock, delete unreferenced data, WAL no kept
    backup needs and leftovers of crashed writes; return what was (or would be) removed."""
    from recoverctl.actions.wal import postgres_sources
    from recoverctl.sources.postgres.walarchive import expire_wal_locked

    is_locked = object_lock_check(cfg.require_repository())
    p = pruning.plan(repo, max_unused, is_locked, dry_run=dry_run)
    if not dry_run:
        p = pruning.execute(repo, p, is_locked, progress)
    wal = expire_wal_locked(repo, postgres_sources(cfg), dry_run=dry_run)
    extra: dict[str, Any] = {}
    try:
        partial = repo.storage.sweep_partial_writes(time.time() - PARTIAL_WRITE_AGE_S, dry_run=dry_run)
    except WriteRefused as e:
        # Read-only credentials may not even list unfinished uploads (only writers abort them):
        # a dry run says it could not tell instead of failing the whole preview.
        if not dry_run:
            raise
        partial, extra["partial_writes_unknown"] = [], e.message
    return {"dry_run": dry_run, **p.to_dict(), "wal": wal, "partial_writes": partial, **extra}


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
) -> dict[str, Any]:
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
    repo = open_repository(cfg, password)
    run_id = None if dry_run else catalog.start_run("forget", None, repo.url)
    try:
        with repo.lock(exclusive=not dry_run, operation="forget", reader=dry_run):
            snaps = repo.find_snapshots(kind=kind, tags=tags)
            pins = _pins_for(pinned_snapshots(catalog), [s.id for s in snaps])
            decisions = apply_policy(snaps, rules, pins)
            removed = [d.snapshot.id for d in decisions if not d.keep]
            if not dry_run:
                for sid in removed:
                    repo.delete_snapshot(sid)
                with catalog.begin() as conn:
                    if removed:
                        conn.execute(t.snapshots.delete().where(t.snapshots.c.id.in_(removed)))
            result: dict[str, Any] = {
                "dry_run": dry_run,
                "rules_from": origin,
                "decisions": [d.to_dict() for d in decisions],
                "kept": len(decisions) - len(removed),
                "removed": removed,
            }
            if prune:
                result["prune"] = _prune(cfg, repo, max_unused, dry_run, progress)
    except BaseException as e:
        if run_id is not None:
            record_failed_run(catalog, run_id, e)
        raise
    finally:
        repo.close()
    if run_id is not None:
        catalog.finish_run(run_id, "succeeded", details={"removed": removed, "kept": result["kept"]})
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
) -> dict[str, Any]:
    """Delete unreferenced packs and repack partly used ones under an exclusive lock; return counts.

    With `dry_run`, return what would be removed and write nothing to the repository.
    """
    if not 0 <= max_unused <= 100:
        raise UsageError(f"--max-unused must be between 0 and 100, got {max_unused}")
    cfg.require_repository()
    repo = open_repository(cfg, password)
    run_id = None if dry_run else catalog.start_run("prune", None, repo.url)
    try:
        # A dry run only reads: like `forget --dry-run` it runs as a reader, so it also works on a
        # read-only repository.
        with repo.lock(exclusive=not dry_run, operation="prune", reader=dry_run):
            result = _prune(cfg, repo, max_unused, dry_run, progress)
    except BaseException as e:
        if run_id is not None:
            record_failed_run(catalog, run_id, e)
        raise
    finally:
        repo.close()
    if run_id is not None:
        catalog.finish_run(run_id, "succeeded", details=result)
        catalog.audit("repository.prune", repo.url, "succeeded", result)
    return {"repository": repo.url, **result}
