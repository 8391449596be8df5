"""Reading files at fixed boundaries through the archiver's read plan: only the chunks a plan does
not keep are read, kept ones take the parent's content ids, and the result restores whole."""

from __future__ import annotations

import os
from concurrent.futures import Future
from pathlib import Path

import pytest

from recoverctl.repo import Repository, backup_tree, fixed_read, restore_snapshot
from recoverctl.repo.fixed_read import FixedRead, parent_chunks
from recoverctl.repo.tree import Node
from recoverctl.storage.local import LocalStorage

FAST_KDF = {"name": "scrypt", "n": 2**10, "r": 8, "p": 1}
BS = 64 * 1024


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    return Repository.init(LocalStorage(tmp_path / "repo"), "pw", kdf=FAST_KDF, pack_size_mib=1)


class KeepAllBut:
    """A read plan for `data.bin` keeping every whole parent chunk except `changed`."""

    def __init__(self, changed: set[int]):
        self.changed = changed
        self.seen: list[int] = []

    def __call__(self, relpath: str, st: os.stat_result, parent: Node | None) -> FixedRead | None:
        if relpath != "data.bin":
            return None
        ids = parent_chunks(parent, BS) or []
        whole = int(parent["size"]) // BS if parent else 0
        keep = {i: ids[i] for i in range(min(whole, len(ids))) if i not in self.changed}
        return FixedRead(BS, keep, on_read=lambda offset, data: self.seen.append(offset))


def _restore(repo: Repository, snap_id: str, dest: Path) -> bytes:
    restore_snapshot(repo, snap_id, str(dest))
    return (dest / "data.bin").read_bytes()


def test_only_changed_and_new_chunks_are_read(repo: Repository, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "other.txt").write_bytes(b"not a relation")
    content = bytearray(os.urandom(5 * BS + 100))
    (src / "data.bin").write_bytes(content)
    first_plan = KeepAllBut(set())
    first = backup_tree(repo, src, read_plan=first_plan)
    assert first_plan.seen == [i * BS for i in range(6)]
    assert first.snapshot is not None

    content[2 * BS + 5] ^= 0xFF
    content += os.urandom(BS)  # grows: the partial last chunk and the new one are read
    (src / "data.bin").write_bytes(content)
    plan = KeepAllBut({2})
    second = backup_tree(repo, src, read_plan=plan, parent=first.snapshot)
    assert plan.seen == [2 * BS, 5 * BS, 6 * BS]
    assert second.summary["bytes_read"] == len(content) - 5 * BS + BS
    assert second.snapshot_id is not None
    assert _restore(repo, second.snapshot_id, tmp_path / "out") == bytes(content)


def test_a_kept_chunk_missing_from_the_index_is_read_again(repo: Repository, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    content = os.urandom(3 * BS)
    (src / "data.bin").write_bytes(content)
    first = backup_tree(repo, src, read_plan=KeepAllBut(set()))
    assert first.snapshot is not None

    def stale(relpath: str, st: os.stat_result, parent: Node | None) -> FixedRead:
        return FixedRead(BS, {0: "00" * 32, 1: (parent_chunks(parent, BS) or [])[1]})

    os.utime(src / "data.bin", ns=(1, 1))  # make the walker look at it again
    second = backup_tree(repo, src, read_plan=stale, parent=first.snapshot)
    assert second.summary["bytes_read"] == 2 * BS  # chunk 0 (unknown id) and chunk 2
    assert second.snapshot_id is not None
    assert _restore(repo, second.snapshot_id, tmp_path / "out") == content


def test_a_parent_cut_another_way_has_no_reusable_chunks() -> None:
    node: Node = {"type": "file", "size": 10, "content": ["ab"]}
    assert parent_chunks(node, BS) is None
    assert parent_chunks({**node, "block_size": BS}, BS) == ["ab"]
    assert parent_chunks({**node, "block_size": BS * 2}, BS) is None
    assert parent_chunks(None, BS) is None


def test_scattered_reads_are_announced_to_the_kernel_before_they_are_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "rel"
    path.write_bytes(os.urandom(60 * BS))
    to_read = [i for i in range(60) if i % 3 == 0]  # every third chunk changed, the rest kept
    events: list[tuple[str, int]] = []
    real_pread = os.pread
    monkeypatch.setattr(os, "posix_fadvise", lambda fd, off, n, advice: events.append(("advise", off // BS)))
    monkeypatch.setattr(
        os, "pread", lambda fd, n, off: events.append(("read", off // BS)) or real_pread(fd, n, off)
    )

    def submit(data: bytes) -> Future[str]:
        f: Future[str] = Future()
        f.set_result(f"new-{len(data)}")
        return f

    keep = {i: f"kept-{i}" for i in range(60) if i not in to_read}
    fd = os.open(path, os.O_RDONLY)
    try:
        ids, covered, _ = fixed_read.read_fixed(
            fd, 60 * BS, FixedRead(BS, keep), submit, lambda n: None, lambda c: True
        )
    finally:
        os.close(fd)
    assert covered == 60 * BS and ids[1] == "kept-1" and ids[3] == f"new-{BS}"
    assert [c for e, c in events if e == "read"] == to_read
    advised = [c for e, c in events if e == "advise"]
    assert advised == to_read[1:]  # each once, in order; the first is read at once
    for chunk in to_read[1:]:  # announced before it is read, and at most READ_AHEAD_CHUNKS ahead
        announced, read = events.index(("advise", chunk)), events.index(("read", chunk))
        assert announced < read
        reads_between = sum(1 for e, _ in events[announced:read] if e == "read")
        assert reads_between <= fixed_read.READ_AHEAD_CHUNKS


def test_a_file_read_whole_is_left_to_the_kernels_own_readahead(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "rel"
    path.write_bytes(os.urandom(8 * BS))
    advised: list[int] = []
    monkeypatch.setattr(os, "posix_fadvise", lambda fd, off, n, advice: advised.append(off))
    done: Future[str] = Future()
    done.set_result("id")
    fd = os.open(path, os.O_RDONLY)
    try:
        ids, _, _ = fixed_read.read_fixed(
            fd, 8 * BS, FixedRead(BS), lambda d: done, lambda n: None, lambda c: True
        )
    finally:
        os.close(fd)
    assert ids == ["id"] * 8 and advised == []
