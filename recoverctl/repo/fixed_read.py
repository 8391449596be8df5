"""Reading a file at fixed, aligned boundaries instead of content-defined ones, and only the chunks
that changed: every other chunk keeps its content id from the parent snapshot without a read.

Fixed boundaries suit PostgreSQL relation files: a changed 8 KiB page maps to exactly one chunk,
so a caller that knows which pages changed (from the WAL) can name the chunks to read. The
stored file node is the same as for content-defined chunking — content ids in order — plus
`block_size`, which says the ids sit at fixed offsets and may be reused by chunk index.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

from recoverctl.repo.content_ids import ContentIds
from recoverctl.repo.tree import Node

# How many of the chunks to read next are announced to the kernel (2 MiB at 128 KiB chunks).
READ_AHEAD_CHUNKS = 16


@dataclass
class FixedRead:
    """How to read one file: at `block_size` boundaries, keeping the content id of each chunk
    index in `keep` (the parent's) without reading it. `on_read(offset, data)` sees every chunk
    that is read (e.g. to validate page checksums on the way)."""

    block_size: int
    keep: dict[int, str] = field(default_factory=dict)
    on_read: Callable[[int, bytes], None] | None = None


# Given a regular file's path relative to the backup root, its lstat and its node in the parent
# snapshot (None when new), return how to read it at fixed boundaries, or None for content-defined
# chunking. Called on the walker thread only.
ReadPlanFn = Callable[[str, os.stat_result, Node | None], FixedRead | None]
# Seal one chunk's bytes into the repository in the background; return its content id's future.
SubmitFn = Callable[[bytes], Future[str]]


def parent_chunks(parent: Node | None, block_size: int) -> list[str] | None:
    """Given the parent snapshot's node of a file, return its content ids when they were cut at
    `block_size` boundaries (so they can be reused by index), else None."""
    if parent is None or parent.get("type") != "file" or parent.get("block_size") != block_size:
        return None
    return list(parent.get("content") or [])


def read_fixed(
    fd: int,
    size: int,
    plan: FixedRead,
    submit: SubmitFn,
    count: Callable[[int], None],
    indexed: Callable[[str], bool],
) -> tuple[list[str], int]:
    """Read the open file `fd` of `size` bytes chunk by chunk per `plan`; return its content ids
    in order and the length they cover (shorter than `size` when the file shrank meanwhile).

    A kept id that is no longer in the repository's index is read again instead. `count(n)` is
    called with the bytes actually read.
    """
    bs = plan.block_size
    chunks = (size + bs - 1) // bs
    kept = {i: cid for i, cid in plan.keep.items() if i < chunks and indexed(cid)}
    # Reads that skip kept chunks are scattered: the kernel's readahead does not see them coming,
    # and one pread at a time keeps one request in flight. Announcing the next few lets the disk
    # serve them together (measured: 20 % of a cold 1.5 GB file's chunks in 0.25 s instead of 0.55 s).
    advise = bool(kept) and hasattr(os, "posix_fadvise")
    to_read = [i for i in range(chunks) if i not in kept] if advise else []
    advised = reads = 0  # of to_read: how many were announced, and read
    results = ContentIds()
    covered = 0
    try:
        for index in range(chunks):
            offset = index * bs
            if index in kept:
                results.append(kept[index])
                covered = min(size, offset + bs)
                continue
            if advise:
                start = max(advised, reads + 1)
                ahead = to_read[start : reads + 1 + READ_AHEAD_CHUNKS]
                for i in ahead:
                    os.posix_fadvise(fd, i * bs, bs, os.POSIX_FADV_WILLNEED)
                advised = start + len(ahead)
            reads += 1
            data = os.pread(fd, bs, offset)
            if not data:
                break
            count(len(data))
            if plan.on_read is not None:
                plan.on_read(offset, data)
            results.append(submit(data))
            covered = offset + len(data)
            if len(data) < bs:
                break
        return results.result(), covered
    finally:
        results.cancel()
