"""The `restore` use case: lock, restore into a directory, record the run, fail loudly on damage."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from recoverctl.actions.operation import operation
from recoverctl.config import Config
from recoverctl.progress import Progress
from recoverctl.recorder import RunRecorder
from recoverctl.repo import RestoreResult
from recoverctl.sources.files import restore_failure, restore_tree


@dataclass
class TreeRestoreResult:
    """A snapshot restored (or, with dry_run, planned) into a directory."""

    snapshot: str
    target: str
    result: RestoreResult

    def to_json(self) -> dict[str, Any]:
        return {"snapshot": self.snapshot, "target": self.target, **self.result.to_dict()}


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
) -> TreeRestoreResult:
    """Restore snapshot `ref` into `target`; return the counts.

    Writes stay inside `target` whatever the snapshot holds. A non-empty target needs `force`
    (write over it) or `delta` (make it equal to the snapshot); `dry_run` changes nothing, records
    no run and lists what would be removed and overwritten. Raise UsageError (exit 2) for a
    non-empty target without either, VerificationError (exit 13) for a tampered tree or when
    damaged blobs kept files from being restored (the other files are restored), NotFoundError
    when packs vanished during the restore, PartialError (exit 3) for other per-file failures.
    """
    with operation(
        cfg, password, "restore", recorder=None if dry_run else catalog, lock="reader", lock_name="restore"
    ) as op:
        snap, result = restore_tree(
            op.repo, ref, target, include=include, verify=verify, delta=delta, force=force,
            dry_run=dry_run, progress=progress,
        )  # fmt: skip
        restored = TreeRestoreResult(snap.id, target, result)
        out = restored.to_json()
        if op.run_id is not None:
            status = "partial" if result.errors else "succeeded"
            op.finish(status, bytes_read=result.bytes, snapshot_id=snap.id, details=out)
        failure = restore_failure(snap, target, result, out)
        if failure is not None:
            raise failure
    return restored
