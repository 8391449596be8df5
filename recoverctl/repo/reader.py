"""Read snapshots back: walk trees, list, diff, stream one file, restore to a directory.

The mechanics live beside this module: `content` reads trees and blobs, `restorer` restores into
a directory. This module holds the listing and diffing and names the public reading API.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from recoverctl.repo.content import find_node, iter_file, naming, open_file, tree_nodes, walk
from recoverctl.repo.repository import Repository
from recoverctl.repo.restorer import RestoreResult, link_leaves, restore_snapshot
from recoverctl.repo.snapshot import Snapshot
from recoverctl.repo.tree import Node

__all__ = [
    "RestoreResult",
    "diff",
    "find_node",
    "iter_file",
    "link_leaves",
    "ls",
    "open_file",
    "restore_snapshot",
    "tree_nodes",
    "walk",
]


def ls(
    repo: Repository, snap: Snapshot, path: str = "/", recursive: bool = True
) -> Iterator[tuple[str, Node]]:
    """Yield (path, node) below `path` in a snapshot."""
    node = find_node(repo, snap, path)
    base = "/" + path.strip("/") if path.strip("/") else ""
    if node["type"] != "dir":
        yield base, node
        return
    if base:
        yield base, node
    if not node.get("subtree"):
        return
    with naming(snap):
        if recursive:
            yield from walk(repo, node["subtree"], base)
        else:
            for n in tree_nodes(repo, node["subtree"], base):
                yield f"{base}/{n['name']}", n


def _meta(node: Node) -> tuple[Any, ...]:
    return (
        node.get("type"),
        node.get("mode"),
        node.get("uid"),
        node.get("gid"),
        node.get("mtime_ns"),
        node.get("size"),
        node.get("target"),
        node.get("xattrs"),
    )


def diff(repo: Repository, a: Snapshot, b: Snapshot) -> list[dict[str, Any]]:
    """Return the changes from snapshot a to b: [{"path", "change": added|removed|modified|metadata}]."""
    out: list[dict[str, Any]] = []

    def rec(ta: str | None, tb: str | None, prefix: str) -> None:
        if ta == tb:
            return
        with naming(a):
            na = {n["name"]: n for n in tree_nodes(repo, ta, prefix)} if ta else {}
        with naming(b):
            nb = {n["name"]: n for n in tree_nodes(repo, tb, prefix)} if tb else {}
        for name in sorted(set(na) | set(nb)):
            path = f"{prefix}/{name}"
            x, y = na.get(name), nb.get(name)
            if x is None:
                assert y is not None
                out.append({"path": path, "change": "added", "type": y["type"]})
                if y["type"] == "dir":
                    rec(None, y.get("subtree"), path)
            elif y is None:
                out.append({"path": path, "change": "removed", "type": x["type"]})
                if x["type"] == "dir":
                    rec(x.get("subtree"), None, path)
            elif x["type"] != y["type"]:
                out.append({"path": path, "change": "modified", "type": y["type"]})
            elif x["type"] == "dir":
                if _meta(x)[:4] != _meta(y)[:4]:
                    out.append({"path": path, "change": "metadata", "type": "dir"})
                rec(x.get("subtree"), y.get("subtree"), path)
            elif _stored(x) != _stored(y) or x.get("target") != y.get("target"):
                out.append({"path": path, "change": "modified", "type": y["type"]})
            elif _meta(x) != _meta(y):
                out.append({"path": path, "change": "metadata", "type": y["type"]})

    rec(a.tree, b.tree, "")
    return out


def _stored(node: Node) -> tuple[object, object]:
    """Return what says a file's bytes: its content ids and where its patches put which pages."""
    return node.get("content"), node.get("patches")
