"""Fault injection around any backend, for tests of the retry and error paths (not shipped).

A spec is a comma-separated list of `op:kind:count[@keyprefix]`:
  op     put | get | list | stat | delete | *
  kind   transient (retried) | error (not retried) | unavailable | notfound
  count  how many matching calls fail before the backend is called for real; `*` means always
e.g. `RECOVERCTL_FAULTS=put:transient:2,get:error:1@data/`. The counters live in this process.
`tests.faults.seam` puts the injector between a backend and the retry layer when the variable is set.
"""

from __future__ import annotations

import builtins
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO, TypeVar

from recoverctl.errors import (
    ObjectNotFound,
    StorageError,
    StorageUnavailable,
    TransientStorageError,
    UsageError,
)
from recoverctl.storage.base import ObjectInfo, Storage

ENV_FAULTS = "RECOVERCTL_FAULTS"
T = TypeVar("T")

_KINDS: dict[str, type[StorageError]] = {
    "transient": TransientStorageError,
    "error": StorageError,
    "unavailable": StorageUnavailable,
    "notfound": ObjectNotFound,
}
_OPS = {"put", "get", "list", "stat", "delete", "*"}


@dataclass
class Fault:
    op: str
    kind: str
    remaining: int | None  # None: fail forever
    key_prefix: str = ""

    def matches(self, op: str, key: str) -> bool:
        return (
            self.op in ("*", op)
            and key.startswith(self.key_prefix)
            and (self.remaining is None or self.remaining > 0)
        )


def parse_faults(spec: str) -> list[Fault]:
    """Given a spec like 'put:transient:2,get:error:*@data/', return its faults; raise UsageError."""
    faults: list[Fault] = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        rule, _, key_prefix = item.partition("@")
        parts = rule.split(":")
        if len(parts) != 3 or parts[0] not in _OPS or parts[1] not in _KINDS:
            raise UsageError(
                f"invalid fault spec {item!r} in {ENV_FAULTS}",
                hint=f"use op:kind:count[@prefix], op in {sorted(_OPS)}, kind in {sorted(_KINDS)}",
            )
        op, kind, count = parts
        if count != "*" and not count.isdigit():
            raise UsageError(f"invalid fault count {count!r} in {ENV_FAULTS}", hint="use a number or *")
        faults.append(Fault(op, kind, None if count == "*" else int(count), key_prefix))
    return faults


class FaultyStorage:
    """A Storage that fails matching calls as told, then passes them to the inner backend."""

    def __init__(self, inner: Storage, faults: list[Fault]):
        self.inner = inner
        self.faults = faults
        self.url = inner.url
        self._lock = threading.Lock()
        self.injected = 0

    def _maybe_fail(self, op: str, key: str) -> None:
        with self._lock:
            for fault in self.faults:
                if fault.matches(op, key):
                    if fault.remaining is not None:
                        fault.remaining -= 1
                    self.injected += 1
                    raise _KINDS[fault.kind](
                        f"unable to {op} '{key}' on '{self.url}': injected {fault.kind} fault ({ENV_FAULTS})"
                    )

    def _call(self, op: str, key: str, fn: Callable[[], T]) -> T:
        self._maybe_fail(op, key)
        return fn()

    def put(self, key: str, data: bytes) -> None:
        self._call("put", key, lambda: self.inner.put(key, data))

    def put_file(self, key: str, body: BinaryIO, size: int) -> None:
        self._call("put", key, lambda: self.inner.put_file(key, body, size))

    def get(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        return self._call("get", key, lambda: self.inner.get(key, offset, length))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        self._maybe_fail("list", prefix)
        return self.inner.list(prefix)

    def stat(self, key: str) -> ObjectInfo:
        return self._call("stat", key, lambda: self.inner.stat(key))

    def delete(self, key: str) -> None:
        self._call("delete", key, lambda: self.inner.delete(key))

    def sweep_partial_writes(self, before: float, *, dry_run: bool = False) -> builtins.list[str]:
        return self._call("list", "", lambda: self.inner.sweep_partial_writes(before, dry_run=dry_run))

    def close(self) -> None:
        self.inner.close()
