"""The RecoverctlError hierarchy: every expected failure carries its exit code and a hint.

The CLI maps these to exit codes; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from enum import IntEnum

log = logging.getLogger(__name__)


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1
    USAGE = 2
    PARTIAL = 3
    NOT_FOUND = 10
    LOCKED = 11
    WRONG_KEY = 12
    VERIFICATION_FAILED = 13
    CANCELLED = 130


class RecoverctlError(Exception):
    """A failure we expected and can explain: what failed, on what, and what to do."""

    exit_code: ExitCode = ExitCode.FAILED
    default_hint: str = ""

    def __init__(self, message: str, *, hint: str | None = None, details: dict[str, object] | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint if hint is not None else self.default_hint
        self.details = details or {}

    def to_dict(self) -> dict[str, object]:
        return {
            "error": type(self).__name__,
            "message": self.message,
            "hint": self.hint,
            "exit_code": int(self.exit_code),
            **({"details": self.details} if self.details else {}),
            **({"notes": list(self.__notes__)} if getattr(self, "__notes__", None) else {}),
        }

    def __str__(self) -> str:
        return self.message


class UsageError(RecoverctlError):
    exit_code = ExitCode.USAGE


class ConfigError(UsageError):
    default_hint = "run 'recoverctl config check' and fix the file"


class PartialError(RecoverctlError):
    exit_code = ExitCode.PARTIAL


class NotFoundError(RecoverctlError):
    exit_code = ExitCode.NOT_FOUND


class LockedError(RecoverctlError):
    exit_code = ExitCode.LOCKED
    default_hint = "wait for the other operation, or remove a stale lock with 'recoverctl unlock'"


class WrongKeyError(RecoverctlError):
    exit_code = ExitCode.WRONG_KEY
    default_hint = "check RECOVERCTL_PASSWORD / RECOVERCTL_PASSWORD_FILE"


class VerificationError(RecoverctlError):
    exit_code = ExitCode.VERIFICATION_FAILED


class CancelledError(RecoverctlError):
    exit_code = ExitCode.CANCELLED


class StorageError(RecoverctlError):
    """A backend operation failed after any retries; the message names the URL (redacted)."""

    transient: bool = False


class TransientStorageError(StorageError):
    """Worth retrying: timeouts, connection resets, 5xx, throttling."""

    transient = True


class ObjectNotFound(StorageError, NotFoundError):
    """The named object does not exist in the storage backend."""

    exit_code = ExitCode.NOT_FOUND


class StorageUnavailable(StorageError):
    """The backend as a whole cannot be used: missing bucket, bad credentials, unknown host key."""


class WriteRefused(StorageUnavailable):
    """The backend refuses writes for good (read-only file system or mount, permission denied,
    AccessDenied on a write, a full disk or quota) although it may still serve reads: read-only
    commands go on without a lock."""

    default_hint = (
        "the repository cannot be written here (read-only mount or credentials, or no space left): "
        "restore, verify, ls, cat, diff, snapshots and drills still work; free space or use write "
        "access to back up or prune"
    )


class CatalogError(RecoverctlError):
    default_hint = "check RECOVERCTL_CATALOG / 'catalog:' and run 'recoverctl catalog info'"


def failure_text(exc: BaseException) -> str:
    """Given the exception that ended a run, return what the run's catalog row says about it.

    KeyboardInterrupt carries no message; a row reading '' would hide that the run was cancelled.
    """
    if isinstance(exc, KeyboardInterrupt):
        return "cancelled by SIGINT"
    notes = "".join(f"; {n}" for n in getattr(exc, "__notes__", ()))
    return ((str(exc) or type(exc).__name__) + notes)[:2000]


@contextlib.contextmanager
def cleanup_after(primary: BaseException | None, what: str) -> Iterator[None]:
    """Run one cleanup step (in a `finally:` or `__exit__`) so that it can never mask the first error.

    With `primary` (the error already on its way out) a failure of the step is logged and attached
    to `primary` as a note, and `primary` goes on; without one, the step's failure is raised.
    """
    try:
        yield
    except Exception as e:
        if primary is None:
            raise
        note = f"then {what} failed too: {e}"
        primary.add_note(note)
        log.warning("%s (after: %s)", note, primary)
