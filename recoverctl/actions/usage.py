"""Repository usage: bytes and objects per top-level prefix, from one storage listing.

`verify` records it in its run details (`repository_bytes`, `usage`), so `status` can show the
repository's real size without touching the repository itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from recoverctl.storage.base import Storage


@dataclass
class Usage:
    """What the storage holds for one repository: its JSON is {bytes, objects, by_prefix}."""

    bytes: int
    objects: int
    by_prefix: dict[str, int]


def measure_usage(storage: Storage) -> Usage:
    """Given the repository's storage, return its bytes, objects and bytes per top-level prefix.

    Every object counts (packs, index, snapshots, WAL objects, keys, locks): what the storage bills.
    """
    total = objects = 0
    by_prefix: dict[str, int] = {}
    for obj in storage.list(""):
        total += obj.size
        objects += 1
        prefix = obj.key.split("/", 1)[0] if "/" in obj.key else "(top)"
        by_prefix[prefix] = by_prefix.get(prefix, 0) + obj.size
    return Usage(total, objects, dict(sorted(by_prefix.items())))
