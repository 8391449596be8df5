"""Local filesystem backend: `file:///path` or a plain path."""

from __future__ import annotations

import builtins
import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from recoverctl.errors import ObjectNotFound, StorageError, WriteRefused
from recoverctl.storage.base import COPY_BUFFER, DIR_MODE, TMP_PREFIX, ObjectInfo

# A write refused for good, while reads may still work: read-only mount, no write permission,
# a full file system or quota.
_REFUSED = (errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT)


class LocalStorage:
    """Objects are files under `root`; writes go to a temp file, fsync, rename (atomic, crash-safe).

    Directories are DIR_MODE, files 0600 (mkstemp).
    """

    def __init__(self, root: str | Path, *, create: bool = True):
        self.root = Path(root).expanduser().absolute()
        self.url = f"file://{self.root}"
        if create:
            try:
                # Parents above the repository are not ours to restrict: they get the default mode.
                self.root.parent.mkdir(parents=True, exist_ok=True)
                self.root.mkdir(mode=DIR_MODE, exist_ok=True)
            except OSError as e:
                raise StorageError(
                    f"unable to create '{self.url}': {e.strerror}", hint="check the path and permissions"
                ) from None

    def _path(self, key: str) -> Path:
        if key.startswith("/") or ".." in key.split("/"):
            raise StorageError(f"invalid object key {key!r} on '{self.url}'")
        return self.root / key

    def _make_dirs(self, path: Path) -> None:
        """Create the missing directories from the root down to `path`, each DIR_MODE."""
        missing = []
        while path != self.root and not path.is_dir():
            missing.append(path)
            path = path.parent
        for d in reversed(missing):
            with contextlib.suppress(FileExistsError):  # a concurrent writer made it
                d.mkdir(mode=DIR_MODE)

    def put(self, key: str, data: bytes) -> None:
        self._write(key, lambda f: f.write(data))

    def put_file(self, key: str, body: BinaryIO, size: int) -> None:
        def copy(f: BinaryIO) -> None:
            body.seek(0)
            shutil.copyfileobj(body, f, COPY_BUFFER)
            if f.tell() != size:
                raise OSError(errno.EIO, f"the source holds {f.tell()} of {size} bytes")

        self._write(key, copy)

    def _write(self, key: str, fill: Callable[[BinaryIO], object]) -> None:
        """Write `key` atomically: `fill` writes a temporary file beside it, which is synced and
        renamed over it."""
        path = self._path(key)
        try:
            self._make_dirs(path.parent)
            fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=path.parent)
            try:
                with os.fdopen(fd, "wb") as f:
                    fill(f)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
            dfd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError as e:
            cls = WriteRefused if e.errno in _REFUSED else StorageError
            raise cls(f"unable to write '{key}' to '{self.url}': {e.strerror}") from None

    def get(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        path = self._path(key)
        try:
            with open(path, "rb") as f:
                if offset:
                    f.seek(offset)
                return f.read() if length is None else f.read(length)
        except FileNotFoundError:
            raise ObjectNotFound(f"object '{key}' not found in '{self.url}'") from None
        except OSError as e:
            raise StorageError(f"unable to read '{key}' from '{self.url}': {e.strerror}") from None

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        # Walk only the directory the prefix points into, not the whole tree.
        base = self.root / prefix.rsplit("/", 1)[0] if "/" in prefix else self.root
        if not base.is_dir():
            return
        for dirpath, _dirs, files in os.walk(base):
            for name in files:
                if name.startswith(TMP_PREFIX):
                    continue
                full = os.path.join(dirpath, name)
                key = os.path.relpath(full, self.root).replace(os.sep, "/")
                if key.startswith(prefix):
                    try:
                        st = os.stat(full)
                    except FileNotFoundError:
                        continue
                    yield ObjectInfo(key, st.st_size, st.st_mtime)

    def stat(self, key: str) -> ObjectInfo:
        try:
            st = os.stat(self._path(key))
        except FileNotFoundError:
            raise ObjectNotFound(f"object '{key}' not found in '{self.url}'") from None
        return ObjectInfo(key, st.st_size, st.st_mtime)

    def delete(self, key: str) -> None:
        try:
            os.unlink(self._path(key))
        except FileNotFoundError:
            pass
        except OSError as e:
            cls = WriteRefused if e.errno in _REFUSED else StorageError
            raise cls(f"unable to delete '{key}' from '{self.url}': {e.strerror}") from None

    def sweep_partial_writes(self, before: float, *, dry_run: bool = False) -> builtins.list[str]:
        swept: builtins.list[str] = []
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                if not name.startswith(TMP_PREFIX):
                    continue
                full = os.path.join(dirpath, name)
                try:
                    if os.stat(full).st_mtime >= before:
                        continue
                    if not dry_run:
                        os.unlink(full)
                except FileNotFoundError:
                    continue
                except OSError as e:
                    raise StorageError(f"unable to remove '{full}' from '{self.url}': {e.strerror}") from None
                swept.append(os.path.relpath(full, self.root).replace(os.sep, "/"))
        return sorted(swept)

    def close(self) -> None:
        pass
