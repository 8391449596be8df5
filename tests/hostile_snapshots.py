"""Snapshots no backup would write, saved through the repository's own write path (BlobSaver,
save_snapshot): what an attacker who can write to storage and holds the key could plant, and a
fingerprint of a directory to prove a restore changed nothing outside its target."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path
from typing import Any

from recoverctl.repo import Repository, Snapshot
from recoverctl.repo.pack import DATA, TREE
from recoverctl.repo.saver import BlobSaver


def file(name: str, data: bytes, mode: int = 0o644) -> dict[str, Any]:
    return {"name": name, "type": "file", "data": data, "mode": mode}


def directory(name: str, *children: dict[str, Any], mode: int = 0o755) -> dict[str, Any]:
    return {"name": name, "type": "dir", "children": list(children), "mode": mode}


def symlink(name: str, target: str) -> dict[str, Any]:
    return {"name": name, "type": "symlink", "target": target}


def _save_tree(saver: BlobSaver, entries: list[dict[str, Any]]) -> str:
    nodes: list[dict[str, Any]] = []
    now = time.time_ns()
    for e in entries:  # kept in the given order: a hostile writer need not sort or deduplicate
        node: dict[str, Any] = {
            "name": e["name"],
            "type": e["type"],
            "mode": e.get("mode", 0o644),
            "uid": os.getuid(),
            "gid": os.getgid(),
            "mtime_ns": now,
        }
        if e["type"] == "file":
            data: bytes = e["data"]
            node["size"] = len(data)
            node["content"] = [saver.save(DATA, data)[0].hex()] if data else []
        elif e["type"] == "dir":
            node["subtree"] = _save_tree(saver, e["children"])
        elif e["type"] == "symlink":
            node["target"] = e["target"]
        nodes.append(node)
    bid, _ = saver.save(TREE, json.dumps({"nodes": nodes}).encode())
    return bid.hex()


def save_snapshot(repo: Repository, entries: list[dict[str, Any]], source: str | None = None) -> str:
    """Save a files snapshot (of `source`) whose root holds `entries` (file/directory/symlink);
    return its id."""
    with BlobSaver(repo) as saver:
        tree = _save_tree(saver, entries)
    snap = Snapshot(time=time.time(), kind="files", tree=tree, paths=["/hostile"], source=source)
    return repo.save_snapshot(snap)


def fingerprint(root: Path, skip: tuple[str, ...] = ()) -> dict[str, tuple[Any, ...]]:
    """Return {relative path: (mode, size, mtime, content or link target)} for root and everything
    below it, not following symlinks, leaving out the top-level names in `skip`."""
    out: dict[str, tuple[Any, ...]] = {}

    def add(path: Path, rel: str) -> None:
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            body: Any = os.readlink(path)
        elif stat.S_ISREG(st.st_mode):
            body = path.read_bytes()
        else:
            body = None
        out[rel] = (st.st_mode, st.st_size if body is not None else 0, st.st_mtime_ns, body)
        if stat.S_ISDIR(st.st_mode):
            for child in sorted(path.iterdir()):
                if rel == "." and child.name in skip:
                    continue
                add(child, child.name if rel == "." else f"{rel}/{child.name}")

    add(root, ".")
    return out
