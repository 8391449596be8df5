"""File system operations confined to a restore target: every entry is reached from the target's
open descriptor one validated name at a time, never through a symlink.

A snapshot is input from storage and a target may already hold symlinks; joining names onto a
path and letting the kernel resolve it would let either redirect a write outside the target. So
each directory is opened with O_NOFOLLOW relative to its parent's descriptor, and files, links
and special files are created, changed and removed relative to those descriptors (`*at` calls).
"""

from __future__ import annotations

import base64
import contextlib
import errno
import os
import shutil
import stat
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import TypeVar

from recoverctl.repo.tree import Node

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_EXCL makes O_CREAT fail on any existing entry, a symlink included; O_NOFOLLOW says so twice.
NEW_FILE = os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
# Idle directory descriptors kept open; more are closed (least recently used first) and opened
# again from their parent when needed, so a wide or deep tree never exhausts descriptors.
MAX_IDLE_DIRS = 256
T = TypeVar("T")


class Dir:
    """A directory of a restore, known by its parent and name (`rel` is '/a/b' for messages)."""

    __slots__ = ("fd", "name", "parent", "rel", "users")

    def __init__(self, parent: Dir | None, name: str, rel: str, fd: int | None = None):
        self.parent = parent
        self.name = name
        self.rel = rel
        self.fd = fd
        self.users = 0


class DirTable:
    """Open descriptors of a restore's directories, shared by its threads.

    `use(d)` gives d's descriptor and keeps it open until the block ends; an idle one may be
    closed and is then opened again from its parent's descriptor (O_NOFOLLOW, so a directory
    swapped for a symlink meanwhile fails with ELOOP instead of being followed).
    """

    def __init__(self, root_fd: int, rel: str = ""):
        self.root = Dir(None, "", rel, root_fd)
        self.root.users = 1  # never closed before `close`
        self._pinned: list[Dir] = [self.root]
        self._lock = threading.Lock()
        self._idle: OrderedDict[Dir, None] = OrderedDict()

    def pinned(self, fd: int, rel: str) -> Dir:
        """Return a directory for an open descriptor the caller chose (kept open until `close`)."""
        d = Dir(None, "", rel, fd)
        d.users = 1
        self._pinned.append(d)
        return d

    @contextlib.contextmanager
    def use(self, d: Dir) -> Iterator[int]:
        """Yield d's descriptor; raise OSError when it (or a parent) can no longer be opened."""
        with self._lock:
            if d.fd is None:
                self._open_locked(d)
            d.users += 1
            self._idle.pop(d, None)
        assert d.fd is not None
        try:
            yield d.fd
        finally:
            with self._lock:
                d.users -= 1
                if d.users == 0:
                    self._idle[d] = None
                    self._trim_locked()

    def _open_locked(self, d: Dir) -> None:
        chain: list[Dir] = []
        p: Dir | None = d
        while p is not None and p.fd is None:
            chain.append(p)
            p = p.parent
        for c in reversed(chain):
            assert c.parent is not None and c.parent.fd is not None
            c.fd = os.open(c.name, DIR_FLAGS, dir_fd=c.parent.fd)
            self._idle[c] = None
        self._trim_locked(keep=d)

    def _trim_locked(self, keep: Dir | None = None) -> None:
        while len(self._idle) > MAX_IDLE_DIRS:
            old = next(iter(self._idle))
            if old is keep:
                self._idle.move_to_end(old)
                old = next(iter(self._idle))
            del self._idle[old]
            assert old.fd is not None
            os.close(old.fd)
            old.fd = None

    def close(self) -> None:
        with self._lock:
            for d in [*self._idle, *self._pinned]:
                if d.fd is not None:
                    os.close(d.fd)
                    d.fd = None
            self._idle.clear()


def entries(dir_fd: int) -> dict[str, bool]:
    """Return {name: is a directory (not a symlink to one)} for the entries of an open directory."""
    with os.scandir(dir_fd) as it:
        return {e.name: e.is_dir(follow_symlinks=False) for e in it}


def remove(dir_fd: int, name: str, is_dir: bool) -> None:
    """Remove an entry of an open directory; a directory with everything below it, by descriptors
    (shutil.rmtree's symlink-attack-safe walk, rooted at dir_fd)."""
    if is_dir:
        shutil.rmtree(name, dir_fd=dir_fd)
    else:
        os.unlink(name, dir_fd=dir_fd)


