"""PostgreSQL data page checksums (storage/checksum_impl.h), vectorised over many pages at once.

The algorithm runs 32 parallel FNV-1a-like lanes over the 8 KiB page viewed as 64 rows of 32
little-endian uint32 words, with pd_checksum treated as zero, then mixes in the block number and
folds to 1..65535. numpy evaluates the lanes of every page in a batch together, so validation
keeps up with reading.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

BLCKSZ = 8192
RELSEG_BLOCKS = 131072  # 1 GiB segment files of 8 KiB blocks
_N_SUMS = 32
_ROWS = BLCKSZ // (4 * _N_SUMS)
_FNV_PRIME = 16777619
_BASE = (
    0x5B1F36E9,
    0xB8525960,
    0x02AB50AA,
    0x1DE66D2A,
    0x79FF467A,
    0x9BB9F8A3,
    0x217E7CD2,
    0x83E13D2C,
    0xF8D4474F,
    0xE39EB970,
    0x42C6AE16,
    0x993216FA,
    0x7B093B5D,
    0x98DAFF3C,
    0xF718902A,
    0x0B1C9CDB,
    0xE58F764B,
    0x187636BC,
    0x5D7B3BB1,
    0xE73DE7DE,
    0x92BEC979,
    0xCCA6C0B2,
    0x304A0979,
    0x85AA43D4,
    0x783125BB,
    0x6CA8EAA2,
    0xE407EAC6,
    0x4B5CFC3E,
    0x9FBF8C76,
    0x15CA20BE,
    0xF2CA9FD3,
    0x959BD756,
)


@cache
def _numpy() -> tuple[Any, Any, Any]:
    """Return numpy with the lane constants as its arrays, imported on first use: restores,
    listings and verify never check pages, and numpy costs ~80 ms to import (and starts its BLAS
    threads)."""
    import numpy

    return numpy, numpy.uint32(_FNV_PRIME), numpy.array(_BASE, dtype=numpy.uint32)


# Pages per numpy batch: the lane state (pages x 32 words) then stays in the CPU cache.
_BATCH = 512


def page_checksums(pages: bytes | bytearray | memoryview, first_block: int) -> np.ndarray:
    """Given whole 8 KiB pages and the block number of the first, return their checksums (uint16)."""
    np = _numpy()[0]
    n = len(pages) // BLCKSZ
    out = np.empty(n, dtype=np.uint16)
    for i in range(0, n, _BATCH):
        k = min(_BATCH, n - i)
        blocks = np.arange(first_block + i, first_block + i + k, dtype=np.uint64)
        out[i : i + k] = _checksums(memoryview(pages)[i * BLCKSZ : (i + k) * BLCKSZ], blocks)
    return out


def _checksums(pages: bytes | bytearray | memoryview, blocks: np.ndarray) -> np.ndarray:
    """Checksums of len(blocks) whole pages, page i being block blocks[i] of its relation fork."""
    np, fnv_prime, base = _numpy()
    n = len(blocks)
    # words[:, r, :] is row r of every page: a strided view, read in place (no transposed copy).
    words = np.frombuffer(pages, dtype="<u4", count=n * BLCKSZ // 4).reshape(n, _ROWS, _N_SUMS)
    # pd_checksum is the low half of word 2 of row 0 (bytes 8-9, little-endian): computed as zero.
    row0 = words[:, 0, :].copy()
    row0[:, 2] &= np.uint32(0xFFFF0000)
    sums = np.empty((n, _N_SUMS), dtype=np.uint32)
    sums[:] = base
    tmp = np.empty_like(sums)
    for r in range(_ROWS):
        np.bitwise_xor(sums, row0 if r == 0 else words[:, r, :], out=tmp)
        np.multiply(tmp, fnv_prime, out=sums)
        np.right_shift(tmp, np.uint32(17), out=tmp)
        np.bitwise_xor(sums, tmp, out=sums)
    for _ in range(2):  # two rounds of zeros, as checksum_impl.h mixes the final values
        np.multiply(sums, fnv_prime, out=tmp)
        np.right_shift(sums, np.uint32(17), out=sums)
        np.bitwise_xor(tmp, sums, out=sums)
    result = np.bitwise_xor.reduce(sums, axis=1)
    result ^= (blocks & 0xFFFFFFFF).astype(np.uint32)
    return ((result % np.uint32(65535)) + np.uint32(1)).astype(np.uint16)


def bad_pages(pages: bytes | bytearray | memoryview, first_block: int, start_lsn: int) -> list[int]:
    """Return the block numbers whose stored checksum is wrong.

    New (all-zero) pages and pages whose LSN is at or after `start_lsn` are skipped: the latter
    are being written during the backup and WAL replay will overwrite them (as pgBackRest does).
    """
    n = len(pages) // BLCKSZ
    if n == 0:
        return []
    return [first_block + i for i in _suspects(pages, n, page_checksums(pages, first_block), start_lsn)]


def _suspects(
    pages: bytes | bytearray | memoryview, n: int, computed: np.ndarray, start_lsn: int
) -> list[int]:
    """Indexes of the pages whose stored checksum differs from `computed`, minus new pages and
    pages written after `start_lsn`."""
    np = _numpy()[0]
    header = np.frombuffer(pages, dtype="<u2", count=n * BLCKSZ // 2).reshape(n, BLCKSZ // 2)
    stored = header[:, 4]
    upper = header[:, 7]
    lsn_words = np.frombuffer(pages, dtype="<u4", count=n * BLCKSZ // 4).reshape(n, BLCKSZ // 4)
    lsn = (lsn_words[:, 0].astype(np.uint64) << np.uint64(32)) | lsn_words[:, 1].astype(np.uint64)
    suspect = (computed != stored) & (lsn < np.uint64(start_lsn))
    result: list[int] = []
    for i in np.nonzero(suspect)[0]:
        if upper[i] == 0 and not any(memoryview(pages)[i * BLCKSZ : (i + 1) * BLCKSZ]):
            continue
        result.append(int(i))
    return result


class PageBatch:
    """Validates the pages of many small relation files in one numpy pass.

    The lane loop costs ~270 numpy calls whatever the batch size, so files of a few pages (most
    of a cluster's ~1,000 files) are gathered and checked together. `add()` returns True when
    the batch is full; `flush()` checks it and returns the suspect blocks per file key.

    Pages are copied into the batch's own buffer as they are added: holding the callers' chunks
    instead kept them alive after they were sealed, and joining them made a second copy (16 MiB
    of a page-mode incremental's peak memory, measured with tracemalloc).
    """

    def __init__(self, start_lsn: int, limit: int = _BATCH):
        self.start_lsn = start_lsn
        self.limit = limit
        self._pages = bytearray(limit * BLCKSZ)
        self._blocks: list[np.ndarray] = []
        self._owners: list[tuple[str, int, int]] = []  # key, first block, page count
        self.pages = 0
        self.pages_checked = 0

    def add(self, key: str, first_block: int, data: bytes | memoryview) -> bool:
        n = len(data) // BLCKSZ  # a trailing partial page (a file being extended) is not checked
        if n:
            end = (self.pages + n) * BLCKSZ
            if end > len(self._pages):
                self._pages.extend(bytes(end - len(self._pages)))
            self._pages[self.pages * BLCKSZ : end] = memoryview(data)[: n * BLCKSZ]
            np = _numpy()[0]
            self._blocks.append(np.arange(first_block, first_block + n, dtype=np.uint64))
            self._owners.append((key, first_block, n))
            self.pages += n
        return self.pages >= self.limit

    def flush(self) -> dict[str, list[int]]:
        if not self.pages:
            return {}
        np = _numpy()[0]
        n = self.pages
        found: dict[str, list[int]] = {}
        pages = memoryview(self._pages)[: n * BLCKSZ]
        bad = _suspects(pages, n, _checksums(pages, np.concatenate(self._blocks)), self.start_lsn)
        del pages  # the next add() may grow the buffer: no view of it may be left
        if bad:
            starts = np.cumsum([0] + [c for _, _, c in self._owners])
            for i in bad:
                owner = int(np.searchsorted(starts, i, side="right")) - 1
                key, first, _ = self._owners[owner]
                found.setdefault(key, []).append(first + i - int(starts[owner]))
        self.pages_checked += n
        self._blocks, self._owners, self.pages = [], [], 0
        return found


def recheck(path: str, first_block: int, suspects: list[int], start_lsn: int) -> list[int]:
    """Return the `suspects` blocks that are still bad when read again from `path` (whose first
    page is `first_block`): a page torn by a concurrent write reads back whole (and usually with a
    newer LSN), a corrupted one does not."""
    still = []
    try:
        with open(path, "rb") as f:
            for block in suspects:
                f.seek((block - first_block) * BLCKSZ)
                page = f.read(BLCKSZ)
                if len(page) == BLCKSZ and bad_pages(page, block, start_lsn):
                    still.append(block)
    except FileNotFoundError:
        return []  # dropped during the backup: WAL replay removes it as well
    return still


class PageValidator:
    """Validates one relation file's pages as its bytes stream past (any chunk sizes).

    A trailing partial page (a file being extended) is not checked. `recheck()` re-reads the
    suspect pages from disk once: a page torn by a concurrent write reads back whole (and
    usually with a newer LSN), a corrupted one does not.
    """

    def __init__(self, first_block: int, start_lsn: int):
        self.first_block = first_block
        self.start_lsn = start_lsn
        self.pending = bytearray()
        self.offset_blocks = 0
        self.suspects: list[int] = []

    def feed(self, data: bytes | memoryview) -> None:
        if self.pending:
            self.pending += data
            buf: bytes | bytearray | memoryview = self.pending
        else:
            buf = data
        whole = len(buf) // BLCKSZ * BLCKSZ
        if whole:
            view = memoryview(buf)[:whole]  # a view: slicing bytes would copy the batch
            self.suspects += bad_pages(view, self.first_block + self.offset_blocks, self.start_lsn)
            self.offset_blocks += whole // BLCKSZ
        self.pending = bytearray(memoryview(buf)[whole:])

    def recheck(self, path: str) -> list[int]:
        """Return the suspect blocks that are still bad when read again from `path`."""
        return recheck(path, self.first_block, self.suspects, self.start_lsn)
