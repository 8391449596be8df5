"""The `backup files` use case: lock, back up, record the run and the snapshot in the catalog."""

from __future__ import annotations

from typing import Any

from recoverctl.actions.operation import operation
from recoverctl.config import Config
from recoverctl.progress import Progress
from recoverctl.recorder import RunRecorder
from recoverctl.repo import BackupResult
from recoverctl.sources.files import FilesSource


def backup_files(
    cfg: Config,
    catalog: RunRecorder,
    password: str,
    paths: list[str],
    *,
    tags: dict[str, str] | None = None,
    excludes: list[str] | None = None,
    one_file_system: bool = False,
    force_read: bool = False,
    dry_run: bool = False,
    source: str | None = None,
    progress: Progress | None = None,
) -> BackupResult:
    """Back up paths into the configured repository under a shared lock.

    Return the result (summary, warnings, `partial`); record a run (and the snapshot) in the
    catalog. Raise StorageError / LockedError / WrongKeyError; a failed run is recorded too.
    """
    with operation(
        cfg,
        password,
        "backup",
        recorder=None if dry_run else catalog,
        source=source or "files",
        lock="shared",
    ) as op:
        if not dry_run:
            op.repo.index_orphan_packs()
        result: BackupResult = FilesSource(source or "files").backup(
            op.repo,
            progress or Progress(),
            paths=paths,
            tags=tags,
            excludes=excludes,
            one_file_system=one_file_system,
            force_read=force_read,
            dry_run=dry_run,
            source=source,
        )
        if op.run_id is not None and result.snapshot is not None:
            catalog.record_snapshot(op.repo.url, result.snapshot)
            details: dict[str, Any] = {"summary": result.summary, "warnings": result.warnings[:100]}
            op.finish(
                "partial" if result.partial else "succeeded",
                bytes_read=result.summary["bytes_read"],
                bytes_added=result.summary["bytes_added"],
                snapshot_id=result.snapshot_id,
                details=details,
            )
    return result
