"""Tree nodes: the metadata of one directory entry, as stored in tree blobs.

A tree blob is the JSON document ``{"nodes": [node, ...]}`` sorted by name. A node is a dict:
``name, type`` (file, dir, symlink, fifo, chardev, blockdev, socket), ``mode`` (permission bits),
``uid, gid, user, group, mtime_ns, ctime_ns, inode, dev, links, size``, and per type
``content`` (list of hex blob ids), ``subtree`` (hex tree id), ``target`` (symlink), ``rdev``,
``sparse``, ``xattrs`` ({name: base64}), ``changed_during_read`` (read while being written).
Names that are not valid UTF-8 are kept as surrogate escapes. Access times are not stored (like
borg): every reader changes them, which would make every tree differ; restores set atime = mtime.

A tree is input from storage, and storage can be tampered with: `parse_tree` refuses a tree
whose entries no file system could hold (a name that is empty, '.', '..', or holds '/' or NUL;
two entries of one name; an unknown type) before any reader sees it, so no restore, listing or
diff ever joins such a name onto a path.
"""

from __future__ import annotations

import base64
import grp
import os
import pwd
import stat
from functools import lru_cache
from typing import Any

from recoverctl.errors import VerificationError
from recoverctl.repo.documents import parse_document

Node = dict[str, Any]
NODE_TYPES = frozenset({"file", "dir", "symlink", "fifo", "chardev", "blockdev", "socket"})


class InvalidTreeError(VerificationError):
    """A tree blob that no backup writes: tampered with, or written by a broken client (exit 13).

    The reader that knows where the tree sits adds the snapshot and the directory with `locate`.
    """

    default_hint = (
        "the snapshot was tampered with or written by a broken client: restore another snapshot and "
        "run 'recoverctl verify'"
    )

    def __init__(self, tree_id: bytes, problem: str):
        self.tree_id = tree_id
        self.problem = problem
        self.snapshot: str | None = None
        self.directory: str | None = None
        super().__init__(self._text())

    def locate(self, *, snapshot: str | None = None, directory: str | None = None) -> InvalidTreeError:
        """Name the snapshot and the directory ('/a/b') of the tree, unless a deeper reader did."""
        if self.snapshot is None and snapshot:
            self.snapshot = snapshot
        if self.directory is None and directory is not None:
            self.directory = directory or "/"
        self.message = self._text()
        self.args = (self.message,)
        return self

    def _text(self) -> str:
        where = f"snapshot {self.snapshot}: " if self.snapshot else ""
        what = f"directory '{self.directory}'" if self.directory is not None else "a directory"
        return f"{where}{what} (tree {self.tree_id.hex()[:16]}) {self.problem}"


def name_problem(name: object) -> str | None:
    """Return why `name` cannot be one directory entry's name, or None when it can."""
    if not isinstance(name, str) or not name:
        return "a name must be a non-empty string"
    if name in (".", ".."):
        return "a name must not be '.' or '..'"
    if "/" in name:
        return "a name must not contain '/'"
    if "\x00" in name:
        return "a name must not contain a NUL byte"
    return None


