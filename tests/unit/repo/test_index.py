"""The compact in-memory blob index: same answers as a dict of locations, a bounded cost per
blob, first location wins, malformed ids refused, concurrent readers during writes."""

from __future__ import annotations

import hashlib
import threading
import tracemalloc

import pytest

from recoverctl.repo.index import BlobLocation, Index, document
from recoverctl.repo.pack import DATA, TREE, PackEntry


def blob_id(n: int) -> bytes:
    return hashlib.sha256(n.to_bytes(8, "little")).digest()


def pack_entries(first: int, count: int, blob_type: int = DATA) -> list[PackEntry]:
    return [
        PackEntry(blob_type, blob_id(n), (n - first) * 1000, 990 + n % 7, 2000 + n)
        for n in range(first, first + count)
    ]


def test_answers_like_a_dict_across_table_growth() -> None:
    index = Index()
    expected: dict[bytes, BlobLocation] = {}
    for p in range(60):  # 60 packs of 50 blobs: the table grows from 1024 slots several times
        pid = f"{p:064x}"
        entries = pack_entries(p * 50, 50, TREE if p % 3 == 0 else DATA)
        index.add_pack(pid, 50_000 + p, entries)
        for e in entries:
            expected[e.id] = BlobLocation(pid, e.type, e.offset, e.length, e.raw_length)
    assert len(index) == len(index.blobs) == len(expected) == 3000
    for bid, loc in expected.items():
        assert bid in index and bid in index.blobs
        assert index.get(bid) == loc == index.blobs[bid]
    assert dict(iter(index)) == expected == dict(index.blobs.items())
    assert set(index.blobs) == set(expected)
    assert index.packs == {f"{p:064x}": 50_000 + p for p in range(60)}
    by_pack = index.by_pack()
    assert sorted(b for b, _ in by_pack[f"{7:064x}"]) == sorted(e.id for e in pack_entries(350, 50))


def test_absent_and_malformed_ids() -> None:
    index = Index()
    index.add_pack("a" * 64, 10, pack_entries(0, 3))
    assert blob_id(99) not in index
    assert index.get(blob_id(99)) is None
    assert b"short" not in index and index.get(b"short") is None
    assert "not bytes" not in index.blobs
    with pytest.raises(KeyError):
        index.blobs[blob_id(99)]
    with pytest.raises(ValueError, match="32 bytes"):
        index.merge_document({"packs": [{"id": "b" * 64, "size": 1, "blobs": [[0, "abcd", 0, 1, 1]]}]})
    with pytest.raises(ValueError, match="malformed blob entry"):
        index.merge_document({"packs": [{"id": "b" * 64, "size": 1, "blobs": [[0, "ab" * 32, -1, 1, 1]]}]})
    with pytest.raises(ValueError, match="malformed blob entry"):
        index.merge_document({"packs": [{"id": "b" * 64, "size": 1, "blobs": [[0, "cd" * 32, 0, 1, "1"]]}]})
    index.add_pack("e" * 64, 10, pack_entries(5, 2))  # records after the refused ones line up
    assert len(index) == 5 and index.get(blob_id(6)) == BlobLocation("e" * 64, DATA, 1000, 996, 2006)
    assert bytes.fromhex("ab" * 32) not in index and bytes.fromhex("cd" * 32) not in index


def test_first_location_wins_and_documents_round_trip() -> None:
    first = pack_entries(0, 10)
    again = [PackEntry(e.type, e.id, e.offset + 5, e.length, e.raw_length) for e in first]
    index = Index()
    index.merge_document(document([("1" * 64, 10_000, first)]))
    index.merge_document(document([("2" * 64, 20_000, again), ("3" * 64, 30_000, pack_entries(10, 5))]))
    assert len(index) == 15
    assert all(
        index.get(e.id) == BlobLocation("1" * 64, e.type, e.offset, e.length, e.raw_length) for e in first
    )
    assert index.packs == {"1" * 64: 10_000, "2" * 64: 20_000, "3" * 64: 30_000}
    assert index.by_pack()["2" * 64] == []


def test_large_offsets_and_lengths_survive() -> None:
    index = Index()
    index.add_pack("c" * 64, 2**33, [PackEntry(DATA, blob_id(1), 2**33 - 10, 2**31, 2**32 - 1)])
    assert index.get(blob_id(1)) == BlobLocation("c" * 64, DATA, 2**33 - 10, 2**31, 2**32 - 1)


def test_at_most_100_bytes_per_blob() -> None:
    count = 50_000
    entries = pack_entries(0, count)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        index = Index()
        for i in range(0, count, 40):
            index.add_pack(f"{i:064x}", 1, entries[i : i + 40])
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(index) == count
    assert held / count <= 100, f"{held / count:.1f} bytes per blob"


def test_readers_see_complete_records_while_a_writer_grows_the_table() -> None:
    index = Index()
    done = threading.Event()
    errors: list[str] = []

    def read() -> None:
        while not done.is_set():
            for n in range(0, 20_000, 97):
                loc = index.get(blob_id(n))
                if loc is not None and (loc.offset, loc.raw_length) != ((n % 100) * 1000, 2000 + n):
                    errors.append(f"blob {n}: {loc}")

    readers = [threading.Thread(target=read) for _ in range(2)]
    for t in readers:
        t.start()
    try:
        for first in range(0, 20_000, 100):
            index.add_pack(f"{first:064x}", 1, pack_entries(first, 100))
    finally:
        done.set()
        for t in readers:
            t.join()
    assert errors == []
    assert all(blob_id(n) in index for n in range(20_000))
