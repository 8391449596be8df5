"""The archiver: back up a file tree (or a byte stream) into a snapshot.

Pipeline: the walker lists directories and lstat()s entries on the calling thread; files go to a
pool of readers; a reader cuts each file with FastCDC and hands chunks to a second pool that
hashes, compresses, encrypts and packs them (BlobSaver); full packs go to uploader threads.
Every hand-off is bounded, so memory stays flat whatever the file sizes. Directory trees are
finished in post-order on one thread, and the snapshot is written last.

The pipeline itself is in `archive_pipeline`. Public entry points (a stable API for sources):
``backup_tree(repo, root, ...)`` and ``backup_stream(repo, stream, ...)`` → BackupResult.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Iterable
from concurrent.futures import Future
from pathlib import Path
from typing import Any, BinaryIO

from recoverctl.progress import Progress
from recoverctl.repo.archive_jobs import DirJob, FileJob
from recoverctl.repo.archive_pipeline import (
    Archiver,
    BackupResult,
    BeforeSnapshotFn,
    ExcludeFn,
    FollowFn,
    ForceRereadFn,
)
from recoverctl.repo.fixed_read import ReadPlanFn
from recoverctl.repo.repository import Repository
from recoverctl.repo.snapshot import Snapshot
from recoverctl.repo.tree import Node

__all__ = [
    "Archiver",
    "BackupResult",
    "BeforeSnapshotFn",
    "ExcludeFn",
    "FollowFn",
    "ForceRereadFn",
    "backup_stream",
    "backup_tree",
]


def _sel_insert(sel: dict[str, Any], parts: list[str]) -> None:
    for i, p in enumerate(parts):
        if i == len(parts) - 1:
            sel[p] = None  # everything below
        else:
            child = sel.get(p, {})
            if child is None:
                return  # an ancestor is already included whole
            sel[p] = child
            sel = child


def _extras_tree(extra_files: dict[str, bytes] | None) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for rel, data in (extra_files or {}).items():
        parts = [p for p in rel.strip("/").split("/") if p]
        cur = tree
        for p in parts[:-1]:
            cur = cur.setdefault(p, {})
        cur[parts[-1]] = data
    return tree


def backup_tree(
    repo: Repository,
    root: str | Path,
    *,
    include: Iterable[str] | None = None,
    exclude: ExcludeFn | None = None,
    extra_files: dict[str, bytes] | None = None,
    kind: str = "files",
    source: str | None = None,
    tags: dict[str, str] | None = None,
    metadata: dict[str, Any] | None = None,
    paths: list[str] | None = None,
    parent: Snapshot | None = None,
    force_read: bool = False,
    force_reread: ForceRereadFn | None = None,
    one_file_system: bool = False,
    follow_symlinks: FollowFn | None = None,
    dry_run: bool = False,
    progress: Progress | None = None,
    before_snapshot: BeforeSnapshotFn | None = None,
    read_plan: ReadPlanFn | None = None,
) -> BackupResult:
    """Back up the tree under `root` into a new snapshot; return its id and summary.

    `include` lists paths relative to `root` (default: everything); `exclude(relpath, lstat)` drops
    an entry and everything below it; `extra_files` adds in-memory files (`{relpath: bytes}`),
    replacing files of the same path on disk. Unchanged files (size, mtime, ctime, inode equal to
    `parent`'s node) are not read unless `force_read` or `force_reread(relpath, lstat)` says so.
    A symlink to a directory for which `follow_symlinks(relpath)` is true is stored as that
    directory (its contents walked like any other); other symlinks are stored as links.
    Files that vanish, cannot be read, or change while read set `partial` (and a warning each).
    `before_snapshot(warnings)` runs once every file has been read and before the snapshot is
    written (e.g. to end a database backup mode); it may still update `metadata` in place, and its
    result replaces `partial` (so a caller can accept warnings it expects).
    `read_plan(relpath, lstat, parent_node)` may name files to read at fixed boundaries, reusing
    the parent's chunks it keeps (see repo.fixed_read).
    Raises StorageError when the repository cannot be written; no snapshot is written then.
    """
    root_s = os.path.abspath(str(root))
    selection = _selection(include)
    archiver = Archiver(
        repo,
        dry_run=dry_run,
        progress=progress,
        force_read=force_read,
        force_reread=force_reread,
        exclude=exclude,
        one_file_system=one_file_system,
        follow_symlinks=follow_symlinks,
        read_plan=read_plan,
    )
    extras = _extras_tree(extra_files)
    root_st = os.stat(root_s)
    root_dev = root_st.st_dev if one_file_system else None

    def walk() -> DirJob:
        root_job = archiver._walk_dir(
            root_s, "", None, selection, parent.tree if parent else None, extras, root_dev
        )
        if before_snapshot is not None:
            root_job.wait_files()
            archiver.partial = before_snapshot(list(archiver.warnings))
        return root_job

    return archiver.run(
        walk,
        kind=kind,
        paths=paths or [root_s],
        source=source,
        tags=tags,
        metadata=metadata,
        parent=parent,
    )


def _selection(include: Iterable[str] | None) -> dict[str, Any] | None:
    """Given paths relative to the root, return them as a nested selection; None for everything."""
    if include is None:
        return None
    selection: dict[str, Any] = {}
    for rel in include:
        parts = [p for p in str(rel).strip("/").split("/") if p and p != "."]
        if not parts:
            return None
        _sel_insert(selection, parts)
    return selection


def backup_stream(
    repo: Repository,
    stream: BinaryIO | io.RawIOBase,
    *,
    filename: str,
    kind: str,
    source: str | None = None,
    tags: dict[str, str] | None = None,
    metadata: dict[str, Any] | None = None,
    parent: Snapshot | None = None,
    progress: Progress | None = None,
) -> BackupResult:
    """Store a byte stream (e.g. `pg_dump -Fc` stdout) as a snapshot holding one file `filename`.

    Return the snapshot id and summary; raise StorageError (no snapshot written) on failure.
    Read it back with `recoverctl.repo.reader.open_file(repo, snapshot, filename)`.
    """
    archiver = Archiver(repo, progress=progress)

    def walk() -> DirJob:
        size = 0

        def count(n: int) -> None:
            nonlocal size
            size += n
            archiver._add_read(n)
            archiver.progress.update({"bytes_read": archiver.counters.bytes_read})

        content = archiver.save_stream(stream, count)
        now = time.time_ns()
        node: Node = {
            "name": filename,
            "type": "file",
            "mode": 0o600,
            "uid": os.getuid(),
            "gid": os.getgid(),
            "mtime_ns": now,
            "ctime_ns": now,
            "size": size,
        }
        fut: Future[list[str] | None] = Future()
        fut.set_result(content)
        archiver.counters.files_new += 1
        archiver.counters.bytes_total = size
        root = DirJob(None, "")
        root.entries.append(FileJob(node, fut))
        archiver._put_dir(root)
        return root

    return archiver.run(
        walk, kind=kind, paths=[filename], source=source, tags=tags, metadata=metadata, parent=parent
    )
