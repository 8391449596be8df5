"""The `verify` and `repair index` use cases."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from recoverctl.actions.operation import operation
from recoverctl.actions.usage import Usage, measure_usage
from recoverctl.catalog import Catalog
from recoverctl.catalog.verification import packs_by_verification_age, record_verified_packs
from recoverctl.config import Config
from recoverctl.errors import LockedError, UsageError, VerificationError
from recoverctl.progress import Progress
from recoverctl.repo import Repository
from recoverctl.repo.check import CheckReport, IndexRebuild, check, rebuild_index, select_subset
from recoverctl.repo.configured import open_repository


@dataclass
class VerifyResult:
    """A verify's report on one repository and the repository's size measured after it."""

    repository: str
    report: CheckReport
    usage: Usage

    def to_json(self) -> dict[str, Any]:
        return {
            "repository": self.repository,
            **self.report.to_dict(),
            "repository_bytes": self.usage.bytes,
            "usage": asdict(self.usage),
        }


@dataclass
class RepairIndexResult:
    """The repository whose index `repair index` rebuilt, and the rebuild's counts."""

    repository: str
    rebuild: IndexRebuild

    def to_json(self) -> dict[str, Any]:
        return {"repository": self.repository, **asdict(self.rebuild)}


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


def _damage_error(result: VerifyResult, data: dict[str, Any]) -> VerificationError:
    """Given a failed verify, return the error naming its damage and the snapshots it affects."""
    report = result.report
    lines = [e["message"] for e in report.errors[:20]]
    for a in report.affected[:20]:
        shown = ", ".join(a["paths"][:5])
        more = f" and {a['count'] - 5} more" if a["count"] > 5 else ""
        lines.append(f"snapshot {a['snapshot'][:8]} affected: {shown}{more}")
    return VerificationError(
        f"repository '{result.repository}' is damaged:\n  " + "\n  ".join(lines),
        hint="restore what is unaffected; back up the affected sources again; "
        "'recoverctl repair index' rebuilds a lost index",
        details=data,
    )


def verify(
    cfg: Config,
    catalog: Catalog,
    password: str,
    *,
    read_data: bool = False,
    subset: str | None = None,
    progress: Progress | None = None,
) -> VerifyResult:
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
    # The lock covers the check only: usage is measured once it is released, so the size is the
    # repository's, not ours.
    with operation(cfg, password, "verify", recorder=catalog, lock=None) as op:
        repo = op.repo
        with repo.lock(operation="verify", reader=True) as lock:
            chooser = None
            if read_data:

                def chooser(packs: list[str]) -> list[str]:
                    return packs

            elif subset is not None:
                order = packs_by_verification_age(catalog, repo.url)

                def chooser(packs: list[str]) -> list[str]:
                    return select_subset(packs, subset, order)

            report = check(repo, read_packs=chooser, read_objects=read_data, progress=progress)
            if not report.ok and not lock.held:
                _refuse_if_pruned_meanwhile(repo)
        result = VerifyResult(repo.url, report, measure_usage(repo.storage))
        record_verified_packs(catalog, repo.url, report.verified)
        data = result.to_json()
        op.finish("succeeded" if report.ok else "failed", details=data)
    if not report.ok:
        catalog.emit_event(
            "verify.failed",
            "critical",
            result.repository,
            f"verify failed: {report.errors[0]['message']}",
            details={"damaged_packs": data["damaged_packs"], "affected": data["affected"][:20]},
        )
        raise _damage_error(result, data)
    return result


def repair_index(
    cfg: Config, catalog: Catalog, password: str, progress: Progress | None = None
) -> RepairIndexResult:
    """Rebuild the index from pack headers under an exclusive lock; return counts."""
    with open_repository(cfg, password) as repo, repo.lock(exclusive=True, operation="repair index"):
        rebuild = rebuild_index(repo, progress)
    catalog.audit("repository.repair_index", repo.url, "succeeded", asdict(rebuild))
    return RepairIndexResult(repo.url, rebuild)
