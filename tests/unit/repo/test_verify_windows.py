"""verify --read-data reads each pack in windows: blobs cut by a window edge are opened whole, a
damaged blob in a later window is named alone, and a short pack or a changed byte between blobs
is still caught (the pack's hash covers every byte)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from recoverctl.repo import Repository
from recoverctl.repo import check as check_module
from recoverctl.repo.check import check
from recoverctl.repo.pack import DATA, pack_key
from recoverctl.repo.saver import BlobSaver
from recoverctl.storage.local import LocalStorage

FAST_KDF = {"name": "scrypt", "n": 2**10, "r": 8, "p": 1}


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Repository:
    monkeypatch.setattr(check_module, "VERIFY_WINDOW", 1000)  # every blob below spans 2-8 windows
    return Repository.init(LocalStorage(tmp_path / "repo"), "pw", kdf=FAST_KDF, pack_size_mib=1)


def _one_pack(repo: Repository) -> tuple[str, list[bytes], Path]:
    with BlobSaver(repo) as saver:
        ids = [saver.save(DATA, os.urandom(n))[0] for n in (1500, 3000, 7000, 900, 2500)]
    (pid,) = repo.index.packs
    return pid, ids, Path(repo.storage.root) / pack_key(pid)  # type: ignore[attr-defined]


def _read_all(repo: Repository) -> check_module.CheckReport:
    reopened = Repository.open(repo.storage, "pw")
    return check(reopened, read_packs=lambda packs: packs)


def test_blobs_across_window_edges_verify(repo: Repository, monkeypatch: pytest.MonkeyPatch) -> None:
    pid, ids, path = _one_pack(repo)
    reads: list[int | None] = []
    get = LocalStorage.get

    def recorded(self: LocalStorage, key: str, offset: int = 0, length: int | None = None) -> bytes:
        if key.startswith("data/"):
            reads.append(length)
        return get(self, key, offset, length)

    monkeypatch.setattr(LocalStorage, "get", recorded)
    report = _read_all(repo)
    assert report.ok and report.verified == {pid: True} and report.blobs_read == len(ids)
    # never the whole pack at once: window by window, front to back
    assert len(reads) == -(-path.stat().st_size // 1000) and all(n is not None and n <= 1000 for n in reads)


def test_a_damaged_blob_in_a_later_window_is_named_alone(repo: Repository) -> None:
    pid, ids, path = _one_pack(repo)
    loc = repo.index.get(ids[2])
    assert loc is not None and loc.offset > 3000  # past the first windows
    data = bytearray(path.read_bytes())
    data[loc.offset + loc.length // 2] ^= 0x01
    path.write_bytes(bytes(data))
    report = _read_all(repo)
    assert not report.ok and report.damaged_packs == {pid} and report.damaged_blobs == {ids[2]}


def test_a_truncated_pack_names_the_blobs_it_lacks(repo: Repository) -> None:
    pid, ids, path = _one_pack(repo)
    last = repo.index.get(ids[-1])
    assert last is not None
    path.write_bytes(path.read_bytes()[: last.offset + 10])
    report = _read_all(repo)
    assert not report.ok and pid in report.damaged_packs and ids[-1] in report.damaged_blobs
    assert set(ids[:-1]).isdisjoint(report.damaged_blobs)
