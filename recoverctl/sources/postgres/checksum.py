"""PostgreSQL data page checksums (storage/checksum_impl.h), vectorised over many pages at once.

The algorithm runs 32 parallel FNV-1a-like lanes over the 8 KiB page viewed as 64 rows of 32
little-endian uint32 words, with pd_checksum treated as zero, then mixes in the block number and
folds to 1..65535. numpy evaluates the lanes of every page in a batch together, so validation
keeps up with reading.
"""

from __future__ import annotations

import numpy as np

BLCKSZ = 8192
RELSEG_BLOCKS = 131072  # 1 GiB segment files of 8 KiB blocks
_N_SUMS = 32
_ROWS = BLCKSZ // (4 * _N_SUMS)
_FNV_PRIME = np.uint32(16777619)
_BASE = np.array(
    [
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
    ],
    dtype=np.uint32,
)


def page_checksums(pages: bytes | bytearray | memoryview, first_block: int) -> np.ndarray:
    """Given whole 8 KiB pages and the block number of the first, return their checksums (uint16)."""
    n = len(pages) // BLCKSZ
    # Row-major per page row: rows[r] holds row r of every page, contiguous for the lane loop.
    rows = np.frombuffer(pages, dtype="<u4", count=n * BLCKSZ // 4).reshape(n, _ROWS, _N_SUMS)
    rows = rows.transpose(1, 0, 2).copy()
    # pd_checksum is the low half of word 2 (bytes 8-9, little-endian): computed as zero.
    rows[0, :, 2] &= np.uint32(0xFFFF0000)
    sums = np.empty((n, _N_SUMS), dtype=np.uint32)
    sums[:] = _BASE
    tmp = np.empty_like(sums)
    zero = np.zeros_like(sums)
    for row in [*rows, zero, zero]:
        np.bitwise_xor(sums, row, out=tmp)
        np.multiply(tmp, _FNV_PRIME, out=sums)
        np.right_shift(tmp, np.uint32(17), out=tmp)
        np.bitwise_xor(sums, tmp, out=sums)
    result = np.bitwise_xor.reduce(sums, axis=1)
    result ^= (np.arange(first_block, first_block + n, dtype=np.uint64) & 0xFFFFFFFF).astype(np.uint32)
    return ((result % np.uint32(65535)) + np.uint32(1)).astype(np.uint16)


def bad_pages(pages: bytes | bytearray | memoryview, first_block: int, start_lsn: int) -> list[int]:
    """Return the block numbers whose stored checksum is wrong.

    New (all-zero) pages and pages whose LSN is at or after `start_lsn` are skipped: the latter
    are being written during the backup and WAL replay will overwrite them (as pgBackRest does).
    """
    n = len(pages) // BLCKSZ
    if n == 0:
        return []
    header = np.frombuffer(pages, dtype="<u2", count=n * BLCKSZ // 2).reshape(n, BLCKSZ // 2)
    stored = header[:, 4]
    upper = header[:, 7]
    lsn_words = np.frombuffer(pages, dtype="<u4", count=n * BLCKSZ // 4).reshape(n, BLCKSZ // 4)
    lsn = (lsn_words[:, 0].astype(np.uint64) << np.uint64(32)) | lsn_words[:, 1].astype(np.uint64)
    computed = page_checksums(pages, first_block)
    suspect = (computed != stored) & (lsn < np.uint64(start_lsn))
    result: list[int] = []
    for i in np.nonzero(suspect)[0]:
        if upper[i] == 0 and not any(pages[i * BLCKSZ : (i + 1) * BLCKSZ]):
            continue
        result.append(first_block + int(i))
    return result


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
            self.suspects += bad_pages(buf[:whole], self.first_block + self.offset_blocks, self.start_lsn)
            self.offset_blocks += whole // BLCKSZ
        self.pending = bytearray(buf[whole:])

    def recheck(self, path: str) -> list[int]:
        """Return the blocks that are still bad when read again from `path`."""
        still = []
        try:
            with open(path, "rb") as f:
                for block in self.suspects:
                    f.seek((block - self.first_block) * BLCKSZ)
                    page = f.read(BLCKSZ)
                    if len(page) == BLCKSZ and bad_pages(page, block, self.start_lsn):
                        still.append(block)
        except FileNotFoundError:
            return []  # dropped during the backup: WAL replay removes it as well
        return still
