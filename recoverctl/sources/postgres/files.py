"""Which files of a data directory a physical backup copies, following PostgreSQL's documented
exclusions (see "Making a Base Backup Using the Low Level API" and pg_basebackup)."""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# Directories kept empty in the backup: their contents are recreated at start-up or are per-run.
EXCLUDED_CONTENTS = frozenset(
    {
        "pg_wal",
        "pg_replslot",
        "pg_dynshmem",
        "pg_notify",
        "pg_serial",
        "pg_snapshots",
        "pg_stat_tmp",
        "pg_subtrans",
    }
)
# Top-level files that describe the running server or a previous backup/recovery, never data.
EXCLUDED_FILES = frozenset(
    {
        "postmaster.pid",
        "postmaster.opts",
        "backup_label",
        "backup_label.old",
        "tablespace_map",
        "backup_manifest",
        "recovery.signal",
        "standby.signal",
        "postgresql.auto.conf.tmp",
        "current_logfiles.tmp",
    }
)
_RELATION_RE = re.compile(r"^(\d+)(?:_(fsm|vm|init))?(?:\.(\d+))?$")
_TEMP_RELATION_RE = re.compile(r"^t\d+_\d+(?:_(?:fsm|vm|init))?(?:\.\d+)?$")


@dataclass(frozen=True)
class DataFile:
    """One entry to back up; `path` is relative to the data directory (tablespaces under pg_tblspc/)."""

    path: str
    size: int
    mtime_ns: int
    mode: int
    is_dir: bool = False
    link_target: str | None = None

    @property
    def is_relation(self) -> bool:
        """True for relation files whose pages carry checksums (base/, global/, tablespaces)."""
        parts = self.path.split("/")
        if self.is_dir or len(parts) < 2 or parts[0] not in ("base", "global", "pg_tblspc"):
            return False
        return bool(_RELATION_RE.match(parts[-1]))

    @property
    def first_block(self) -> int:
        """Block number of the file's first page within its relation fork (1 GiB segment files)."""
        m = _RELATION_RE.match(self.path.rsplit("/", 1)[-1])
        return int(m.group(3) or 0) * 131072 if m else 0


def _unlogged(names: list[str]) -> set[str]:
    """Given a database directory's file names, return the relfilenodes that have an init fork."""
    return {m.group(1) for n in names if (m := _RELATION_RE.match(n)) and m.group(2) == "init"}


def _is_excluded_relation(name: str, unlogged: set[str]) -> bool:
    if _TEMP_RELATION_RE.match(name):
        return True
    m = _RELATION_RE.match(name)
    # Unlogged relations are reset from their init fork at recovery: only the init fork is kept.
    return bool(m and m.group(1) in unlogged and m.group(2) != "init")


def walk_data_dir(data_dir: Path) -> Iterator[DataFile]:
    """Yield the entries of a data directory a backup must copy, tablespace contents included.

    Symlinks in pg_tblspc are followed (their targets are recorded in `link_target`); other
    symlinks (e.g. a pg_wal link) are kept as links.
    """
    root = Path(data_dir)
    yield from _walk(root, "", top=True)


def _entry(rel: str, st: os.stat_result, link_target: str | None = None) -> DataFile:
    is_dir = stat.S_ISDIR(st.st_mode)
    return DataFile(
        path=rel,
        size=0 if is_dir else st.st_size,
        mtime_ns=st.st_mtime_ns,
        mode=stat.S_IMODE(st.st_mode),
        is_dir=is_dir,
        link_target=link_target,
    )


def _walk(base: Path, prefix: str, top: bool = False) -> Iterator[DataFile]:
    try:
        names = sorted(os.listdir(base))
    except FileNotFoundError:
        return  # a directory dropped while the backup runs: WAL replay recreates the truth
    unlogged = _unlogged(names)
    for name in names:
        rel = f"{prefix}{name}"
        full = base / name
        if name.startswith("pgsql_tmp") or name.startswith("pg_internal.init"):
            continue
        if top and name in EXCLUDED_FILES:
            continue
        if _is_excluded_relation(name, unlogged):
            continue
        try:
            st = os.lstat(full)
        except FileNotFoundError:
            continue
        if stat.S_ISLNK(st.st_mode):
            target = os.readlink(full)
            if prefix == "pg_tblspc/":
                try:
                    tst = os.stat(full)
                except FileNotFoundError:
                    continue
                yield _entry(rel, tst, link_target=target)
                yield from _walk(full, rel + "/")
            else:
                yield DataFile(rel, 0, st.st_mtime_ns, 0o777, link_target=target)
            continue
        if stat.S_ISDIR(st.st_mode):
            yield _entry(rel, st)
            if top and name in EXCLUDED_CONTENTS:
                if name == "pg_wal":
                    # recovery needs pg_wal/archive_status to exist
                    status = full / "archive_status"
                    if status.is_dir():
                        yield _entry(rel + "/archive_status", os.lstat(status))
                continue
            yield from _walk(full, rel + "/")
        elif stat.S_ISREG(st.st_mode):
            yield _entry(rel, st)


class Exclusions:
    """The same rules as `walk_data_dir`, as a predicate `(relpath, lstat) -> excluded` for the
    repository archiver, which walks the tree itself."""

    def __init__(self, data_dir: Path):
        self.data_dir = Path(data_dir)
        self._unlogged: dict[str, set[str]] = {}

    def _unlogged_in(self, parent: str) -> set[str]:
        found = self._unlogged.get(parent)
        if found is None:
            try:
                found = _unlogged(os.listdir(self.data_dir / parent))
            except OSError:
                found = set()
            self._unlogged[parent] = found
        return found

    def __call__(self, relpath: str, st: os.stat_result) -> bool:
        parts = relpath.split("/")
        name = parts[-1]
        if name.startswith("pgsql_tmp") or name.startswith("pg_internal.init"):
            return True
        if len(parts) == 1:
            return name in EXCLUDED_FILES
        if parts[0] in EXCLUDED_CONTENTS:
            # keep the directory itself (and pg_wal/archive_status), drop what is inside
            return not (relpath == "pg_wal/archive_status" and stat.S_ISDIR(st.st_mode))
        if parts[0] == "pg_wal" or (len(parts) > 2 and parts[:2] == ["pg_wal", "archive_status"]):
            return True
        if parts[0] in ("base", "global", "pg_tblspc") and not stat.S_ISDIR(st.st_mode):
            return _is_excluded_relation(name, self._unlogged_in("/".join(parts[:-1])))
        return False
