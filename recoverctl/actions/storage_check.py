"""Probe a storage URL end to end: write, stat, read back, list, delete."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

from recoverctl.config import RepositoryConfig
from recoverctl.errors import StorageError, cleanup_after
from recoverctl.storage import Storage, open_storage


@dataclass
class StorageProbe:
    """One successful probe round trip: the (redacted) URL, probe size and per-step latency (ms)."""

    url: str
    ok: bool
    bytes: int
    latency_ms: dict[str, float]


def check_storage(url: str, options: RepositoryConfig | None = None, size: int = 1024 * 1024) -> StorageProbe:
    """Given a URL, run one probe round trip and return per-step latencies in ms.

    Raise StorageError (naming the redacted URL) when a step fails or the data read back differs.
    The probe object is always deleted again.
    """
    storage: Storage = open_storage(url, options)
    key = f"recoverctl-probe/{os.getpid()}-{time.time_ns()}"
    payload = os.urandom(size)
    steps: dict[str, float] = {}

    def timed(name: str, fn: Any, *args: Any) -> Any:
        start = time.perf_counter()
        result = fn(*args)
        steps[name] = round((time.perf_counter() - start) * 1000, 2)
        return result

    try:
        timed("put", storage.put, key, payload)
        try:
            info = timed("stat", storage.stat, key)
            if info.size != size:
                raise StorageError(f"probe object on '{storage.url}' has size {info.size}, wrote {size}")
            back = timed("get", storage.get, key)
            if back != payload:
                raise StorageError(
                    f"probe object read back from '{storage.url}' differs from what was written"
                )
            listed = timed("list", lambda: [o.key for o in storage.list("recoverctl-probe/")])
            if key not in listed:
                raise StorageError(f"probe object missing from the listing of '{storage.url}'")
        except BaseException as e:
            # The failed step is the one to report; a failed removal is a note on it.
            with cleanup_after(e, f"removing the probe object '{key}'"):
                timed("delete", storage.delete, key)
            raise
        timed("delete", storage.delete, key)
    finally:
        storage.close()
    return StorageProbe(storage.url, True, size, steps)