def parse_tree(tree_id: bytes, data: bytes) -> dict[str, Any]:
    """Given a tree blob's plaintext, return the document {"nodes": [...]}.

    Raise InvalidTreeError when it is not a tree, an entry's name is not a single file name,
    two entries share a name, an entry has an unknown type, a malformed subtree id or a symlink
    target that is not a string without NUL.
    """
    try:
        doc = parse_document(data)
    except ValueError:
        raise InvalidTreeError(tree_id, "is not a JSON document") from None
    nodes = doc.get("nodes") if isinstance(doc, dict) else None
    if not isinstance(nodes, list):
        raise InvalidTreeError(tree_id, "is not a tree document (no list of nodes)")
    seen: set[str] = set()
    for node in nodes:
        name = node.get("name") if isinstance(node, dict) else None
        why = name_problem(name)
        if why is not None:
            raise InvalidTreeError(tree_id, f"holds an entry named {name!r}: {why}")
        assert isinstance(node, dict) and isinstance(name, str)
        if name in seen:
            raise InvalidTreeError(tree_id, f"holds two entries named {name!r}")
        seen.add(name)
        kind = node.get("type")
        if kind not in NODE_TYPES:
            raise InvalidTreeError(tree_id, f"holds entry {name!r} of unknown type {kind!r}")
        target = node.get("target")
        if target is not None and not (isinstance(target, str) and "\x00" not in target):
            raise InvalidTreeError(tree_id, f"holds symlink {name!r} with an invalid target {target!r}")
        subtree = node.get("subtree")
        if subtree is not None and not (kind == "dir" and _is_hex(subtree)):
            raise InvalidTreeError(tree_id, f"holds entry {name!r} with a malformed subtree {subtree!r}")
    return doc


def _is_hex(value: object) -> bool:
    if not isinstance(value, str) or not value:
        return False
    try:
        bytes.fromhex(value)
    except ValueError:
        return False
    return True


@lru_cache(maxsize=1024)
def user_name(uid: int) -> str | None:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


@lru_cache(maxsize=1024)
def group_name(gid: int) -> str | None:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return None


def node_type(mode: int) -> str | None:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISFIFO(mode):
        return "fifo"
    if stat.S_ISCHR(mode):
        return "chardev"
    if stat.S_ISBLK(mode):
        return "blockdev"
    if stat.S_ISSOCK(mode):
        return "socket"
    return None


def node_from_stat(name: str, st: os.stat_result, path: str | None) -> Node:
    """Given an lstat result (and the path for symlinks/xattrs), return the node without content."""
    t = node_type(st.st_mode)
    node: Node = {
        "name": name,
        "type": t,
        "mode": stat.S_IMODE(st.st_mode),
        "uid": st.st_uid,
        "gid": st.st_gid,
        "user": user_name(st.st_uid),
        "group": group_name(st.st_gid),
        "mtime_ns": st.st_mtime_ns,
        "ctime_ns": st.st_ctime_ns,
        "inode": st.st_ino,
        "dev": st.st_dev,
        "links": st.st_nlink,
    }
    if t == "file":
        node["size"] = st.st_size
        if st.st_blocks * 512 < st.st_size:
            node["sparse"] = True
    elif t == "symlink" and path is not None:
        node["target"] = os.readlink(path)
    elif t in ("chardev", "blockdev"):
        node["rdev"] = st.st_rdev
    if path is not None and t != "symlink":
        xattrs = read_xattrs(path)
        if xattrs:
            node["xattrs"] = xattrs
    return node


def read_xattrs(path: str) -> dict[str, str]:
    """Return the readable extended attributes of `path` (base64 values); {} when unsupported."""
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    out = {}
    for n in names:
        try:
            out[n] = base64.b64encode(os.getxattr(path, n, follow_symlinks=False)).decode()
        except OSError:
            continue
    return out


def unchanged(node: Node | None, st: os.stat_result) -> bool:
    """Whether a parent snapshot's file node still describes the file with this lstat result."""
    return (
        node is not None
        and node.get("type") == "file"
        and not node.get("changed_during_read")
        and node.get("size") == st.st_size
        and node.get("mtime_ns") == st.st_mtime_ns
        and node.get("ctime_ns") == st.st_ctime_ns
        and node.get("inode") == st.st_ino
    )


def same_metadata(node: Node, st: os.stat_result) -> bool:
    """Whether a stored file node has the type, mode, owner and link count of this lstat result.

    With `unchanged` (same ctime), the whole node still holds: xattrs also move the ctime when
    they change, so they need not be read again.
    """
    return (
        stat.S_ISREG(st.st_mode)
        and node.get("mode") == stat.S_IMODE(st.st_mode)
        and node.get("uid") == st.st_uid
        and node.get("gid") == st.st_gid
        and node.get("links") == st.st_nlink
    )
