"""Directories and files as a backup source: path selection, exclude globs, parent lookup, the
restore of a snapshot tree, and the Source for files (and, through VolumeSource, volumes)."""

from __future__ import annotations

import fnmatch
import os
import re
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

from recoverctl.errors import NotFoundError, PartialError, RecoverctlError, UsageError, VerificationError
from recoverctl.progress import Progress
from recoverctl.repo import BackupResult, Repository, RestoreResult, Snapshot, backup_tree, restore_snapshot
from recoverctl.sources.base import DrillFlow, Fetched, PointInTime, RestoreRun, Selection, random_time


class SnapshotChoice(Protocol):
    """Which snapshots of a files/volume source qualify (a drill playbook's `snapshot` filter)."""

    @property
    def id(self) -> str | None: ...  # exactly this snapshot (id or unique prefix)

    @property
    def tags(self) -> dict[str, str]: ...

    @property
    def paths(self) -> list[str] | None: ...


def read_exclude_file(path: str) -> list[str]:
    """Return the patterns in an exclude file (one per line, '#' comments); raise UsageError."""
    try:
        lines = Path(path).expanduser().read_text().splitlines()
    except OSError as e:
        raise UsageError(f"cannot read exclude file '{path}': {e.strerror}") from None
    return [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]


def exclude_matcher(patterns: Iterable[str]) -> Callable[[str, os.stat_result], bool] | None:
    """Return a predicate for absolute paths: a pattern without '/' matches any name, else the full path.

    `*` does not cross '/', `**` does (restic-style).
    """
    names: list[re.Pattern[str]] = []
    fulls: list[re.Pattern[str]] = []
    for p in patterns:
        p = p.rstrip("/")
        if not p:
            continue
        rx = re.escape(p).replace(r"\*\*", "\0").replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        rx = rx.replace("\0", ".*")
        if "/" in p:
            fulls.append(re.compile(("" if p.startswith("/") else "(?:.*/)?") + rx + "$"))
        else:
            names.append(re.compile(fnmatch.translate(p)))
    if not names and not fulls:
        return None

    def excluded(relpath: str, _st: os.stat_result) -> bool:
        full = "/" + relpath
        name = full.rsplit("/", 1)[1]
        return any(r.match(name) for r in names) or any(r.match(full) for r in fulls)

    return excluded


def normalize_paths(paths: Iterable[str]) -> list[str]:
    """Return absolute, existing, de-duplicated paths (a path inside another is dropped); raise UsageError."""
    out: list[str] = []
    for p in paths:
        ap = os.path.abspath(os.path.expanduser(p))
        if not os.path.lexists(ap):
            raise UsageError(f"cannot back up '{p}': no such file or directory")
        out.append(ap)
    out = sorted(set(out))
    return [p for p in out if not any(p != q and p.startswith(q.rstrip("/") + "/") for q in out)]


def find_parent(
    repo: Repository, paths: list[str], source: str | None, kind: str = "files"
) -> Snapshot | None:
    """Return the newest complete snapshot of the same paths (and source), for change detection."""
    snaps = [s for s in repo.find_snapshots(kind=kind, paths=paths) if source is None or s.source == source]
    return snaps[-1] if snaps else None


def backup_files(
    repo: Repository,
    paths: list[str],
    *,
    tags: dict[str, str] | None = None,
    excludes: list[str] | None = None,
    one_file_system: bool = False,
    force_read: bool = False,
    dry_run: bool = False,
    source: str | None = None,
    parent: Snapshot | None = None,
    progress: Progress | None = None,
) -> BackupResult:
    """Back up files and directories (absolute paths are kept); return the result."""
    abs_paths = normalize_paths(paths)
    if parent is None:
        parent = find_parent(repo, abs_paths, source)
    return backup_tree(
        repo,
        "/",
        include=[p.lstrip("/") for p in abs_paths],
        exclude=exclude_matcher(excludes or []),
        kind="files",
        source=source,
        tags=tags,
        paths=abs_paths,
        parent=parent,
        force_read=force_read,
        one_file_system=one_file_system,
        dry_run=dry_run,
        progress=progress,
    )


