"""Directories and files as a backup source: path selection, exclude globs, parent lookup."""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path

from recoverctl.errors import UsageError
from recoverctl.progress import Progress
from recoverctl.repo import BackupResult, Repository, Snapshot, backup_tree


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
