"""The blob saver keeps at most one finished pack per uploader waiting or uploading when storage is
slower than the sealers, and every blob still lands in a pack and in the index."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import pytest

from recoverctl.repo import Repository
from recoverctl.repo import pack as pack_module
from recoverctl.repo.pack import DATA, FinishedPack, PackBuilder
from recoverctl.repo.saver import BlobSaver
from recoverctl.storage.local import LocalStorage

FAST_KDF = {"name": "scrypt", "n": 2**10, "r": 8, "p": 1}


class SlowStorage(LocalStorage):
    """Local storage whose pack uploads take 20 ms each: slower than sealing 1 MiB of blobs."""

    def __init__(self, root: Path, on_stored: Callable[[], None]) -> None:
        super().__init__(root)
        self.on_stored = on_stored

    def put_file(self, key: str, body: BinaryIO, size: int) -> None:
        if key.startswith("data/"):
            time.sleep(0.02)  # the slow server this test is about, not a wait for a condition
        super().put_file(key, body, size)
        if key.startswith("data/"):
            self.on_stored()  # before the uploader hands its slot on


def test_finished_packs_in_memory_never_exceed_the_uploaders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lock = threading.Lock()
    outstanding, peak = [0], [0]
    finish = PackBuilder.finish

    def counted_finish(self: PackBuilder) -> FinishedPack:
        with lock:
            outstanding[0] += 1
            peak[0] = max(peak[0], outstanding[0])
        return finish(self)

    def stored() -> None:
        with lock:
            outstanding[0] -= 1

    monkeypatch.setattr(pack_module.PackBuilder, "finish", counted_finish)
    storage = SlowStorage(tmp_path / "repo", stored)
    repo = Repository.init(storage, "pw", kdf=FAST_KDF, pack_size_mib=1, parallelism=4)
    saved: list[bytes] = []

    def produce(saver: BlobSaver) -> None:
        for _ in range(40):
            bid, new = saver.save(DATA, os.urandom(100 * 1024))
            assert new
            with lock:
                saved.append(bid)

    with BlobSaver(repo) as saver:
        producers = [threading.Thread(target=produce, args=(saver,)) for _ in range(4)]
        for t in producers:
            t.start()
        for t in producers:
            t.join()
    uploaders = max(2, repo.parallelism // 2)
    assert 1 <= peak[0] <= uploaders, f"{peak[0]} finished packs were waiting at once"
    assert len(saved) == 160 and all(bid in repo.index for bid in saved)
    assert len(list(storage.list("data/"))) >= 15  # 16 MiB of random blobs in 1 MiB packs
    assert len(repo.read_blob(saved[0])) == 100 * 1024
