"""Repository locks: objects under `locks/`, shared or exclusive, with expiry, refresh and stale detection.

A lock object is plaintext JSON ``{"exclusive", "hostname", "pid", "username", "operation",
"time", "refreshed"}`` so `unlock` and error messages can name the holder without the key.
Taking a lock writes our object first and then lists the others; on a conflict we remove ours
and raise LockedError, so two racing processes may both back off but never both proceed.
A lock not refreshed for `STALE_AFTER` seconds, or held by a dead process on this host, is stale.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import threading
import time
from typing import Any

from recoverctl.errors import LockedError, ObjectNotFound
from recoverctl.storage.base import Storage

STALE_AFTER = 30 * 60.0
REFRESH_EVERY = 5 * 60.0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_stale(doc: dict[str, Any], now: float | None = None) -> bool:
    now = time.time() if now is None else now
    if now - float(doc.get("refreshed") or doc.get("time") or 0) > STALE_AFTER:
        return True
    return doc.get("hostname") == socket.gethostname() and not _pid_alive(int(doc.get("pid", 0)))


def describe(doc: dict[str, Any]) -> str:
    kind = "exclusive" if doc.get("exclusive") else "shared"
    op = f" for {doc['operation']}" if doc.get("operation") else ""
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(doc.get("time", 0))))
    return f"{kind} lock{op} by {doc.get('username')}@{doc.get('hostname')} pid {doc.get('pid')} since {when}"


def read_locks(storage: Storage) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for o in storage.list("locks/"):
        try:
            out.append((o.key, json.loads(storage.get(o.key))))
        except (ObjectNotFound, ValueError):
            continue
    return out


class RepositoryLock:
    """Context manager holding one lock object, refreshed in the background until exit."""

    def __init__(self, storage: Storage, *, exclusive: bool = False, operation: str = ""):
        self.storage = storage
        self.exclusive = exclusive
        self.operation = operation
        self.key = f"locks/{os.urandom(16).hex()}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        try:
            user = getpass.getuser()
        except Exception:
            user = str(os.getuid())
        now = time.time()
        self.doc: dict[str, Any] = {
            "exclusive": exclusive,
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
            "username": user,
            "operation": operation,
            "time": now,
            "refreshed": now,
        }

    def _write(self) -> None:
        self.storage.put(self.key, json.dumps(self.doc).encode())

    def __enter__(self) -> RepositoryLock:
        self._write()
        try:
            for key, doc in read_locks(self.storage):
                if key == self.key or is_stale(doc):
                    continue
                if self.exclusive or doc.get("exclusive"):
                    raise LockedError(
                        f"the repository at '{self.storage.url}' is locked: {describe(doc)}",
                        details={"lock": key, "holder": doc},
                    )
        except BaseException:
            self.storage.delete(self.key)
            raise
        self._thread = threading.Thread(target=self._refresh, name="lock-refresh", daemon=True)
        self._thread.start()
        return self

    def _refresh(self) -> None:
        while not self._stop.wait(REFRESH_EVERY):
            self.doc["refreshed"] = time.time()
            try:
                self._write()
            except Exception:
                continue  # the next refresh retries; expiry is far longer than the interval

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.storage.delete(self.key)


def unlock(storage: Storage, remove_all: bool = False) -> list[dict[str, Any]]:
    """Remove stale locks (every lock with `remove_all`); return what was removed."""
    removed = []
    for key, doc in read_locks(storage):
        if remove_all or is_stale(doc):
            storage.delete(key)
            removed.append({"lock": key, "holder": describe(doc), "stale": is_stale(doc)})
    return removed
