"""The in-memory blob index and the index files it is loaded from and saved to.

An index file (``index/<sha256>``) is a sealed JSON document
``{"version": 1, "packs": [{"id", "size", "blobs": [[type, id, offset, length, raw_length]]}]}``.
Several index files may list the same blob; any of them is right. Prune writes one new index and
deletes the files it replaces.

In memory a blob costs about 60 bytes, not the ~400 of a dict entry holding a bytes key and a
dataclass: its 32-byte id sits in one bytearray, its location in flat arrays (the pack as a small
number interned per pack id), and an open-addressing table of record numbers finds it. A repository
of 10 million blobs fits in ~600 MiB (scripts/bench_index measures it).
"""

from __future__ import annotations

import threading
from array import array
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from recoverctl.repo.pack import PackEntry

ID_SIZE = 32
_MIN_SLOTS = 1024


@dataclass(frozen=True)
class BlobLocation:
    pack: str
    type: int
    offset: int
    length: int
    raw_length: int


class _Table:
    """An open-addressing hash table of record numbers + 1 (0: empty), linear probing.

    Replaced whole when it grows, so a reader that took a reference keeps a consistent table."""

    __slots__ = ("mask", "slots")

    def __init__(self, size: int) -> None:
        self.slots = array("I", bytes(4 * size))
        self.mask = size - 1


