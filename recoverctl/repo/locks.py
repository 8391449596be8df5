"""Repository locks: objects under `locks/`, shared or exclusive, with expiry, refresh and stale detection.

A lock object is plaintext JSON ``{"exclusive", "hostname", "pid", "username", "operation",
"time", "refreshed"}`` so `unlock` and error messages can name the holder without the key.
Taking a lock writes our object first and then lists the others; on a conflict we remove ours
and raise LockedError, so two racing processes may both back off but never both proceed.
A lock not refreshed for `STALE_AFTER` seconds, or held by a dead process on this host, is stale.

A reader (restore, verify, drills) whose lock write the storage refuses (WriteRefused: read-only
mount, read-only credentials) goes on without a lock object, after checking that no exclusive lock
is held; a prune that starts later can then remove a pack it still needs, which fails the read
with a NotFoundError that says so (see docs/repository-format.md, "Locks"). Nothing else is written.

A lock's own cleanup (removing its object) never replaces the error that ended the operation: it is
attached to that error as a note instead.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

from recoverctl.errors import LockedError, ObjectNotFound, WriteRefused, cleanup_after
from recoverctl.storage.base import Storage

log = logging.getLogger(__name__)

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
    """Context manager holding one lock object, refreshed in the background until exit.

    With `reader=True` a refused lock write (WriteRefused) is not an error: the lock is then
    `held = False` and the reader runs lock-free (never for exclusive locks or writers).
    """

    def __init__(
        self, storage: Storage, *, exclusive: bool = False, operation: str = "", reader: bool = False
    ):
        self.storage = storage
        self.exclusive = exclusive
        self.operation = operation
        self.reader = reader and not exclusive
        self.held = False
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

    def _check_others(self) -> None:
        for key, doc in read_locks(self.storage):
            if key == self.key or is_stale(doc):
                continue
            if self.exclusive or doc.get("exclusive"):
                raise LockedError(
                    f"the repository at '{self.storage.url}' is locked: {describe(doc)}",
                    details={"lock": key, "holder": doc},
                )

    def __enter__(self) -> RepositoryLock:
        try:
            self._write()
        except WriteRefused as e:
            if not self.reader:
                raise
            # Read-only repository: nothing to hold, but never start while a prune holds it.
            log.info("%s: the repository refuses writes (%s); reading without a lock", self.operation, e)
            self._check_others()
            return self
        self.held = True
        try:
            self._check_others()
        except BaseException as e:
            with cleanup_after(e, f"removing our lock '{self.key}'"):
                self.storage.delete(self.key)
            self.held = False
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

    def __exit__(self, exc_type: object, exc: BaseException | None, _tb: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if not self.held:
            return
        # The operation's own error is the one to report; a lock left behind goes stale.
        with cleanup_after(exc, f"releasing the repository lock '{self.key}' on '{self.storage.url}'"):
            self.storage.delete(self.key)
        self.held = False


@dataclass
class RemovedLock:
    """A lock object `unlock` removed: its key, who held it, whether it was stale."""

    lock: str
    holder: str
    stale: bool


def unlock(storage: Storage, remove_all: bool = False) -> list[RemovedLock]:
    """Remove stale locks (every lock with `remove_all`); return what was removed."""
    removed = []
    for key, doc in read_locks(storage):
        if remove_all or is_stale(doc):
            storage.delete(key)
            removed.append(RemovedLock(key, describe(doc), is_stale(doc)))
    return removed
