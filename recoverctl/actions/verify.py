"""The `verify` and `repair index` use cases."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from recoverctl.actions.repository import open_repository
from recoverctl.actions.usage import measure_usage
from recoverctl.catalog import Catalog, now
from recoverctl.catalog import tables as t
from recoverctl.config import Config
from recoverctl.errors import LockedError, UsageError, VerificationError
from recoverctl.progress import Progress
from recoverctl.recorder import record_failed_run
from recoverctl.repo import Repository
from recoverctl.repo.check import check, rebuild_index, select_subset


def _verified_order(catalog: Catalog, repository: str) -> list[str]:
    """Return packs of this repository by last verification time, oldest first."""
    with catalog.begin() as conn:
        rows = conn.execute(
            sa.select(t.verified_packs.c.pack)
            .where(t.verified_packs.c.repository == repository)
            .order_by(t.verified_packs.c.verified_at)
        ).all()
    return [r[0] for r in rows]


def _record_verified(catalog: Catalog, repository: str, verified: dict[str, bool]) -> None:
    if not verified:
        return
    at = now()
    with catalog.begin() as conn:
        conn.execute(
            t.verified_packs.delete().where(
                t.verified_packs.c.repository == repository, t.verified_packs.c.pack.in_(list(verified))
            )
        )
        conn.execute(
            t.verified_packs.insert(),
            [
                {"repository": repository, "pack": p, "verified_at": at, "ok": ok}
                for p, ok in verified.items()
            ],
        )


def _refuse_if_pruned_meanwhile(repo: Repository) -> None:
    """Raise LockedError when index files verify loaded are gone: a prune (or `repair index`) ran
    while verify read without a lock, so the damage it found may be that prune's doing."""
    gone = repo.index.files - {o.key for o in repo.storage.list("index/")}
    if gone:
        raise LockedError(
            f"the repository '{repo.url}' changed while verify read it without a lock (it refuses "
            f"writes): {len(gone)} index file(s) were replaced, as a prune does, so what looked "
            "missing may have been pruned",
            hint="run verify again once the prune is done",
        )


def verify(
    cfg: Config,
    catalog: Catalog,
    password: str,
    *,
    read_data: bool = False,
    subset: str | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Check the repository (and read all or a subset of the packs); return the report.

    Raise VerificationError (exit 13) naming damaged packs and affected snapshots/files.
    `subset` is 'P%' (least recently verified packs first, so daily runs rotate) or 'n/t'.
    """
    if subset is not None:
        try:
            select_subset([], subset)
        except ValueError as e:
            raise UsageError(
                str(e), hint="use e.g. --read-data-subset 10% or --read-data-subset 2/7"
            ) from None
    repo = open_repository(cfg, password)
    run_id = catalog.start_run("verify", None, repo.url)
    try:
        with repo.lock(operation="verify", reader=True) as lock:
            chooser = None
            if read_data:

                def chooser(packs: list[str]) -> list[str]:
                    return packs

            elif subset is not None:
                order = _verified_order(catalog, repo.url)

                def chooser(packs: list[str]) -> list[str]:
                    return select_subset(packs, subset, order)

            report = check(repo, read_packs=chooser, read_objects=read_data, progress=progress)
            if not report.ok and not lock.held:
                _refuse_if_pruned_meanwhile(repo)
        # Measured once the lock is released, so the size is the repository's, not ours.
        usage = measure_usage(repo.storage)
    except BaseException as e:
        record_failed_run(catalog, run_id, e)
        raise
    finally:
        repo.close()
    _record_verified(catalog, repo.url, report.verified)
    data = {"repository": repo.url, **report.to_dict(), "repository_bytes": usage["bytes"], "usage": usage}
    catalog.finish_run(run_id, "succeeded" if report.ok else "failed", details=data)
    if not report.ok:
        catalog.emit_event(
            "verify.failed",
            "critical",
            repo.url,
            f"verify failed: {report.errors[0]['message']}",
            details={"damaged_packs": data["damaged_packs"], "affected": data["affected"][:20]},
        )
        lines = [e["message"] for e in report.errors[:20]]
        for a in report.affected[:20]:
            shown = ", ".join(a["paths"][:5])
            more = f" and {a['count'] - 5} more" if a["count"] > 5 else ""
            lines.append(f"snapshot {a['snapshot'][:8]} affected: {shown}{more}")
        raise VerificationError(
            f"repository '{repo.url}' is damaged:\n  " + "\n  ".join(lines),
            hint="restore what is unaffected; back up the affected sources again; "
            "'recoverctl repair index' rebuilds a lost index",
            details=data,
        )
    return data


def repair_index(
    cfg: Config, catalog: Catalog, password: str, progress: Progress | None = None
) -> dict[str, Any]:
    """Rebuild the index from pack headers under an exclusive lock; return counts."""
    repo = open_repository(cfg, password)
    try:
        with repo.lock(exclusive=True, operation="repair index"):
            result = rebuild_index(repo, progress)
    finally:
        repo.close()
    catalog.audit("repository.repair_index", repo.url, "succeeded", result)
    return {"repository": repo.url, **result}
