"""Retries for any backend, in one place: exponential backoff with jitter, bounded attempts and time.

Only TransientStorageError is retried; backends classify their own faults into it.
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import Callable, Iterator
from typing import BinaryIO, TypeVar

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)

from recoverctl.config import RetryOptions
from recoverctl.errors import CancelledError, StorageError, TransientStorageError
from recoverctl.interrupts import stop_requested
from recoverctl.storage.base import ObjectInfo, Storage

log = logging.getLogger(__name__)
T = TypeVar("T")


class RetryingStorage:
    """A Storage that retries its inner backend's transient failures."""

    def __init__(self, inner: Storage, options: RetryOptions | None = None):
        self.inner = inner
        self.options = options or RetryOptions()
        self.url = inner.url

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        o = self.options

        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            log.warning(
                "%s on %s failed (attempt %d): %s; retrying", what, self.url, state.attempt_number, exc
            )

        def sleep(seconds: float) -> None:
            # Back-off is where worker threads spend a cancelled command's exit: end it early.
            if stop_requested.wait(seconds):
                raise CancelledError(f"{what} on '{self.url}': cancelled while waiting to retry")

        retrying = Retrying(
            retry=retry_if_exception_type(TransientStorageError),
            stop=stop_after_attempt(o.attempts) | stop_after_delay(o.max_seconds),
            wait=wait_random_exponential(multiplier=o.initial, max=o.maximum),
            before_sleep=before_sleep,
            sleep=sleep,
            reraise=True,
        )
        try:
            return retrying(fn)
        except TransientStorageError as e:
            raise StorageError(
                f"{what} on '{self.url}' failed after retries: {e.message}",
                hint=e.hint or "check that the storage endpoint is reachable and healthy",
            ) from e

    def put(self, key: str, data: bytes) -> None:
        self._call(f"put {key}", lambda: self.inner.put(key, data))

    def put_file(self, key: str, body: BinaryIO, size: int) -> None:
        self._call(f"put {key}", lambda: self.inner.put_file(key, body, size))

    def get(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        return self._call(f"get {key}", lambda: self.inner.get(key, offset, length))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        # A listing is retried as a whole: restarting a paginated listing is the only safe resume.
        return iter(self._call(f"list {prefix or '/'}", lambda: list(self.inner.list(prefix))))

    def stat(self, key: str) -> ObjectInfo:
        return self._call(f"stat {key}", lambda: self.inner.stat(key))

    def delete(self, key: str) -> None:
        self._call(f"delete {key}", lambda: self.inner.delete(key))

    def sweep_partial_writes(self, before: float, *, dry_run: bool = False) -> builtins.list[str]:
        return self._call(
            "sweep partial writes", lambda: self.inner.sweep_partial_writes(before, dry_run=dry_run)
        )

    def close(self) -> None:
        self.inner.close()
