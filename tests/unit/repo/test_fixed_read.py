"""Reading files at fixed boundaries through the archiver's read plan: only the chunks a plan does
not keep are read, kept ones take the parent's content ids, and the result restores whole."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from recoverctl.repo import Repository, backup_tree, restore_snapshot
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
