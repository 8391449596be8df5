"""The layout of a restored data directory: tablespaces (the tablespace_map and pg_tblspc links),
where pg_wal goes, backup_label, and the directories a server needs even when empty. Every check
here runs before anything is written."""

from __future__ import annotations

import os
import re
import shutil
import stat
from pathlib import Path
from typing import Any

from recoverctl.errors import UsageError
from recoverctl.repo import Snapshot
from recoverctl.repo.confined import remove, write_file
from recoverctl.sources.postgres.server import postmaster_pid

# Directories a server needs even when empty (their contents are excluded from backups).
EMPTY_DIRS = (
    "pg_wal/archive_status", "pg_replslot", "pg_dynshmem", "pg_notify", "pg_serial", "pg_snapshots",
    "pg_stat_tmp", "pg_subtrans", "pg_tblspc", "pg_twophase", "pg_logical",
)  # fmt: skip


def prepare_dir(target_dir: Path, delta: bool) -> None:
    if target_dir.exists() and any(target_dir.iterdir()):
        if not delta:
            raise UsageError(
                f"target directory '{target_dir}' is not empty",
                hint="choose an empty directory, or pass --delta to reuse files that already match",
            )
        if postmaster_pid(target_dir) is not None:
            raise UsageError(
                f"a server is running on '{target_dir}'", hint="stop it before restoring into it"
            )
    target_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(target_dir, 0o700)


def parse_tablespace_map(text: str) -> list[tuple[str, str]]:
    """Given tablespace_map content ("OID PATH" lines; a backslash escapes the next character of
    PATH, as PostgreSQL writes \\, CR and LF), return (oid, path) pairs."""
    out: list[tuple[str, str]] = []
    buf: list[str] = []
    escaped = False
    for ch in text + "\n":
        if escaped:
            buf.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == "\n":
            oid, _, path = "".join(buf).partition(" ")
            buf = []
            if oid:
                out.append((oid, path))
        else:
            buf.append(ch)
    return out


def escape_map_path(path: str) -> str:
    return re.sub(r"([\\\n\r])", r"\\\1", path)


def tablespace_plan(snap: Snapshot, mapping: dict[str, str] | None) -> list[dict[str, Any]]:
    """Given a snapshot and OID_OR_NAME → DIR remappings, return where each tablespace goes:
    [{oid, name, location, original}]. Raise UsageError for a key naming no tablespace of the
    backup, a relative DIR, or two tablespaces sent to one directory."""
    md = snap.metadata
    names = {str(t["oid"]): str(t.get("name") or t["oid"]) for t in md.get("tablespaces") or []}
    entries = parse_tablespace_map(md.get("tablespace_map") or "")
    if not entries:
        entries = [(str(t["oid"]), str(t["location"])) for t in md.get("tablespaces") or []]
    by_key = {oid: oid for oid, _ in entries} | {names[oid]: oid for oid, _ in entries if oid in names}
    moved: dict[str, str] = {}
    for key, new in (mapping or {}).items():
        if key not in by_key:
            known = ", ".join(f"{names.get(o, o)} (oid {o})" for o, _ in entries) or "none"
            raise UsageError(
                f"--tablespace-map names '{key}', which is not a tablespace of backup {snap.id[:8]}",
                hint=f"tablespaces in this backup: {known}",
            )
        if not os.path.isabs(new):
            raise UsageError(
                f"--tablespace-map {key}={new}: the directory must be an absolute path",
                hint="give the full path of the new tablespace directory",
            )
        moved[by_key[key]] = os.path.normpath(new)
    plan: list[dict[str, Any]] = [
        {"oid": int(oid), "name": names.get(oid, oid), "location": moved.get(oid, path), "original": path}
        for oid, path in entries
        if os.path.isabs(path)  # in-place tablespaces are plain directories under pg_tblspc
    ]
    seen: dict[str, str] = {}
    for t in plan:
        if t["location"] in seen:
            raise UsageError(
                f"tablespaces {seen[t['location']]} and {t['name']} would both be restored to "
                f"'{t['location']}'",
                hint="give each tablespace its own directory with --tablespace-map",
            )
        seen[t["location"]] = t["name"]
    return plan


