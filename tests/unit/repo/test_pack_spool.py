"""Pack builders spool sealed blobs to a temporary file and hand that file on for the upload; without
a usable temporary directory, or when writing to it fails half-way, the pack is the same from memory."""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest

from recoverctl.repo.crypto import Cipher, MasterKey
from recoverctl.repo.pack import DATA, TREE, FinishedPack, PackBuilder, PackEntry, parse_header

REAL_TEMPORARY_FILE = tempfile.TemporaryFile
BLOBS = [os.urandom(3000), b"y" * 70_000, os.urandom(200_000), b"tree"]


def fill(builder: PackBuilder, cipher: Cipher, sealed: list[tuple[bytes, bytes]]) -> None:
    for i, (data, (head, tail)) in enumerate(zip(BLOBS, sealed, strict=True)):
        builder.add(TREE if i == 3 else DATA, cipher.blob_id(data), head, len(data), tail)


def read_pack(pack: FinishedPack) -> bytes:
    with pack.body:
        data = pack.body.read()
    assert len(data) == pack.size
    return data


def check_pack(cipher: Cipher, builder: PackBuilder, sealed: list[tuple[bytes, bytes]]) -> list[PackEntry]:
    pack = builder.finish()
    data, pid, entries = read_pack(pack), pack.id, pack.entries
    assert pid == hashlib.sha256(data).hexdigest()
    assert data[: builder.size] == b"".join(head + tail for head, tail in sealed)
    assert parse_header(cipher, data, len(data), "pack") == entries
    for entry, blob in zip(entries, BLOBS, strict=True):
        stored = data[entry.offset : entry.offset + entry.length]
        assert cipher.open(stored, bytes([entry.type]) + entry.id, "blob") == blob
    return entries


@pytest.fixture
def cipher() -> Cipher:
    return Cipher(MasterKey.generate())


@pytest.fixture
def sealed(cipher: Cipher) -> list[tuple[bytes, bytes]]:
    return [
        cipher.seal_parts(data, bytes([TREE if i == 3 else DATA]) + cipher.blob_id(data))
        for i, data in enumerate(BLOBS)
    ]


@pytest.fixture
def spooled(
    cipher: Cipher, sealed: list[tuple[bytes, bytes]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> PackBuilder:
    """A builder holding BLOBS, spooling to `tmp_path`."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    builder = PackBuilder(cipher, 1 << 20)
    fill(builder, cipher, sealed)
    return builder


def test_spooled_and_in_memory_packs_hold_the_same_blobs(
    cipher: Cipher, sealed: list[tuple[bytes, bytes]], spooled: PackBuilder, tmp_path: Path
) -> None:
    assert spooled.parts == [] and spooled._spool is not None  # nothing of the blobs in memory
    in_memory = PackBuilder(cipher, 1 << 20, spool=False)
    fill(in_memory, cipher, sealed)
    assert check_pack(cipher, spooled, sealed) == check_pack(cipher, in_memory, sealed)
    assert spooled._spool is None and os.listdir(tmp_path) == []  # unnamed and closed


def test_a_spooled_pack_is_uploaded_from_its_file_not_from_memory(spooled: PackBuilder) -> None:
    pack = spooled.finish()
    assert not isinstance(pack.body, io.BytesIO) and pack.body.fileno() >= 0  # the spool file itself
    assert pack.body.tell() == 0 and os.fstat(pack.body.fileno()).st_size == pack.size
    pack.close()
    assert pack.body.closed


def test_no_temporary_directory_keeps_the_pack_in_memory(
    cipher: Cipher, sealed: list[tuple[bytes, bytes]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "missing"))
    builder = PackBuilder(cipher, 1 << 20)
    fill(builder, cipher, sealed)
    assert builder._spool is None and len(builder.parts) == 2 * len(BLOBS)
    check_pack(cipher, builder, sealed)


class FillsUp:
    """A spool file whose writes fail (as on a full disk) after `room` bytes."""

    def __init__(self, room: int) -> None:
        self.inner: Any = REAL_TEMPORARY_FILE()
        self.room = room

    def write(self, data: bytes) -> int:
        if self.room < len(data):
            self.inner.write(data[: self.room])  # a partial write before the error
            self.room = 0
            raise OSError(28, "No space left on device")
        self.room -= len(data)
        return int(self.inner.write(data))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def __enter__(self) -> FillsUp:
        return self

    def __exit__(self, *_: object) -> None:
        self.inner.close()


def test_a_full_temporary_directory_moves_the_pack_to_memory(
    cipher: Cipher, sealed: list[tuple[bytes, bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    room = len(b"".join(head + tail for head, tail in sealed[:2])) + 10
    monkeypatch.setattr(tempfile, "TemporaryFile", lambda **_: FillsUp(room))
    builder = PackBuilder(cipher, 1 << 20)
    fill(builder, cipher, sealed)
    assert builder._spool is None and builder.parts  # the first two blobs were read back
    check_pack(cipher, builder, sealed)
