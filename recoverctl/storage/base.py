"""The Storage protocol every backend implements, and what it may raise."""

from __future__ import annotations

import builtins
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO, Protocol, runtime_checkable

# Names of in-flight writes on file-like backends; hidden from listings, swept by prune.
TMP_PREFIX = ".tmp-"
# Object names, their count and sizes (which packs, snapshots, locks and hosts exist) are for the
# repository's owner only: backends with directories create them with this mode.
DIR_MODE = 0o700
# put_file's read size: a pack streams through one buffer of this size per upload.
COPY_BUFFER = 1 << 20


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    mtime: float | None = None


@runtime_checkable
class Storage(Protocol):
    """A flat namespace of immutable-ish objects addressed by '/'-separated keys.

    Implementations raise ObjectNotFound for a missing key, TransientStorageError for faults worth
    retrying and StorageError (or StorageUnavailable) for everything else, always naming `url`.
    Writes are atomic: a reader sees the old object, the new one, or nothing — never a part.
    """

    url: str  # redacted, safe to print

    def put(self, key: str, data: bytes) -> None:
        """Store `data` under `key`, replacing any existing object."""
        ...

    def put_file(self, key: str, body: BinaryIO, size: int) -> None:
        """Store the `size` bytes of `body` (read from its start, so a retry can read it again)
        under `key`, replacing any existing object; large objects (packs) go this way so that
        their bytes are never in memory whole."""
        ...

    def get(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        """Return the object's bytes, or `length` bytes from `offset`; raise ObjectNotFound."""
        ...

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Yield every object whose key starts with `prefix`, in no particular order."""
        ...

    def stat(self, key: str) -> ObjectInfo:
        """Return the object's size; raise ObjectNotFound."""
        ...

    def delete(self, key: str) -> None:
        """Remove the object; deleting a missing key is not an error."""
        ...

    def sweep_partial_writes(self, before: float, *, dry_run: bool = False) -> builtins.list[str]:
        """Remove what writes interrupted by a crash left behind (temp files, unfinished multipart
        uploads) that began before `before` (epoch seconds); return their names."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...
