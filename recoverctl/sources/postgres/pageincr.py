"""Page-level incrementals: which chunks of each relation file a physical backup reads.

Relation files are cut at fixed 128 KiB boundaries (16 pages), so a changed 8 KiB block maps to
exactly one chunk. For an incremental whose WAL since the parent's start LSN could be decoded
(pagemap), a relation file present in the parent reads only the chunks holding blocks the WAL
names, plus any chunk past the parent's length; every other chunk keeps the parent's content id
unread. In a repository that holds page patches (format 3), a changed chunk reads only its
changed pages (with those of the parent's patch of it), stored as a patch over the parent's
chunk, until a quarter of its pages would be patched; then it is read and stored whole again.

Why that is enough: the parent read each page after its own start LSN, so any later difference
between that copy and the page as of this backup's start was caused by a WAL record in [parent
start, this start); changes after this start are repaired by replay, as for any online backup
(full-page writes are forced during a backup). A page outside a chunk's patch is the parent's
page (its base's), by the same argument one snapshot further back.

What the WAL cannot vouch for is read whole, and the reason is counted in the snapshot:
free-space and visibility maps (FSM updates are not WAL-logged, VM bits are cleared without a
block reference to the VM page), init forks of unlogged relations, files created, truncated or
copied (CREATE DATABASE, SET TABLESPACE) in the range, files new since the parent or cut
another way there; and everything when the WAL has a gap, the timeline switched, or hint-bit
changes went unlogged at some point since the parent started (data checksums and wal_log_hints
both off: the page would differ from a full copy, although only in hint bits, which are
recomputable — we keep page identity).
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from recoverctl.repo.fixed_read import FixedRead, parent_chunks, parent_patches
from recoverctl.repo.page_patch import max_patch_pages
from recoverctl.repo.tree import Node
from recoverctl.sources.postgres.checksum import BLCKSZ, RELSEG_BLOCKS, PageBatch, recheck
from recoverctl.sources.postgres.pagemap import RelationFile, WalChanges, relation_file

# 16 pages: fine enough that a 1 % scattered update on pgbench reads at most 2x its changed pages,
# coarse enough that a 1 TB cluster is ~8 M blobs (measured, see docs/postgres.md).
BLOCK_SIZE = 128 * 1024
PAGES_PER_CHUNK = BLOCK_SIZE // BLCKSZ
# Decoding a byte of WAL costs at most about as much as reading and storing a byte of data (less
# for full-page images, which pg_waldump does not print), and how many chunks the WAL touches is
# only known after decoding it. Decoding when the WAL is under a quarter of the relation bytes a
# file-level incremental would read costs at most ~25 % over that when it saves nothing (a dense
# change: a 1 % pgbench update's WAL is ~0.7x the files), and saves nearly all of it for a sparse
# or localized change, whose changed pages alone are read and stored (page patches).
WAL_DECODE_SHARE = 0.25


class RelationReads:
    """The archiver's read plan for one physical backup (see repo.fixed_read.ReadPlanFn).

    `changes` None: every relation file is read whole (a full backup when `reason` is None, else a
    fallback for that reason). With `validate`, the pages of every chunk read are checked against
    their checksums on the way (`checked()` gives the result).
    """

    def __init__(
        self,
        data_dir: Path,
        changes: WalChanges | None,
        reason: str | None,
        *,
        start_lsn: int,
        validate: bool,
        detail: str | None = None,
        wal_generated: int | None = None,
        hints_logged: bool = False,
        patches: bool = False,
    ):
        self.data_dir = data_dir
        self.wal_generated = wal_generated
        self.hints_logged = hints_logged
        self.patches = patches
        self.changes = changes
        self.reason = reason
        self.detail = detail
        self.start_lsn = start_lsn
        self.validate = validate
        self.whole: Counter[str] = Counter()
        self.files_paged = 0
        self.chunks_kept = 0
        self.chunks_read = 0
        self.chunks_patched = 0
        self.pages_patched = 0
        self.pages_checked = 0
        self._suspects: dict[str, tuple[int, list[int]]] = {}
        self._batch = PageBatch(start_lsn)
        self._lock = threading.Lock()

    def __call__(self, relpath: str, st: os.stat_result, parent: Node | None) -> FixedRead | None:
        rf = relation_file(relpath)
        if rf is None:
            return None
        patch: dict[int, int] = {}  # filled below for a paged read: its pages are not whole chunks
        on_read = self._on_read(relpath, rf.segment * RELSEG_BLOCKS, patch)
        why = self.reason if self.changes is None else self._whole_file_reason(rf, st, parent)
        if why is not None or self.changes is None:
            if why is not None:
                self.whole[why] += 1
            return FixedRead(BLOCK_SIZE, on_read=on_read)
        kept = parent_chunks(parent, BLOCK_SIZE)
        carried = parent_patches(parent, BLCKSZ) if parent is not None else None
        assert kept is not None and parent is not None and carried is not None
        changed = self._changed_chunks(rf)
        parent_size = int(parent["size"])
        # A chunk is reused (as is or under a patch) only when it is whole in both copies, or the
        # file kept its length.
        whole_chunks = len(kept) if st.st_size == parent_size else parent_size // BLOCK_SIZE
        plan = FixedRead(BLOCK_SIZE, on_read=on_read, page_size=BLCKSZ, patch=patch)
        limit = max_patch_pages(BLOCK_SIZE, BLCKSZ) if self.patches else 0
        for i in range(whole_chunks):
            old = carried.get(i)
            if i not in changed:
                plan.keep[i] = kept[i]
                if old is not None:
                    plan.carry[i] = old
                continue
            mask = changed[i] | (old[0] if old is not None else 0)
            if mask.bit_count() <= limit:
                plan.keep[i] = kept[i]
                plan.patch[i] = mask
        self.files_paged += 1
        self.chunks_kept += len(plan.keep) - len(plan.patch)
        self.chunks_patched += len(plan.patch)
        return plan

    def _whole_file_reason(self, rf: RelationFile, st: os.stat_result, parent: Node | None) -> str | None:
        """Return why this relation file must be read whole despite decoded WAL, or None."""
        changes = self.changes
        assert changes is not None
        spc, db, rel, fork = rf.fork
        kept = parent_chunks(parent, BLOCK_SIZE)
        if fork in ("fsm", "vm"):
            return "map_fork"
        if fork == "init":
            return "unlogged"
        if parent is None:
            return "new_file"
        if (
            kept is None
            or len(kept) != -(-int(parent.get("size", 0)) // BLOCK_SIZE)
            or parent_patches(parent, BLCKSZ) is None
        ):
            return "parent_not_page_aligned"
        if (spc, db) in changes.database_dirs:
            return "database_copied"
        if rf.fork in changes.created:
            return "created"
        if (spc, db, rel) in changes.truncated or st.st_size < int(parent["size"]):
            return "truncated"
        return None

    def _changed_chunks(self, rf: RelationFile) -> dict[int, int]:
        """Return {chunk index: mask of its changed pages} of the chunks within this segment file
        that hold blocks the WAL changed."""
        assert self.changes is not None
        bits = self.changes.changed_in(rf.fork, rf.segment * RELSEG_BLOCKS, RELSEG_BLOCKS)
        step = PAGES_PER_CHUNK // 8  # bitmap bytes per chunk; bit p of a chunk's bytes is its page p
        masks = (int.from_bytes(bits[i : i + step], "little") for i in range(0, len(bits), step))
        return {i: mask for i, mask in enumerate(masks) if mask}

    def _on_read(self, relpath: str, first_block: int, patch: dict[int, int]) -> Callable[[int, bytes], None]:
        def seen(offset: int, data: bytes) -> None:
            full = None
            with self._lock:
                if offset // BLOCK_SIZE in patch:
                    self.pages_patched += len(data) // BLCKSZ
                else:
                    self.chunks_read += 1
                # Chunks are validated in batches of 512 pages: numpy's lane loop costs the same
                # for 16 pages as for 512 (one chunk at a time took ~3x the copy's own time).
                if self.validate and self._batch.add(relpath, first_block + offset // BLCKSZ, data):
                    full, self._batch = self._batch, PageBatch(self.start_lsn)
            if full is not None:
                self._validate(full)

        return seen

    def _validate(self, batch: PageBatch) -> None:
        """Check a batch's pages; keep the suspects per file for `checked()`."""
        found = batch.flush()
        with self._lock:
            self.pages_checked += batch.pages_checked
            for rel, blocks in found.items():
                rf = relation_file(rel)
                assert rf is not None  # only relation files get a plan that validates
                self._suspects.setdefault(rel, (rf.segment * RELSEG_BLOCKS, []))[1].extend(blocks)

    def checked(self) -> tuple[dict[str, list[int]], int]:
        """Return the blocks that failed checksum validation per file (after one re-read, which
        clears pages torn by a concurrent write) and the number of pages checked."""
        with self._lock:
            rest, self._batch = self._batch, PageBatch(self.start_lsn)
        self._validate(rest)
        bad: dict[str, list[int]] = {}
        for rel, (first, blocks) in sorted(self._suspects.items()):
            still = recheck(str(self.data_dir / rel), first, sorted(blocks), self.start_lsn)
            if still:
                bad[rel] = still
        return bad, self.pages_checked

    def summary(self) -> dict[str, Any]:
        """Return what the snapshot metadata records about how relation files were read."""
        mode = "page" if self.changes is not None else "file" if self.reason is not None else "full"
        out: dict[str, Any] = {
            "mode": mode,
            "block_size": BLOCK_SIZE,
            "reason": self.reason,
            "detail": self.detail,
            "files_paged": self.files_paged,
            "chunks_read": self.chunks_read,
            "chunks_kept": self.chunks_kept,
            "chunks_patched": self.chunks_patched,
            "pages_patched": self.pages_patched,
            "whole_file_reads": dict(sorted(self.whole.items())),
            "wal_generated_bytes": self.wal_generated,
            # Whether hint-bit changes were WAL-logged when this backup started: a child may keep
            # this snapshot's pages only then (its WAL would not name a page whose only later
            # change is a hint bit set while they were not).
            "hints_logged": self.hints_logged,
        }
        c = self.changes
        if c is not None:
            out.update(
                wal_records=c.records,
                changed_blocks=c.changed_blocks,
                decode_s=c.decode_s,
                segments_from_pg_wal=c.segments_from_pg_wal,
                segments_from_repository=c.segments_from_repository,
            )
        return out


def relation_bytes_since(data_dir: Path, since_ns: int) -> int:
    """Given a data directory and a time, return the bytes of relation files (tablespaces
    included) modified since then: what a file-level incremental would read."""
    total = 0
    stack = [data_dir / "base", data_dir / "global", data_dir / "pg_tblspc"]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue  # a database or tablespace dropped while we walk: nothing to read there
        for e in entries:
            try:
                if e.is_dir():  # follows pg_tblspc's links, as the backup does
                    stack.append(Path(e.path))
                    continue
                st = e.stat()
            except OSError:
                continue
            if st.st_mtime_ns >= since_ns and relation_file(str(Path(e.path).relative_to(data_dir))):
                total += st.st_size
    return total
