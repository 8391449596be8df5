"""The backup repository engine: deduplicated, compressed, encrypted snapshots on any Storage.

Stable API for other capabilities (see docs/repository-format.md):

- ``Repository.init(storage, password, ...)`` / ``Repository.open(storage, password, ...)``
- ``repo.lock(exclusive=False, operation="...")`` — context manager; raises LockedError
- ``backup_tree(repo, root, include=..., exclude=..., extra_files=..., kind=..., source=...,
  tags=..., metadata=..., parent=..., force_reread=..., before_snapshot=...)``
  → BackupResult(snapshot_id, summary)
- ``backup_stream(repo, stream, filename=..., kind=..., ...)`` and ``open_file(repo, snap, path)``
- ``repo.put_object(key, data)`` / ``repo.get_object(key)`` / ``repo.list_objects(prefix)``
- ``restore_snapshot(repo, snapshot_id, target_dir, include=None, delta=False)``
- ``repo.find_snapshots(kind=, source=, tags=)``, ``repo.resolve_snapshot(ref)``, ``Snapshot``
"""

from recoverctl.repo.archiver import BackupResult, backup_stream, backup_tree
from recoverctl.repo.reader import RestoreResult, diff, find_node, ls, open_file, restore_snapshot, walk
from recoverctl.repo.repository import FORMAT_VERSION, Repository
from recoverctl.repo.snapshot import Snapshot

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
