"""Tree nodes: the metadata of one directory entry, as stored in tree blobs.

A tree blob is the JSON document ``{"nodes": [node, ...]}`` sorted by name. A node is a dict:
``name, type`` (file, dir, symlink, fifo, chardev, blockdev, socket), ``mode`` (permission bits),
``uid, gid, user, group, mtime_ns, ctime_ns, inode, dev, links, size``, and per type
``content`` (list of hex blob ids), ``subtree`` (hex tree id), ``target`` (symlink), ``rdev``,
``sparse``, ``xattrs`` ({name: base64}), ``changed_during_read`` (read while being written);
files cut at fixed boundaries add ``block_size``, and ``page_size`` with ``patches`` when some
chunks are stored as page patches (repo/page_patch.py).
Names that are not valid UTF-8 are kept as surrogate escapes. Access times are not stored (like
borg): every reader changes them, which would make every tree differ; restores set atime = mtime.

A tree is input from storage, and storage can be tampered with: `parse_tree` refuses a tree
whose entries no file system could hold (a name that is empty, '.', '..', or holds '/' or NUL;
two entries of one name; an unknown type; a field of the wrong type or out of range) before any
reader sees it, so no restore, listing or diff ever joins such a name onto a path or hands such
a value to a system call.
"""

from __future__ import annotations

