"""glibc malloc settings for bulk pack work on several threads (backup, restore, verify
--read-data, the WAL pusher): few arenas, and big blocks returned to the system when freed.

Set once per process, at its entry point (cli/main.py, cli/wal_entry.py), before any thread
exists: a thread that allocates before the cap gets its own heap, and what it frees there stays
(the page map's WAL fetch kept 28 MiB that way for a whole backup when this ran in the archiver)."""

from __future__ import annotations

import contextlib
import ctypes


def tune_malloc() -> None:
    """Cap glibc's per-thread malloc arenas at 2, and fix its mmap threshold at 4 MiB. With one
    arena per thread, freed chunk and pack buffers stay spread over many arenas and RSS drifts up
    by 100 MiB on multi-GiB backups. glibc raises the threshold to the size of each mmap'd block
    freed (up to 32 MiB), so after the first 16 MiB pack, 8 MiB chunker buffers came from the heap
    and stayed there: fixed, blocks of 4 MiB or more go back to the system when freed (measured:
    peak RSS -25 MiB on the files benchmark, CPU the same). A no-op where glibc is absent."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_ARENA_MAX, 2)
        libc.mallopt(_M_MMAP_THRESHOLD, 4 * 1024 * 1024)


_M_ARENA_MAX = -8
_M_MMAP_THRESHOLD = -3
