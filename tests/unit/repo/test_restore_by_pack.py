"""A file of many blobs is restored pack by pack: one ranged read per stretch of a pack that holds
its blobs, whatever order they were sealed in; a blob used at several offsets is opened once; holes
of a sparse file stay holes; and an index whose lengths disagree with the blobs writes nothing."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from recoverctl.repo import Repository, restore_snapshot
from recoverctl.repo.index import BlobLocation
from recoverctl.repo.pack import DATA, TREE
from recoverctl.repo.saver import BlobSaver
from recoverctl.repo.snapshot import Snapshot
from recoverctl.storage.local import LocalStorage

FAST_KDF = {"name": "scrypt", "n": 2**10, "r": 8, "p": 1}
CHUNK = 64 * 1024
CHUNKS = 48  # 3 MiB: several 1 MiB packs


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    return Repository.init(LocalStorage(tmp_path / "repo"), "pw", kdf=FAST_KDF, pack_size_mib=1)


def _snapshot(repo: Repository, chunks: list[bytes], order: list[int], **node_fields: Any) -> Snapshot:
    """Store `chunks` in the order `order` names (so packs hold them out of file order) and a
    snapshot with one file, `big`, made of them in file order."""
    ids: dict[int, str] = {}
    with BlobSaver(repo) as saver:
        for i in order:
            ids[i] = saver.save(DATA, chunks[i])[0].hex()
        now = time.time_ns()
        node = {
            "name": "big", "type": "file", "mode": 0o600, "uid": os.getuid(), "gid": os.getgid(),
            "user": None, "group": None, "mtime_ns": now, "ctime_ns": now, "inode": 1, "dev": 1,
            "links": 1, "size": sum(map(len, chunks)), "content": [ids[i] for i in range(len(chunks))],
            **node_fields,
        }  # fmt: skip
        tree_id, _ = saver.save(TREE, json.dumps({"nodes": [node]}, sort_keys=True).encode())
    snap = Snapshot(time=time.time(), kind="files", tree=tree_id.hex(), paths=["/"])
    repo.save_snapshot(snap)
    return snap


def _count_calls(monkeypatch: pytest.MonkeyPatch, repo: Repository, name: str) -> list[Any]:
    calls: list[Any] = []
    real = getattr(repo, name)

    def counted(*args: Any) -> Any:
        calls.append(args)
        return real(*args)

    monkeypatch.setattr(repo, name, counted)
    return calls


def test_blobs_sealed_out_of_order_are_read_one_stretch_per_pack(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    chunks = [os.urandom(CHUNK) for _ in range(CHUNKS)]
    # Odd chunks first, then even ones backwards: no two file neighbours are pack neighbours.
    order = list(range(1, CHUNKS, 2)) + list(range(CHUNKS - 2, -1, -2))
    snap = _snapshot(repo, chunks, order)
    packs = {loc.pack for loc in (repo.load_index().get(bid) for bid in repo.index.blobs) if loc}
    reads = _count_calls(monkeypatch, repo, "read_pack")

    result = restore_snapshot(repo, snap.id, str(tmp_path / "out"), verify=True)
    assert result.errors == []
    assert (tmp_path / "out" / "big").read_bytes() == b"".join(chunks)
    # one read per pack (the tree's included), not one per chunk as in file order
    assert len(reads) <= len(packs) < CHUNKS // 4


def test_a_blob_used_at_many_offsets_is_opened_once_and_holes_stay_holes(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    zero = bytes(CHUNK)
    chunks = [os.urandom(CHUNK) if i % 4 == 0 else zero for i in range(CHUNKS)]
    chunks[-1] = zero  # a hole at the end: the file's length comes from its truncation
    snap = _snapshot(repo, chunks, list(range(CHUNKS)), sparse=True)
    opened = _count_calls(monkeypatch, repo, "open_blob")

    result = restore_snapshot(repo, snap.id, str(tmp_path / "out"))
    assert result.errors == []
    out = tmp_path / "out" / "big"
    assert out.read_bytes() == b"".join(chunks)
    data_opens = [args for args in opened if args[1] == DATA]
    assert len(data_opens) == len(set(chunks))  # the zero chunk once, not 36 times
    st = out.stat()
    assert st.st_size == CHUNKS * CHUNK and st.st_blocks * 512 <= st.st_size // 2  # 3 of 4 chunks holes


def test_an_index_length_that_is_not_the_blobs_writes_no_file(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    chunks = [os.urandom(CHUNK) for _ in range(8)]
    snap = _snapshot(repo, chunks, list(range(8)))
    index = repo.load_index()
    real_get = index.get
    lying = bytes.fromhex(repo.load_tree(bytes.fromhex(snap.tree))["nodes"][0]["content"][3])

    def get(blob_id: bytes) -> BlobLocation | None:
        loc = real_get(blob_id)
        # The offsets of every later chunk follow from this length: it must match the blob.
        return dataclasses.replace(loc, raw_length=loc.raw_length - 512) if loc and blob_id == lying else loc

    monkeypatch.setattr(index, "get", get)
    result = restore_snapshot(repo, snap.id, str(tmp_path / "out"))
    assert [(e["path"], e["damaged"]) for e in result.errors] == [("/big", "yes")]
    assert "not as long as the index says" in result.errors[0]["error"]
    assert list((tmp_path / "out").iterdir()) == []  # nothing under the name, no temporary file


def test_patched_chunks_are_compared_pack_by_pack_not_two_reads_each(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    page = 4096
    chunks = [os.urandom(CHUNK) for _ in range(CHUNKS)]
    snap = _snapshot(repo, chunks, list(range(CHUNKS)))
    node = repo.load_tree(bytes.fromhex(snap.tree))["nodes"][0]
    # Every chunk gets a one-page patch (page i % 16): the file is each chunk with that page replaced.
    patched, patches = [], []
    with BlobSaver(repo) as saver:
        for i, chunk in enumerate(chunks):
            new_page = os.urandom(page)
            at = (i % 16) * page
            patched.append(chunk[:at] + new_page + chunk[at + page :])
            patches.append([i, 1 << (i % 16), saver.save(DATA, new_page)[0].hex()])
        node = {**node, "block_size": CHUNK, "page_size": page, "patches": patches}
        tree_id, _ = saver.save(TREE, json.dumps({"nodes": [node]}, sort_keys=True).encode())
    snap = Snapshot(time=time.time(), kind="files", tree=tree_id.hex(), paths=["/"])
    repo.save_snapshot(snap)
    out = tmp_path / "out"
    assert restore_snapshot(repo, snap.id, str(out)).errors == []
    assert (out / "big").read_bytes() == b"".join(patched)

    packs = {loc.pack for loc in (repo.load_index().get(bid) for bid in repo.index.blobs) if loc}
    reads = _count_calls(monkeypatch, repo, "read_pack")
    # --delta over an equal file: every patched chunk is put together and compared, and kept
    result = restore_snapshot(repo, snap.id, str(out), delta=True)
    assert result.errors == [] and result.skipped == 1 and result.files == 0
    assert len(reads) <= 2 * len(packs) < CHUNKS  # per group and pack, not two per chunk

    # a changed page in the last patched chunk is still found, and named
    with open(out / "big", "r+b") as f:
        f.seek((CHUNKS - 1) * CHUNK + 5)
        f.write(b"\xff")
    reads.clear()
    result = restore_snapshot(repo, snap.id, str(out), delta=True)
    assert result.errors == [] and result.files == 1 and result.skipped == 0
    assert (out / "big").read_bytes() == b"".join(patched)