import base64
import grp
import operator
import os
import pwd
import re
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
    two entries share a name, an entry has an unknown type, a malformed subtree id, a symlink
    target that is not a string without NUL, or a field a reader uses of the wrong type or
    out of range (numbers, content ids, owner names, flags, extended attributes). Fields no
    reader knows are left alone.
    """
    try:
        doc = parse_document(data)
    except ValueError:
        raise InvalidTreeError(tree_id, "is not a JSON document") from None
    nodes = doc.get("nodes") if isinstance(doc, dict) else None
    if not isinstance(nodes, list):
        raise InvalidTreeError(tree_id, "is not a tree document (no list of nodes)")
    check_nodes(tree_id, nodes)
    return doc


def check_nodes(tree_id: bytes, nodes: list[Any]) -> None:
    """Raise InvalidTreeError unless every node is one a backup writes (see `parse_tree`).

    This runs on every tree load, so fields are checked inline in one expression per group
    rather than through a schema library or a call per field; the hex digits of all content ids
    are checked at once. Cost for 22,000 nodes: docs/repository-format.md.
    """
    seen: set[str] = set()
    ids: list[str] = []
    for node in nodes:
        name = node.get("name") if type(node) is dict else None
        if not (type(name) is str and name and "/" not in name and "\x00" not in name) or name in (".", ".."):
            raise InvalidTreeError(tree_id, f"holds an entry named {name!r}: {name_problem(name)}")
        assert isinstance(node, dict)
        if name in seen:
            raise InvalidTreeError(tree_id, f"holds two entries named {name!r}")
        seen.add(name)
        kind = node.get("type")
        if kind not in NODE_TYPES:
            raise InvalidTreeError(tree_id, f"holds entry {name!r} of unknown type {kind!r}")
        get = node.get
        user, group = get("user"), get("group")
        try:
            # Every node a backup writes has these: one C call fetches them (KeyError: checked
            # one by one below).
            mode, uid, gid, mtime, ctime, links, inode, dev = _COMMON(node)
            # `|` and `&` refuse anything but integers (TypeError), and the union of non-negative
            # values lies below a power of two exactly when each of them does: one comparison
            # per range, not per field. Times may be negative, so they are compared one by one.
            ok = (
                0 <= mode <= 0o7777
                and 0 <= (uid | gid | mode | (mtime & 0) | (ctime & 0)) < 2**32
                and 0 <= (get("size", 0) | 0) < 2**63
                and 0 <= (links | inode | dev) < 2**64
                and -(2**63) <= mtime < 2**63
                and -(2**63) <= ctime < 2**63
                and (user is None or type(user) is str)
                and (group is None or type(group) is str)
            )
        except (KeyError, TypeError):
            ok = False
        if not ok:
            _check_fields(tree_id, name, node, _INT_FIELDS)
        content = get("content")
        if content is not None:
            if type(content) is not list:
                raise _field_error(tree_id, name, "content", content, "a list of 64-digit hex blob ids")
            ids += content  # checked all at once below
        subtree = get("subtree")
        if subtree is not None and not (kind == "dir" and type(subtree) is str and _BLOB_ID(subtree)):
            raise InvalidTreeError(tree_id, f"holds entry {name!r} with a malformed subtree {subtree!r}")
        target = get("target")
        if target is not None and not (type(target) is str and "\x00" not in target):
            raise InvalidTreeError(tree_id, f"holds symlink {name!r} with an invalid target {target!r}")
        if (
            "atime_ns" in node
            or "rdev" in node
            or "xattrs" in node
            or "sparse" in node
            or "changed_during_read" in node
            or "patches" in node
        ):
            _check_rare(tree_id, name, node)
    # All content ids at once, in C: strings (join), 64 digits each (lengths), hex (fromhex,
    # which skips whitespace, so the decoded length is compared too).
    if ids:
        try:
            joined = "".join(ids)
            ok = set(map(len, ids)) == {64} and len(bytes.fromhex(joined)) == 32 * len(ids)
        except (TypeError, ValueError):
            ok = False
        if not ok:
            for node in nodes:
                for h in node.get("content") or ():
                    if not (type(h) is str and _BLOB_ID(h)):
                        raise _field_error(tree_id, node["name"], "content", h, "a 64-digit hex blob id")


# Bounds of the numeric node fields: what the system calls a restore makes accept (a larger
# value would fail there with OverflowError instead of being reported as a damaged snapshot).
_TIME = (-(2**63), 2**63 - 1)
_INT_FIELDS: dict[str, tuple[int, int] | None] = {
    "mode": (0, 0o7777),
    "uid": (0, 2**32 - 1),
    "gid": (0, 2**32 - 1),
    "mtime_ns": _TIME,
    "ctime_ns": _TIME,
    "size": (0, 2**63 - 1),
    "links": (0, 2**64 - 1),
    "inode": (0, 2**64 - 1),
    "dev": (0, 2**64 - 1),
    "user": None,  # None: a string or null
    "group": None,
}
_RARE_INT_FIELDS: dict[str, tuple[int, int] | None] = {"atime_ns": _TIME, "rdev": (0, 2**64 - 1)}
_COMMON = operator.itemgetter("mode", "uid", "gid", "mtime_ns", "ctime_ns", "links", "inode", "dev")
_BLOB_ID = re.compile("[0-9a-fA-F]{64}").fullmatch
_BASE64 = re.compile("[A-Za-z0-9+/]*={0,2}").fullmatch


def _check_fields(tree_id: bytes, name: str, node: Node, fields: dict[str, tuple[int, int] | None]) -> None:
    """Raise InvalidTreeError naming the first of `fields` in `node` of the wrong type or range."""
    for key, bounds in fields.items():
        if key not in node:
            continue
        value = node[key]
        if bounds is None:
            if value is not None and type(value) is not str:
                raise _field_error(tree_id, name, key, value, "a string or null")
        elif not isinstance(value, int) or not bounds[0] <= value <= bounds[1]:
            raise _field_error(tree_id, name, key, value, f"an integer from {bounds[0]} to {bounds[1]}")


def _check_rare(tree_id: bytes, name: str, node: Node) -> None:
    """Check the fields only some nodes have: access time, device number, flags, xattrs."""
    _check_fields(tree_id, name, node, _RARE_INT_FIELDS)
    if "patches" in node:
        problem = _patch_problem(node)
        if problem is not None:
            raise InvalidTreeError(tree_id, f"holds file {name!r} whose {problem}")
    for flag in ("sparse", "changed_during_read"):
        if flag in node and type(node[flag]) is not bool:
            raise _field_error(tree_id, name, flag, node[flag], "true or false")
    xattrs = node.get("xattrs")
    if xattrs is None:
        return
    if type(xattrs) is not dict:
        raise _field_error(tree_id, name, "xattrs", xattrs, "a map of attribute names to base64 values")
    for key, encoded in xattrs.items():
        if not key or "\x00" in key:
            raise _field_error(tree_id, name, "xattrs", key, "an attribute name (non-empty, no NUL)")
        if type(encoded) is not str or len(encoded) % 4 or not _BASE64(encoded):
            raise _field_error(tree_id, name, f"xattrs[{key!r}]", encoded, "a base64 value")


def _patch_problem(node: Node) -> str | None:
    """Return why a node's page patch fields (repo/page_patch.py) are not ones a backup writes."""
    block, page, patches = node.get("block_size"), node.get("page_size"), node.get("patches")
    if node.get("type") != "file" or type(node.get("content")) is not list:
        return "patches belong to no file content"
    if type(block) is not int or type(page) is not int or not 0 < page <= block <= 2**30:
        return "patches lack a block_size and a page_size that fits it"
    if block % page or block // page > 64:
        return f"block_size {block} is not a multiple of page_size {page} of at most 64 pages"
    if type(patches) is not list:
        return "patches are not a list"
    last, chunks = -1, len(node["content"])
    for p in patches:
        if not (type(p) is list and len(p) == 3):
            return f"patch {p!r:.60} is not [chunk, page mask, blob id]"
        chunk, mask, blob = p
        if type(chunk) is not int or not last < chunk < chunks:
            return f"patch chunk {chunk!r:.20} is not a chunk index in ascending order"
        if type(mask) is not int or not 0 < mask < 1 << (block // page):
            return f"patch mask {mask!r:.30} of chunk {chunk} names no page, or one past the chunk"
        if not (type(blob) is str and _BLOB_ID(blob)):
            return f"patch blob {blob!r:.70} of chunk {chunk} is not a 64-digit hex blob id"
        last = chunk
    return None


def _field_error(tree_id: bytes, name: str, key: str, value: object, expected: str) -> InvalidTreeError:
    return InvalidTreeError(tree_id, f"holds entry {name!r} whose {key} {value!r:.60} is not {expected}")


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
