"""Storage backends chosen by URL, each wrapped once in the retry layer."""

from __future__ import annotations

from urllib.parse import urlsplit

from recoverctl.config import RepositoryConfig
from recoverctl.errors import UsageError
from recoverctl.storage.base import ObjectInfo, Storage

__all__ = ["ObjectInfo", "Storage", "open_backend", "open_storage"]


def open_backend(url: str, options: RepositoryConfig | None = None) -> Storage:
    """Given a repository URL, return the bare backend for it (no retries); raise UsageError."""
    options = options or RepositoryConfig(url=url)
    scheme = urlsplit(url).scheme
    if scheme in ("", "file"):
        from recoverctl.storage.local import LocalStorage

        return LocalStorage(urlsplit(url).path if scheme == "file" else url)
    if scheme == "s3":
        from recoverctl.storage.s3 import S3Storage

        return S3Storage(url, options.s3)
    if scheme == "sftp":
        from recoverctl.storage.sftp import SftpStorage

        return SftpStorage(url, options.sftp)
    raise UsageError(
        f"unsupported repository URL '{url}'",
        hint="use a path, file:///path, s3://bucket/prefix or sftp://user@host:port/path",
    )


def open_storage(url: str, options: RepositoryConfig | None = None) -> Storage:
    """Given a repository URL, return its backend wrapped in the retry layer; raise UsageError."""
    from recoverctl.storage.retry import RetryingStorage

    options = options or RepositoryConfig(url=url)
    # `open_backend` is looked up when called: the tests' fault seam (tests/faults/) wraps it.
    return RetryingStorage(open_backend(url, options), options.retry)
