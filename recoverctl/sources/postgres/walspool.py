"""Local hand-off files that let most WAL commands finish without opening the repository.

Kept free of heavy imports: PostgreSQL runs a process per WAL file, and these checks happen
before the configuration or the repository is loaded.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

PUSHED_DIR = ".recoverctl-pushed"
SPOOL_DIR = ".recoverctl-prefetch"


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def pushed_marker(path: Path, source: str) -> Path:
    """Where a push-ahead leaves the sha256 of a WAL file it already stored (next to pg_wal)."""
    return path.absolute().parent / PUSHED_DIR / source / path.name


def prefetched(dest: Path, source: str, name: str) -> Path:
    """Where a fetch read-ahead leaves a WAL segment (next to the destination in pg_wal)."""
    return dest.absolute().parent / SPOOL_DIR / source / name


def take_pushed(path: Path, source: str) -> int | None:
    """If `path` was pushed ahead with identical content, consume the marker and return its size.

    Return None (and drop a stale marker) otherwise: the caller then pushes normally.
    """
    marker = pushed_marker(path, source)
    try:
        expected = marker.read_text().strip()
    except FileNotFoundError:
        return None
    data = path.read_bytes()
    marker.unlink(missing_ok=True)
    return len(data) if expected == digest(data) else None


def take_prefetched(dest: Path, source: str, name: str) -> int | None:
    """If segment `name` was read ahead, move it to `dest` and return its size, else None."""
    cached = prefetched(dest, source, name)
    try:
        size = cached.stat().st_size
        os.replace(cached, dest)
    except FileNotFoundError:
        return None
    return size
