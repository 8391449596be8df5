"""What a restore finds in its target and how it writes there: selection by include paths, files
already holding a node's content (kept by `--delta`), symlinks that may leave the target, holes."""

from __future__ import annotations

import os
import stat

from recoverctl.repo.content import holds
from recoverctl.repo.repository import Repository
from recoverctl.repo.tree import Node


def selected(path: str, include: list[str] | None) -> tuple[bool, bool]:
    """Return (restore this node, descend into it) for an include list of '/a/b' paths."""
    if not include:
        return True, True
    for inc in include:
        if path == inc or path.startswith(inc + "/"):
            return True, True
        if inc.startswith(path + "/"):
            return False, True
    return False, False


def open_unchanged(repo: Repository, node: Node, dir_fd: int, name: str) -> int | None:
    """Return a read-only descriptor of the regular file `name` (never a symlink, FIFO or device)
    when it already holds the node's content, else None."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(st.st_mode) or st.st_size != node.get("size"):
        return None
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode) and holds(repo, fd, node):
            return fd
    except BaseException:
        os.close(fd)
        raise
    os.close(fd)
    return None


def link_leaves(target: str) -> bool:
    """Whether a symlink with this target may point outside the directory tree it is in.

    Only a relative target that never goes up stays inside, whatever other such links it passes
    through: each of them only descends too. ('..' is refused even where it would stay inside:
    after a symlink component it climbs from the link's target, not from the link.)
    """
    return not target or target.startswith("/") or ".." in target.split("/")


_HOLE = 64 * 1024
_ZEROS = bytes(_HOLE)


def write_at(fd: int, data: bytes | memoryview, offset: int, sparse: bool = False) -> None:
    """Write `data` at `offset` of the open file `fd`. With `sparse`, all-zero 64 KiB pieces are
    skipped so they stay holes (the caller sets the file's length)."""
    mv = memoryview(data)
    step = _HOLE if sparse else max(1, len(mv))
    for i in range(0, len(mv), step):
        piece = mv[i : i + step]
        if sparse and piece == _ZEROS[: len(piece)]:
            continue
        done = 0
        while done < len(piece):
            done += os.pwrite(fd, piece[done:], offset + i + done)
