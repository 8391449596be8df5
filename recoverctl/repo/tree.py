"""Tree nodes: the metadata of one directory entry, as stored in tree blobs.

A tree blob is the JSON document ``{"nodes": [node, ...]}`` sorted by name. A node is a dict:
``name, type`` (file, dir, symlink, fifo, chardev, blockdev, socket), ``mode`` (permission bits),
``uid, gid, user, group, mtime_ns, ctime_ns, inode, dev, links, size``, and per type
``content`` (list of hex blob ids), ``subtree`` (hex tree id), ``target`` (symlink), ``rdev``,
``sparse``, ``xattrs`` ({name: base64}), ``changed_during_read`` (read while being written).
Names that are not valid UTF-8 are kept as surrogate escapes. Access times are not stored (like
borg): every reader changes them, which would make every tree differ; restores set atime = mtime.
"""

from __future__ import annotations

import base64
import grp
import os
import pwd
import stat
from functools import lru_cache
from typing import Any

Node = dict[str, Any]


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
