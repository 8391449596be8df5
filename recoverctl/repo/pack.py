"""Pack files: many sealed blobs followed by a sealed header that lists them.

Layout: ``blob_0 .. blob_n | sealed header | u32 header length | b"RCP1"``. The header holds, per
blob, its type, id, stored length and plaintext length (offsets follow from the order), so
`repair index` can rebuild every index entry from the packs alone. A pack's name is the SHA-256
of its bytes, which lets verification spot a damaged pack without the key.
"""

from __future__ import annotations

import hashlib
import io
import struct
import tempfile
from dataclasses import dataclass
from typing import BinaryIO

from recoverctl.repo.crypto import Cipher, DecryptError

MAGIC = b"RCP1"
TRAILER = struct.Struct("<I4s")
ENTRY = struct.Struct("<B32sII")
HEADER_AAD = b"recoverctl-pack-header"

DATA = 0
TREE = 1
TYPE_NAMES = {DATA: "data", TREE: "tree"}


def blob_aad(blob_type: int, blob_id: bytes) -> bytes:
    return bytes([blob_type]) + blob_id


@dataclass(frozen=True)
class PackEntry:
    type: int
    id: bytes
    offset: int
    length: int
    raw_length: int


def pack_key(pack_id: str) -> str:
    return f"data/{pack_id[:2]}/{pack_id}"


@dataclass
class FinishedPack:
    """A pack ready to upload: its id (the SHA-256 of its bytes), size, entries, and its bytes as
    a file to read from the start (the spool file, or a BytesIO when the blobs stayed in memory).
    Close it once stored."""

    id: str
    size: int
    entries: list[PackEntry]
    body: BinaryIO

    def close(self) -> None:
        self.body.close()


class PackBuilder:
    """Collects sealed blobs until `full`; `finish()` returns the FinishedPack.

    The sealed blobs are spooled to an unnamed temporary file (in TMPDIR), as restic does, rather
    than held in memory: a pack is 16 MiB, and a backup keeps one filling per blob type and one per
    uploader waiting or being uploaded. The upload streams the spool file (`Storage.put_file`), so
    a pack's bytes are never in memory whole; its id is hashed as the blobs are written. Without a
    usable temporary directory, or once writing to it fails (e.g. it is full), the blobs stay in
    memory.
    """

    def __init__(self, cipher: Cipher, target_size: int, *, spool: bool = True):
        self.cipher = cipher
        self.target_size = target_size
        self.parts: list[bytes] = []
        self.entries: list[PackEntry] = []
        self.size = 0
        self._spool: BinaryIO | None = None
        self._may_spool = spool
        self._sha256 = hashlib.sha256()

    def add(self, blob_type: int, blob_id: bytes, sealed: bytes, raw_length: int, tail: bytes = b"") -> None:
        """Append a sealed blob (given whole, or as `sealed` + `tail` parts)."""
        length = len(sealed) + len(tail)
        self.entries.append(PackEntry(blob_type, blob_id, self.size, length, raw_length))
        self._write(sealed, tail)
        self.size += length

    def _write(self, *parts: bytes) -> None:
        for part in parts:
            self._sha256.update(part)
        if self._spool is None and self._may_spool and not self.parts:
            try:
                # Closed by finish() (or with the builder); unlinked already, so nothing is left over.
                self._spool = tempfile.TemporaryFile(prefix="recoverctl-pack-")  # noqa: SIM115
            except OSError:
                self._may_spool = False
        if self._spool is not None:
            try:
                for part in parts:
                    self._spool.write(part)
                return
            except OSError:
                self._unspool()
        self.parts.extend(part for part in parts if part)

    def _unspool(self) -> None:
        """Take what the spool file holds (the blobs before this one) into memory; stop spooling."""
        spool, self._spool, self._may_spool = self._spool, None, False
        assert spool is not None
        with spool:
            spool.seek(0)
            self.parts = [spool.read(self.size)]

    @property
    def full(self) -> bool:
        return self.size >= self.target_size

    def __len__(self) -> int:
        return len(self.entries)

    def finish(self) -> FinishedPack:
        """Seal the header, and return the pack to upload; the builder is done with after this."""
        header = b"".join(ENTRY.pack(e.type, e.id, e.length, e.raw_length) for e in self.entries)
        sealed_header = self.cipher.seal(header, HEADER_AAD, compress=False)
        self._write(sealed_header, TRAILER.pack(len(sealed_header), MAGIC))
        total = self.size + len(sealed_header) + TRAILER.size
        body: BinaryIO
        if self._spool is not None:
            body, self._spool = self._spool, None
            body.flush()
            held = body.tell()
            if held != total:
                body.close()
                raise OSError(f"the pack's spool file holds {held} of {total} bytes")
            body.seek(0)
        else:
            parts, self.parts = self.parts, []
            body = io.BytesIO(b"".join(parts))
            del parts
        return FinishedPack(self._sha256.hexdigest(), total, self.entries, body)


def parse_header(cipher: Cipher, tail: bytes, pack_size: int, what: str) -> list[PackEntry]:
    """Given the last bytes of a pack (at least the header), return its entries; raise DecryptError."""
    if len(tail) < TRAILER.size:
        raise DecryptError(f"{what} is too short to be a pack")
    hlen, magic = TRAILER.unpack(tail[-TRAILER.size :])
    if magic != MAGIC:
        raise DecryptError(f"{what} is not a recoverctl pack (bad trailer)")
    if hlen + TRAILER.size > len(tail):
        raise HeaderTooShort(hlen + TRAILER.size)
    header = cipher.open(tail[-TRAILER.size - hlen : -TRAILER.size], HEADER_AAD, f"header of {what}")
    entries = []
    offset = 0
    for i in range(0, len(header), ENTRY.size):
        t, bid, length, raw = ENTRY.unpack_from(header, i)
        entries.append(PackEntry(t, bid, offset, length, raw))
        offset += length
    if offset + hlen + TRAILER.size != pack_size:
        raise DecryptError(f"{what}: header does not match the pack size")
    return entries


class HeaderTooShort(Exception):
    """The tail read was too short; retry reading `needed` bytes."""

    def __init__(self, needed: int):
        super().__init__(needed)
        self.needed = needed