def restore_tree(
    repo: Repository,
    ref: str,
    target: str,
    *,
    include: list[str] | None = None,
    verify: bool = False,
    delta: bool = False,
    force: bool = False,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> tuple[Snapshot, RestoreResult]:
    """Restore snapshot `ref` into the directory `target` (writes stay inside it); return the
    snapshot and the per-file result. Raise NotFoundError for an unknown `ref`, UsageError for a
    non-empty target without `force` or `delta`, VerificationError for a tampered tree."""
    snap = repo.resolve_snapshot(ref)
    result = restore_snapshot(
        repo, snap.id, target, include=include, delta=delta, verify=verify, progress=progress,
        force=force, dry_run=dry_run,
    )  # fmt: skip
    return snap, result


def restore_failure(
    snap: Snapshot, target: str, result: RestoreResult, out: dict[str, Any]
) -> RecoverctlError | None:
    """Given a restore's per-file result, return the error it ends with (None when every file was
    restored): NotFoundError when packs vanished (a concurrent prune), VerificationError when
    damaged blobs kept files from being restored, PartialError for other per-file failures."""
    if not result.errors:
        return None
    names = ", ".join(e["path"] for e in result.errors[:10])
    more = f" and {len(result.errors) - 10} more" if len(result.errors) > 10 else ""
    gone = sorted({e["missing_pack"] for e in result.errors if e.get("missing_pack")})
    if gone:
        return NotFoundError(
            f"restore of snapshot {snap.id[:8]} into '{target}': {len(result.errors)} file(s) not "
            f"restored: {names}{more}; pack(s) {', '.join(p[:16] for p in gone[:5])} are gone from "
            "the repository: a prune that ran during the restore may have removed them",
            hint="run the restore again (it reads the current index); if a pack is still missing, "
            "run 'recoverctl verify'; the other files were restored",
            details=out,
        )
    cls = VerificationError if any(e["damaged"] == "yes" for e in result.errors) else PartialError
    return cls(
        f"restore of snapshot {snap.id[:8]} into '{target}': {len(result.errors)} file(s) not restored: "
        f"{names}{more}",
        hint="run 'recoverctl verify --read-data' to find damaged packs; the other files were restored",
        details=out,
    )


class FilesSource:
    """Directories of this host (a `files` source), or, as `VolumeSource`, a Docker volume: both
    are snapshot trees restored into a directory and chosen by time."""

    kind = "files"
    drill_flow: DrillFlow = "rehash"
    restore_run_kind = "restore"
    run_source: str | None = None

    def __init__(
        self, name: str, snapshot_filter: SnapshotChoice | None = None, snapshot_source: str | None = None
    ):
        self.name = name
        self.filter = snapshot_filter
        # The source column its snapshots carry (a volume's carry the volume name).
        self.snapshot_source = snapshot_source or name

    def backup(self, repo: Repository, progress: Progress, **options: Any) -> BackupResult:
        """Back up `options['paths']` (with backup_files' other options); return the result."""
        return backup_files(repo, progress=progress, **options)

    def restore(
        self, repo: Repository, snapshot: str | None, into: Path, progress: Progress, **options: Any
    ) -> tuple[Snapshot, RestoreResult]:
        """Restore `snapshot` into `into` (with restore_tree's options); return (snapshot, result)."""
        return restore_tree(repo, snapshot or "latest", str(into), progress=progress, **options)

    def _candidates(self, repo: Repository) -> list[Snapshot]:
        f = self.filter
        tags, paths = (f.tags, f.paths) if f is not None else ({}, None)
        snaps = repo.find_snapshots(kind=self.kind, source=self.snapshot_source, tags=tags, paths=paths)
        if not snaps:
            wanted = [f"kind {self.kind}", f"source '{self.snapshot_source}'"]
            if tags:
                wanted.append(f"tags {tags}")
            if paths is not None:
                wanted.append(f"paths {paths}")
            raise NotFoundError(
                f"no snapshots with {', '.join(wanted)} in '{repo.url}'",
                hint=f"back the source up first ('recoverctl backup {self.kind} ... --source {self.name}') "
                "or fix the playbook's snapshot filter",
            )
        return snaps

    def select_recovery_point(self, repo: Repository, point: PointInTime, drill_start: float) -> Selection:
        """Return the newest snapshot at or before `point` (or the filter's id); raise NotFoundError
        when none qualifies."""
        snaps = self._candidates(repo)
        newest = snaps[-1].time
        target_time: float | None = None
        kind = "latest"
        if self.filter is not None and self.filter.id:
            snap = repo.resolve_snapshot(self.filter.id)
            if snap.id not in {s.id for s in snaps}:
                raise NotFoundError(
                    f"snapshot {snap.short_id} is not a {self.kind} snapshot of source '{self.name}' "
                    "matching the playbook's filter",
                    hint="check the id with 'recoverctl snapshots'",
                )
            kind = "snapshot"
        elif point.kind in ("latest", "immediate"):
            snap = snaps[-1]
        else:
            if point.kind == "random":
                target_time = random_time(point.window, drill_start, snaps[0].time)
            else:
                assert point.time is not None
                target_time = point.time.timestamp()
            at_or_before = [s for s in snaps if s.time <= target_time]
            if not at_or_before:
                raise NotFoundError(
                    f"no {self.kind} snapshot of '{self.name}' at or before the recovery point "
                    f"{point.describe()}",
                    hint=f"pick a later recovery point; the oldest snapshot is {snaps[0].short_id} "
                    f"({time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(snaps[0].time))})",
                )
            snap = at_or_before[-1]
            kind = "time"
        return Selection(
            snapshot_id=snap.id,
            snapshot_time=snap.time,
            target_kind=kind,
            target_time=target_time,
            size=snap.summary.get("bytes_total") or snap.summary.get("bytes_read"),
            metadata={"newest_snapshot_time": newest, "paths": snap.paths, "kind": snap.kind},
        )

    def drill_restore(
        self, repo: Repository, selection: Selection, data_dir: Path, os_user: str | None, progress: Progress
    ) -> Fetched:
        """Restore the selected snapshot into `data_dir` as `recoverctl restore` would (under a
        reader lock); the run records the restore like the operator's, failures included."""
        target = str(data_dir)
        with repo.lock(operation="restore", reader=True):
            snap, result = restore_tree(repo, selection.snapshot_id, target, progress=progress)
        out = {"snapshot": snap.id, "target": target, **result.to_dict()}
        run = RestoreRun(
            status="partial" if result.errors else "succeeded",
            bytes_read=result.bytes,
            details=out,
            error=restore_failure(snap, target, result, out),
        )
        return Fetched(
            bytes=int(out.get("bytes") or 0),
            details={"files_restored": out.get("files"), "dirs_restored": out.get("dirs")},
            run=run,
        )
