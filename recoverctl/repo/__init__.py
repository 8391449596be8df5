"""The backup repository engine: deduplicated, compressed, encrypted snapshots on any Storage.

Stable API for other capabilities (see docs/repository-format.md):

- ``Repository.init(storage, password, ...)`` / ``Repository.open(storage, password, ...)``
- ``repo.lock(exclusive=False, operation="...", reader=False)`` — context manager; raises
  LockedError; ``reader=True`` (commands that never write) goes on lock-free when writes are refused
- ``backup_tree(repo, root, include=..., exclude=..., extra_files=..., kind=..., source=...,
  tags=..., metadata=..., parent=..., force_reread=..., before_snapshot=...)``
  → BackupResult(snapshot_id, summary)
- ``backup_stream(repo, stream, filename=..., kind=..., ...)`` and ``open_file(repo, snap, path)``
- ``repo.put_object(key, data)`` / ``repo.get_object(key)`` / ``repo.list_objects(prefix)``
- ``restore_snapshot(repo, snapshot_id, target_dir, include=None, delta=False)``
- ``repo.find_snapshots(kind=, source=, tags=)``, ``repo.resolve_snapshot(ref)``, ``Snapshot``
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from recoverctl.repo.archiver import BackupResult, backup_stream, backup_tree
    from recoverctl.repo.reader import RestoreResult, diff, find_node, ls, open_file, restore_snapshot, walk
    from recoverctl.repo.repository import FORMAT_VERSION, Repository
    from recoverctl.repo.snapshot import Snapshot

# Imported on first use: `recoverctl-wal push` needs only Repository, and the archiver and reader
# (chunking, trees, numpy) would add ~0.1 s to every process PostgreSQL starts for it.
_HOME = {
    "BackupResult": "archiver", "backup_stream": "archiver", "backup_tree": "archiver",
    "RestoreResult": "reader", "diff": "reader", "find_node": "reader", "ls": "reader",
    "open_file": "reader", "restore_snapshot": "reader", "walk": "reader",
    "FORMAT_VERSION": "repository", "Repository": "repository", "Snapshot": "snapshot",
}  # fmt: skip


def __getattr__(name: str) -> Any:
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module 'recoverctl.repo' has no attribute '{name}'")
    value = getattr(importlib.import_module(f"recoverctl.repo.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "FORMAT_VERSION",
    "BackupResult",
    "Repository",
    "RestoreResult",
    "Snapshot",
    "backup_stream",
    "backup_tree",
    "diff",
    "find_node",
    "ls",
    "open_file",
    "restore_snapshot",
    "walk",
]
