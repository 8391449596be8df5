"""The segment being written, as the WAL receiver uploads it: one repository object per segment,
overwritten as the segment grows and removed once the whole segment is stored.

Its key, `wal/<source>/<timeline>/partial-<segment>`, is outside every name PostgreSQL archives
(segments, `.partial`, `.history`, `.backup`), so neither archive_command's idempotent push nor a
listing of segments ever mistakes it for a finished segment. The object holds the segment size
(8 bytes, big-endian) and the received bytes with the zero padding pg_receivewal writes stripped;
`read_wal` pads it back, which gives exactly the bytes of the `.partial` file on the receiver.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, BinaryIO, TypeVar

from recoverctl.errors import ObjectNotFound
from recoverctl.sources.postgres.walnames import SEGMENT_RE, timeline_of, wal_key, wal_prefix

T = TypeVar("T")

if TYPE_CHECKING:
    from recoverctl.repo import Repository

PARTIAL_PREFIX = "partial-"
_SIZE = struct.Struct(">Q")


def partial_key(source: str, segment: str) -> str:
    """Return the repository key of the uploaded partial copy of `segment`."""
    return f"{wal_prefix(source, timeline_of(segment))}{PARTIAL_PREFIX}{segment}"


def encode_partial(padded: bytes) -> bytes:
    """Given a `.partial` file's bytes (a full segment, zero-padded after the received WAL),
    return the object to store: its size and the bytes without the trailing zeros."""
    return _SIZE.pack(len(padded)) + padded.rstrip(b"\0")


def decode_partial(stored: bytes) -> bytes:
    """Given an object `encode_partial` made, return the full-size, zero-padded segment."""
    (size,) = _SIZE.unpack_from(stored)
    body = stored[_SIZE.size :]
    return body + b"\0" * (size - len(body))


def received_bytes(stored: bytes) -> int:
    """Return how many bytes of its segment an object `encode_partial` made holds."""
    return len(stored) - _SIZE.size


def read_wal(repo: Repository, source: str, name: str) -> bytes:
    """Return WAL file `name` of `source`: the archived file, or for a segment the archive lacks,
    the receiver's newest partial copy padded to a whole segment (recovery replays it and ends
    where its WAL ends). Raise ObjectNotFound when neither exists."""
    return _archived_or_partial(repo, source, name, repo.get_object, lambda data: data)


def read_wal_to(repo: Repository, source: str, name: str, out: BinaryIO) -> None:
    """Write WAL file `name` of `source` to `out`, as `read_wal` returns it; an archived file is
    inflated into `out` as it is written, not held whole. Raise ObjectNotFound (nothing written)."""
    _archived_or_partial(repo, source, name, lambda key: repo.get_object_to(key, out), out.write)


def _archived_or_partial(
    repo: Repository, source: str, name: str, archived: Callable[[str], T], partial: Callable[[bytes], T]
) -> T:
    """Return `archived(key)` of the archived file, else for a segment `partial(padded bytes)` of
    the receiver's partial copy; raise ObjectNotFound when neither exists."""
    try:
        return archived(wal_key(source, name))
    except ObjectNotFound:
        if not SEGMENT_RE.match(name):
            raise
    try:
        return partial(decode_partial(repo.get_object(partial_key(source, name))))
    except ObjectNotFound:
        # stored whole (and its partial removed) between the two reads
        return archived(wal_key(source, name))


def partial_segments(repo: Repository, source: str) -> list[str]:
    """Return the segments of `source` with an uploaded partial copy, oldest first."""
    names = (k.rsplit("/", 1)[-1] for k in repo.list_objects(wal_prefix(source)))
    return sorted(n[len(PARTIAL_PREFIX) :] for n in names if n.startswith(PARTIAL_PREFIX))
