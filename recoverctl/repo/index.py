"""The in-memory blob index and the index files it is loaded from and saved to.

An index file (``index/<sha256>``) is a sealed JSON document
``{"version": 1, "packs": [{"id", "size", "blobs": [[type, id, offset, length, raw_length]]}]}``.
Several index files may list the same blob; any of them is right. Prune writes one new index and
deletes the files it replaces.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from recoverctl.repo.pack import PackEntry


@dataclass(frozen=True)
class BlobLocation:
    pack: str
    type: int
    offset: int
    length: int
    raw_length: int


class Index:
    """Blob id → location, plus pack id → size; safe to update from several threads."""

    def __init__(self) -> None:
        self.blobs: dict[bytes, BlobLocation] = {}
        self.packs: dict[str, int] = {}
        self.files: set[str] = set()
        self._lock = threading.Lock()

    def __contains__(self, blob_id: bytes) -> bool:
        return blob_id in self.blobs

    def get(self, blob_id: bytes) -> BlobLocation | None:
        return self.blobs.get(blob_id)

    def add_pack(self, pack_id: str, size: int, entries: Iterable[PackEntry]) -> None:
        with self._lock:
            self.packs[pack_id] = size
            for e in entries:
                self.blobs.setdefault(e.id, BlobLocation(pack_id, e.type, e.offset, e.length, e.raw_length))

    def merge_document(self, doc: dict[str, Any]) -> None:
        with self._lock:
            for p in doc.get("packs", []):
                self.packs[p["id"]] = int(p["size"])
                for t, bid, off, length, raw in p["blobs"]:
                    self.blobs.setdefault(bytes.fromhex(bid), BlobLocation(p["id"], t, off, length, raw))

    def by_pack(self) -> dict[str, list[tuple[bytes, BlobLocation]]]:
        out: dict[str, list[tuple[bytes, BlobLocation]]] = {p: [] for p in self.packs}
        for bid, loc in self.blobs.items():
            out.setdefault(loc.pack, []).append((bid, loc))
        return out

    def __iter__(self) -> Iterator[tuple[bytes, BlobLocation]]:
        return iter(self.blobs.items())


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