def check_tablespace_dirs(plan: list[dict[str, Any]], target_dir: Path, delta: bool) -> None:
    """Refuse (before anything is written) tablespace directories that are in use or not empty."""
    for t in plan:
        loc = Path(t["location"])
        if loc == target_dir or target_dir in loc.parents or loc in target_dir.parents:
            raise UsageError(
                f"tablespace {t['name']} directory '{loc}' overlaps the target directory '{target_dir}'",
                hint="restore the tablespace elsewhere with --tablespace-map OID_OR_NAME=DIR",
            )
        if loc.exists() and not loc.is_dir():
            raise UsageError(f"tablespace {t['name']} directory '{loc}' is not a directory")
        if loc.is_dir() and any(loc.iterdir()) and not delta:
            raise UsageError(
                f"tablespace {t['name']} directory '{loc}' is not empty",
                hint="restore it elsewhere with --tablespace-map OID_OR_NAME=DIR, or pass --delta "
                "to reuse files that already match",
            )


def link_tablespaces(plan: list[dict[str, Any]], target_dir: Path) -> None:
    """Create each tablespace directory and point pg_tblspc/<oid> at it, so the restore writes the
    tablespace's files there."""
    (target_dir / "pg_tblspc").mkdir(parents=True, exist_ok=True)
    for t in plan:
        loc = Path(t["location"])
        loc.mkdir(parents=True, exist_ok=True)
        os.chmod(loc, 0o700)
        link = target_dir / "pg_tblspc" / str(t["oid"])
        if link.is_symlink():
            link.unlink()
        elif link.is_dir():
            shutil.rmtree(link)  # left by a restore without links; its files are restored anew
        os.symlink(loc, link)


def check_wal_dir(
    wal_dir: Path | None, target_dir: Path, tablespaces: list[dict[str, Any]], delta: bool
) -> None:
    """Refuse (before anything is written) a --wal-dir that overlaps the target or a tablespace,
    is not a directory, or holds files (another server's WAL) without `delta`."""
    if wal_dir is None:
        return
    if not wal_dir.is_absolute():
        raise UsageError(f"--wal-dir '{wal_dir}' must be an absolute path", hint="give the full path")
    for other, what in [
        (target_dir, "the target directory"),
        *((Path(t["location"]), f"tablespace {t['name']}") for t in tablespaces),
    ]:
        if wal_dir == other or other in wal_dir.parents or wal_dir in other.parents:
            raise UsageError(
                f"--wal-dir '{wal_dir}' overlaps {what} '{other}'",
                hint="give the WAL its own directory, or leave out --wal-dir to keep pg_wal in the target",
            )
    if wal_dir.is_symlink() or (wal_dir.exists() and not wal_dir.is_dir()):
        raise UsageError(f"--wal-dir '{wal_dir}' is not a directory")
    if wal_dir.is_dir() and any(wal_dir.iterdir()) and not delta:
        raise UsageError(
            f"--wal-dir '{wal_dir}' is not empty (another server's WAL?)",
            hint="give an empty or new directory, or pass --delta to reuse it",
        )


def place_pg_wal(target_dir: Path, wal_dir: Path | None) -> None:
    """Make pg_wal a real directory inside the target, or (with `wal_dir`) a link recoverctl
    creates to that directory. Never the snapshot's link: a server started on the copy would
    write its WAL into the original server's WAL directory (or wherever a tampered snapshot
    points). A link left by an earlier restore (`--delta`) is removed, not followed."""
    dfd = os.open(target_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        try:
            st = os.stat("pg_wal", dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            st = None
        if st is not None and (wal_dir is not None or not stat.S_ISDIR(st.st_mode)):
            remove(dfd, "pg_wal", stat.S_ISDIR(st.st_mode))
            st = None
        if wal_dir is not None:
            wal_dir.mkdir(parents=True, exist_ok=True)
            os.chmod(wal_dir, 0o700)
            os.symlink(str(wal_dir), "pg_wal", dir_fd=dfd)
        elif st is None:
            os.mkdir("pg_wal", 0o700, dir_fd=dfd)
    finally:
        os.close(dfd)


def finish_layout(target_dir: Path, snap: Snapshot, tablespaces: list[dict[str, Any]]) -> None:
    md = snap.metadata
    # Not through a symlink the snapshot may have put at these names.
    write_file(target_dir, "backup_label", md["backup_label"].encode())
    if md.get("tablespace_map"):
        # PostgreSQL recreates pg_tblspc/<oid> from this file at start-up: it names the new places.
        lines = "".join(f"{t['oid']} {escape_map_path(t['location'])}\n" for t in tablespaces)
        write_file(target_dir, "tablespace_map", lines.encode())
    for d in EMPTY_DIRS:
        (target_dir / d).mkdir(parents=True, exist_ok=True)
    for stale in ("postmaster.pid", "postmaster.opts", "recovery.signal", "standby.signal"):
        (target_dir / stale).unlink(missing_ok=True)
