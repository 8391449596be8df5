"""The `restore` use case: lock, restore into a directory, record the run, fail loudly on damage."""

from __future__ import annotations

from typing import Any

from recoverctl.actions.repository import open_repository
from recoverctl.config import Config
from recoverctl.errors import NotFoundError, PartialError, VerificationError
from recoverctl.progress import Progress
from recoverctl.recorder import RunRecorder, record_failed_run
from recoverctl.repo import restore_snapshot


def restore(
    cfg: Config,
    catalog: RunRecorder,
    password: str,
    ref: str,
    target: str,
    *,
    include: list[str] | None = None,
    verify: bool = False,
    delta: bool = False,
    force: bool = False,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Restore snapshot `ref` into `target`; return counts.

    Writes stay inside `target` whatever the snapshot holds. A non-empty target needs `force`
    (write over it) or `delta` (make it equal to the snapshot); `dry_run` changes nothing, records
    no run and lists what would be removed and overwritten. Raise UsageError (exit 2) for a
    non-empty target without either, VerificationError (exit 13) for a tampered tree or when
    damaged blobs kept files from being restored (the other files are restored), PartialError
    (exit 3) for other per-file failures.
    """
    repo = open_repository(cfg, password)
    run_id = None if dry_run else catalog.start_run("restore", None, repo.url)
    try:
        with repo.lock(operation="restore", reader=True):
            snap = repo.resolve_snapshot(ref)
            result = restore_snapshot(
                repo,
                snap.id,
                target,
                include=include,
                delta=delta,
                verify=verify,
                progress=progress,
                force=force,
                dry_run=dry_run,
            )
    except BaseException as e:
        if run_id is not None:
            record_failed_run(catalog, run_id, e)
        raise
    finally:
        repo.close()
    out = {"snapshot": snap.id, "target": target, **result.to_dict()}
    status = "partial" if result.errors else "succeeded"
    if run_id is not None:
        catalog.finish_run(run_id, status, bytes_read=result.bytes, snapshot_id=snap.id, details=out)
    if result.errors:
        names = ", ".join(e["path"] for e in result.errors[:10])
        more = f" and {len(result.errors) - 10} more" if len(result.errors) > 10 else ""
        gone = sorted({e["missing_pack"] for e in result.errors if e.get("missing_pack")})
        if gone:
            raise NotFoundError(
                f"restore of snapshot {snap.id[:8]} into '{target}': {len(result.errors)} file(s) not "
                f"restored: {names}{more}; pack(s) {', '.join(p[:16] for p in gone[:5])} are gone from "
                "the repository: a prune that ran during the restore may have removed them",
                hint="run the restore again (it reads the current index); if a pack is still missing, "
                "run 'recoverctl verify'; the other files were restored",
                details=out,
            )
        cls = VerificationError if any(e["damaged"] == "yes" for e in result.errors) else PartialError
        raise cls(
            f"restore of snapshot {snap.id[:8]} into '{target}': {len(result.errors)} file(s) not restored: "
            f"{names}{more}",
            hint="run 'recoverctl verify --read-data' to find damaged packs; the other files were restored",
            details=out,
        )
    return out