class Index:
    """Blob id → location, plus pack id → size; safe to update from several threads.

    Writers serialise on a lock; readers take no lock: a record is complete before its slot is
    set, and a growing table is swapped in whole."""

    def __init__(self) -> None:
        self.packs: dict[str, int] = {}
        self.files: set[str] = set()
        self.blobs = BlobMap(self)
        self._lock = threading.Lock()
        self._pack_ids: list[str] = []
        self._pack_numbers: dict[str, int] = {}
        self._ids = bytearray()
        self._offsets = array("Q")
        self._meta = array("I")  # per blob: pack number, stored length, plaintext length
        self._types = bytearray()
        self._count = 0
        self._table = _Table(_MIN_SLOTS)

    def __len__(self) -> int:
        return self._count

    def _find(self, blob_id: bytes) -> int:
        """Return the record number of `blob_id`, or -1."""
        table, ids = self._table, self._ids
        slots, mask = table.slots, table.mask
        i = hash(blob_id) & mask
        while True:
            r = slots[i]
            if not r:
                return -1
            r -= 1
            if ids[r * ID_SIZE : (r + 1) * ID_SIZE] == blob_id:
                return r
            i = (i + 1) & mask

    def __contains__(self, blob_id: object) -> bool:
        return isinstance(blob_id, bytes) and len(blob_id) == ID_SIZE and self._find(blob_id) >= 0

    def get(self, blob_id: bytes) -> BlobLocation | None:
        if len(blob_id) != ID_SIZE:
            return None
        r = self._find(blob_id)
        return None if r < 0 else self._location(r)

    def _location(self, r: int) -> BlobLocation:
        pack, length, raw = self._meta[3 * r : 3 * r + 3]
        return BlobLocation(self._pack_ids[pack], self._types[r], self._offsets[r], length, raw)

    def _blob_id(self, r: int) -> bytes:
        return bytes(self._ids[r * ID_SIZE : (r + 1) * ID_SIZE])

    def _pack_number(self, pack_id: str, size: int) -> int:
        self.packs[pack_id] = size
        n = self._pack_numbers.get(pack_id)
        if n is None:
            n = self._pack_numbers[pack_id] = len(self._pack_ids)
            self._pack_ids.append(pack_id)
        return n

    def _reserve(self, more: int) -> None:
        """Grow the table (with the lock held) so `more` blobs fit at a load of at most 3/4."""
        need = self._count + more
        size = len(self._table.slots)
        if 4 * need <= 3 * size:
            return
        while 4 * need > 3 * size:
            size *= 2
        table = _Table(size)
        slots, mask, ids = table.slots, table.mask, self._ids
        view = memoryview(ids)
        try:
            for r in range(self._count):
                i = hash(view[r * ID_SIZE : (r + 1) * ID_SIZE].tobytes()) & mask
                while slots[i]:
                    i = (i + 1) & mask
                slots[i] = r + 1
        finally:
            view.release()
        self._table = table

    def _insert(self, rows: Iterable[tuple[bytes, int, int, int, int]], pack: int) -> None:
        """Add each (id, type, offset, length, plaintext length) of a pack unless present, with the
        lock held and room reserved. The first location stays: several index files may list a blob.
        One loop with local names: it runs once per blob of the repository when an index loads."""
        table = self._table
        slots, mask, ids = table.slots, table.mask, self._ids
        add_type, add_offset, add_meta = self._types.append, self._offsets.append, self._meta.extend
        count = self._count
        for bid, blob_type, offset, length, raw in rows:
            if len(bid) != ID_SIZE:
                raise ValueError(f"a blob id has {ID_SIZE} bytes, not {len(bid)}")
            i = hash(bid) & mask
            r = slots[i]
            while r:
                o = (r - 1) * ID_SIZE
                if ids[o : o + ID_SIZE] == bid:
                    break
                i = (i + 1) & mask
                r = slots[i]
            else:
                try:
                    ids += bid
                    add_type(blob_type)
                    add_offset(offset)
                    add_meta((pack, length, raw))
                except BaseException:
                    self._truncate(count)  # a field out of range: drop the half-added record
                    raise
                count += 1
                self._count = count
                slots[i] = count  # last: a reader sees the slot only once the record is complete

    def _truncate(self, count: int) -> None:
        del self._ids[count * ID_SIZE :]
        del self._types[count:]
        del self._offsets[count:]
        del self._meta[3 * count :]

    def add_pack(self, pack_id: str, size: int, entries: Iterable[PackEntry]) -> None:
        rows = [(e.id, e.type, e.offset, e.length, e.raw_length) for e in entries]
        with self._lock:
            pack = self._pack_number(pack_id, size)
            self._reserve(len(rows))
            self._insert(rows, pack)

    def merge_document(self, doc: dict[str, Any]) -> None:
        """Add every pack and blob of an index file's document; raise ValueError for a malformed one."""
        fromhex = bytes.fromhex
        with self._lock:
            for p in doc.get("packs", []):
                pack = self._pack_number(p["id"], int(p["size"]))
                blobs = p["blobs"]
                self._reserve(len(blobs))
                try:
                    self._insert(((fromhex(b), t, off, n, raw) for t, b, off, n, raw in blobs), pack)
                except (OverflowError, TypeError) as e:  # a negative, huge or non-integer field
                    raise ValueError(f"malformed blob entry in pack {p['id']}: {e}") from None

    def by_pack(self) -> dict[str, list[tuple[bytes, BlobLocation]]]:
        out: dict[str, list[tuple[bytes, BlobLocation]]] = {p: [] for p in self.packs}
        for bid, loc in self:
            out.setdefault(loc.pack, []).append((bid, loc))
        return out

    def __iter__(self) -> Iterator[tuple[bytes, BlobLocation]]:
        for r in range(self._count):
            yield self._blob_id(r), self._location(r)


class BlobMap(Mapping[bytes, BlobLocation]):
    """A read-only mapping view of an Index's blobs (id → location), for callers that want one."""

    def __init__(self, index: Index) -> None:
        self._index = index

    def __getitem__(self, blob_id: bytes) -> BlobLocation:
        loc = self._index.get(blob_id)
        if loc is None:
            raise KeyError(blob_id)
        return loc

    def __contains__(self, blob_id: object) -> bool:
        return blob_id in self._index

    def __iter__(self) -> Iterator[bytes]:
        index = self._index
        return (index._blob_id(r) for r in range(len(index)))

    def __len__(self) -> int:
        return len(self._index)

    def items(self) -> Iterator[tuple[bytes, BlobLocation]]:  # type: ignore[override]
        return iter(self._index)


def document(packs: Iterable[tuple[str, int, Iterable[PackEntry]]]) -> dict[str, Any]:
    """Given (pack id, size, entries) triples, return an index file document."""
    return {
        "version": 1,
        "packs": [
            {
                "id": pid,
                "size": size,
                "blobs": [[e.type, e.id.hex(), e.offset, e.length, e.raw_length] for e in entries],
            }
            for pid, size, entries in packs
        ],
    }
