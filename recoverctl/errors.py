"""The RecoverctlError hierarchy: every expected failure carries its exit code and a hint.

The CLI maps these to exit codes; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from enum import IntEnum


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


class CatalogError(RecoverctlError):
    default_hint = "check RECOVERCTL_CATALOG / 'catalog:' and run 'recoverctl catalog info'"


def failure_text(exc: BaseException) -> str:
    """Given the exception that ended a run, return what the run's catalog row says about it.

    KeyboardInterrupt carries no message; a row reading '' would hide that the run was cancelled.
    """
    if isinstance(exc, KeyboardInterrupt):
        return "cancelled by SIGINT"
    return (str(exc) or type(exc).__name__)[:2000]