def apply_meta(fd: int, node: Node, is_root: bool) -> None:
    """Apply ownership (as root), mode, xattrs and times to an open file or directory."""
    if is_root:
        with contextlib.suppress(OSError):
            os.fchown(fd, node.get("uid", -1), node.get("gid", -1))
    os.fchmod(fd, node.get("mode", 0o644))
    for name, value in (node.get("xattrs") or {}).items():
        try:
            os.setxattr(fd, name, base64.b64decode(value))
        except OSError as e:
            if e.errno not in (errno.ENOTSUP, errno.EPERM, errno.EACCES):
                raise
    with contextlib.suppress(OSError):
        os.utime(fd, ns=_times(node))


def apply_meta_at(dir_fd: int, name: str, node: Node, is_root: bool) -> None:
    """Apply metadata to a symlink, FIFO or device node `name` in an open directory without
    following it (such entries are not opened: opening a device can have effects)."""
    link = node["type"] == "symlink"
    if is_root:
        with contextlib.suppress(OSError):
            os.chown(name, node.get("uid", -1), node.get("gid", -1), dir_fd=dir_fd, follow_symlinks=False)
    if not link:  # a symlink's own mode cannot be changed on Linux, and means nothing
        os.chmod(name, node.get("mode", 0o644), dir_fd=dir_fd, follow_symlinks=False)
        # No *at call sets xattrs: /proc/self/fd/N names the directory itself, and the last
        # component is not followed.
        entry = f"/proc/self/fd/{dir_fd}/{name}"
        for key, value in (node.get("xattrs") or {}).items():
            try:
                os.setxattr(entry, key, base64.b64decode(value), follow_symlinks=False)
            except OSError as e:
                if e.errno not in (errno.ENOTSUP, errno.EPERM, errno.EACCES, errno.ENOENT):
                    raise
    with contextlib.suppress(NotImplementedError, OSError):
        os.utime(name, ns=_times(node), dir_fd=dir_fd, follow_symlinks=False)


def _times(node: Node) -> tuple[int, int]:
    mtime = int(node.get("mtime_ns") or 0)
    return int(node.get("atime_ns") or mtime), mtime


def write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def write_replacing(dir_fd: int, name: str, fill: Callable[[int], T], flags: int = os.O_WRONLY) -> T:
    """Create a temporary file (mode 0600) in an open directory, let `fill` write it through its
    descriptor, then rename it over `name`: whatever is there, a symlink included, is replaced,
    never followed. The temporary file is removed on any failure. Return what `fill` returns."""
    # Not derived from `name`: any part of a 255-byte name (multibyte, too) plus a suffix could
    # exceed NAME_MAX. 128 random bits make a clash with an existing entry beyond reach.
    tmp = f".rctmp-{os.urandom(16).hex()}"
    try:
        fd = os.open(tmp, flags | NEW_FILE, 0o600, dir_fd=dir_fd)
        try:
            result = fill(fd)
        finally:
            os.close(fd)
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise
    return result


def write_file(directory: str | os.PathLike[str], name: str, data: bytes) -> None:
    """Make `name` in `directory` a new regular file (mode 0600, owned by the directory's owner)
    holding `data` (see write_replacing)."""
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    owner = os.fstat(dfd)

    def fill(fd: int) -> None:
        # Run as root on a data directory owned by postgres, a root-owned 0600 file would be
        # unreadable to the server, which skips an unreadable postgresql.auto.conf silently.
        if os.geteuid() == 0 and owner.st_uid != 0:
            os.fchown(fd, owner.st_uid, owner.st_gid)
        write_all(fd, data)

    try:
        write_replacing(dfd, name, fill)
    finally:
        os.close(dfd)


def read_file(directory: str | os.PathLike[str], name: str) -> bytes | None:
    """Return the content of the regular file `name` in `directory`; None when it is absent or
    not a regular file (a symlink is not followed)."""
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dfd)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:
        if e.errno == errno.ELOOP:
            return None
        raise
    finally:
        os.close(dfd)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            return None
        return f.read()
