"""From WAL to changed blocks: which pages of which relation files changed between two LSNs.

The decoder is the server's own `pg_waldump`; its text output names every block a record
touches (`blkref #N: rel SPC/DB/REL [fork F] blk B`, full-page images included), the relation
files created (`Storage CREATE`) or truncated (`Storage TRUNCATE`), and the database directories
made by copying (`Database CREATE_FILE_COPY`, also what ALTER DATABASE SET TABLESPACE logs) or
by WAL (`Database CREATE_WAL_LOG`). The segments come from pg_wal when the server still has them,
else from the repository's WAL archive.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from recoverctl.errors import ObjectNotFound
from recoverctl.sources.postgres.receiver_partial import read_wal_to
from recoverctl.sources.postgres.walnames import format_lsn, segment_name, segments_between

if TYPE_CHECKING:
    from recoverctl.repo import Repository

DEFAULT_TABLESPACE = 1663
GLOBAL_TABLESPACE = 1664
_BLKREF = re.compile(r"blkref #\d+: rel (\d+)/(\d+)/(\d+),?(?: fork (\w+),?)? blk (\d+)")
_STORAGE = re.compile(r"desc: (CREATE|TRUNCATE) (\S+)")
_DATABASE = re.compile(r"desc: CREATE_(?:FILE_COPY copy dir \d+/\d+ to|WAL_LOG create dir) (\d+)/(\d+)")
_LSN = re.compile(r"lsn: ([0-9A-F]+)/([0-9A-F]+),")
_RELFILE = re.compile(r"^(\d+)(?:_(fsm|vm|init))?(?:\.(\d+))?$")

# A relation fork: tablespace, database, relfilenode, fork name ("main", "fsm", "vm", "init").
RelFork = tuple[int, int, int, str]


class WalUnavailable(Exception):
    """The WAL between two LSNs cannot be read (a gap, a fetch failure, a decoder error)."""


@dataclass(frozen=True)
class RelationFile:
    """A relation segment file: its fork and the number of its 1 GiB segment (`.N` suffix)."""

    fork: RelFork
    segment: int


def relation_file(relpath: str) -> RelationFile | None:
    """Given a path relative to the data directory (base/D/R, global/R, pg_tblspc/S/PG_x/D/R, with
    _fork and .N suffixes), return the relation file it names, or None for any other file."""
    parts = relpath.split("/")
    if parts[0] == "base" and len(parts) == 3 and parts[1].isdigit():
        spc, db = DEFAULT_TABLESPACE, int(parts[1])
    elif parts[0] == "global" and len(parts) == 2:
        spc, db = GLOBAL_TABLESPACE, 0
    elif parts[0] == "pg_tblspc" and len(parts) == 5 and parts[1].isdigit() and parts[3].isdigit():
        spc, db = int(parts[1]), int(parts[3])
    else:
        return None
    m = _RELFILE.match(parts[-1])
    if m is None:
        return None
    return RelationFile((spc, db, int(m.group(1)), m.group(2) or "main"), int(m.group(3) or 0))


@dataclass
class WalChanges:
    """What the WAL between `start_lsn` and `end_lsn` says about relation files."""

    start_lsn: int
    end_lsn: int
    # A bitmap per fork, bit b set when block b changed: 16 MiB per TiB of relation at most, where
    # a set of ints would take ~70 bytes a block.
    blocks: dict[RelFork, bytearray] = field(default_factory=dict)
    created: set[RelFork] = field(default_factory=set)
    truncated: set[tuple[int, int, int]] = field(default_factory=set)
    database_dirs: set[tuple[int, int]] = field(default_factory=set)
    hint_bits_unlogged: bool = False  # a PARAMETER_CHANGE turned wal_log_hints off in the range
    records: int = 0
    decode_s: float = 0.0
    segments_from_pg_wal: int = 0
    segments_from_repository: int = 0

    @property
    def changed_blocks(self) -> int:
        """Return the number of distinct blocks the WAL names."""
        return sum(int.from_bytes(b, "little").bit_count() for b in self.blocks.values())

    def mark(self, fork: RelFork, block: int) -> None:
        """Record block `block` of `fork` as changed."""
        bitmap = self.blocks.get(fork)
        if bitmap is None:
            bitmap = self.blocks[fork] = bytearray()
        byte = block >> 3
        if byte >= len(bitmap):
            bitmap.extend(bytes(byte + 1 - len(bitmap) + len(bitmap) // 4))  # amortised growth
        bitmap[byte] |= 1 << (block & 7)

    def changed_in(self, fork: RelFork, first_block: int, count: int) -> bytes:
        """Return the bitmap bytes of blocks [first_block, first_block + count) of `fork` (both
        multiples of 8); empty when none of them changed."""
        bitmap = self.blocks.get(fork)
        return bytes(bitmap[first_block >> 3 : (first_block + count) >> 3]) if bitmap else b""

    def blocks_of(self, fork: RelFork) -> set[int]:
        """Return the changed block numbers of `fork` (for reports and tests)."""
        bitmap = self.blocks.get(fork, b"")
        return {i * 8 + bit for i, byte in enumerate(bitmap) if byte for bit in range(8) if byte >> bit & 1}

    def add_lines(self, lines: Iterable[str]) -> None:
        """Take in `pg_waldump` output lines."""
        for line in lines:
            if not line.startswith("rmgr:"):
                continue
            self.records += 1
            if "blkref" in line:
                for spc, db, rel, fork, blk in _BLKREF.findall(line):
                    self.mark((int(spc), int(db), int(rel), fork or "main"), int(blk))
            if line.startswith("rmgr: Storage"):
                self._storage(line)
            elif line.startswith("rmgr: Database"):
                m = _DATABASE.search(line)
                if m:
                    self.database_dirs.add((int(m.group(1)), int(m.group(2))))
            elif "PARAMETER_CHANGE" in line and "wal_log_hints=off" in line:
                self.hint_bits_unlogged = True

    def _storage(self, line: str) -> None:
        m = _STORAGE.search(line)
        rf = relation_file(m.group(2)) if m else None
        if m is None or rf is None:
            return
        if m.group(1) == "CREATE":
            self.created.add(rf.fork)
        else:
            self.truncated.add(rf.fork[:3])


def _fetch_segments(
    repo: Repository, source: str, pg_wal: Path | None, names: list[str], dest: Path, *, prefer_pg_wal: bool
) -> tuple[int, int]:
    """Put each named segment into `dest` (a link to pg_wal's copy when preferred and present, else
    fetched from the repository, 2 at a time); return how many came from each; raise WalUnavailable."""
    remote: list[str] = []
    for name in names:
        if prefer_pg_wal and pg_wal is not None and (pg_wal / name).is_file():
            os.symlink(pg_wal / name, dest / name)
        else:
            remote.append(name)

    def fetch(name: str) -> None:
        try:
            with open(dest / name, "wb") as out:
                read_wal_to(repo, source, name, out)
        except ObjectNotFound:
            raise WalUnavailable(f"WAL segment {name} is neither in pg_wal nor in the archive") from None
        except Exception as e:
            raise WalUnavailable(f"WAL segment {name} could not be fetched: {e}") from None

    if remote:
        # Two at a time, each inflated straight into its file: a segment's stored form is in
        # memory while it is decrypted, the segment itself never is.
        with ThreadPoolExecutor(min(2, len(remote)), thread_name_prefix="walfetch") as pool:
            list(pool.map(fetch, remote))  # decryption and zstd release the GIL
    return len(names) - len(remote), len(remote)


def _waldump_lines(argv: list[str], end_lsn: int) -> Iterator[str]:
    """Yield pg_waldump's lines of the records before `end_lsn`; raise WalUnavailable when it fails
    before reaching that LSN.

    pg_waldump runs without --end and is stopped at the first record at or past `end_lsn`: with
    --end at a record that starts right after a page header (as a backup's start LSN after a WAL
    switch does), it fails on the page it is not allowed to read.
    """
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, text=True, bufsize=1 << 20)
        assert proc.stdout is not None
        reached = False
        try:
            for line in proc.stdout:
                m = _LSN.search(line)
                if m and (int(m.group(1), 16) << 32 | int(m.group(2), 16)) >= end_lsn:
                    reached = True
                    break
                yield line
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.stdout.close()
            proc.wait()
        if not reached:
            err.seek(0)
            msg = err.read().decode(errors="replace").strip() or "the WAL ends before the backup's start"
            raise WalUnavailable(f"pg_waldump failed: {msg[-400:]}")


@contextmanager
def _segment_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="recoverctl-pagemap-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def changed_blocks(
    repo: Repository,
    source: str,
    bin_dir: Path,
    pg_wal: Path | None,
    *,
    timeline: int,
    start_lsn: int,
    end_lsn: int,
    segment_size: int,
) -> WalChanges:
    """Decode the WAL of `timeline` from `start_lsn` up to `end_lsn` with pg_waldump; return the
    changes it records. Segments are read from `pg_wal` when present, else from the repository;
    a failed decode is retried once with every segment from the repository (pg_wal may have
    recycled one meanwhile). Raise WalUnavailable when the WAL cannot be read whole.
    """
    changes = WalChanges(start_lsn, end_lsn)
    if end_lsn <= start_lsn:
        return changes
    names = segments_between(
        segment_name(timeline, start_lsn, segment_size), segment_name(timeline, end_lsn - 1, segment_size),
        segment_size,
    )  # fmt: skip
    started = time.monotonic()
    first_error: WalUnavailable | None = None
    for prefer_pg_wal in (True, False):
        changes = WalChanges(start_lsn, end_lsn)
        try:
            with _segment_dir() as wal_dir:
                local, remote = _fetch_segments(
                    repo, source, pg_wal, names, wal_dir, prefer_pg_wal=prefer_pg_wal
                )
                argv = [str(bin_dir / "pg_waldump"), "--path", str(wal_dir), "--timeline", str(timeline),
                        "--start", format_lsn(start_lsn)]  # fmt: skip
                changes.add_lines(_waldump_lines(argv, end_lsn))
        except WalUnavailable as e:
            if first_error is None and prefer_pg_wal:
                first_error = e
                continue
            raise WalUnavailable(
                f"{first_error}; then from the archive only: {e}" if first_error else str(e)
            ) from None
        changes.segments_from_pg_wal, changes.segments_from_repository = local, remote
        break
    changes.decode_s = round(time.monotonic() - started, 3)
    return changes
