"""Read-only use cases on snapshots: list, ls, diff, cat."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from recoverctl.actions.repository import open_repository
from recoverctl.config import Config
from recoverctl.repo import diff, ls, open_file
from recoverctl.repo.snapshot import iso


def list_snapshots(
    cfg: Config, password: str, *, kind: str | None = None, tags: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """Return every snapshot (oldest first) in the stable JSON shape."""
    repo = open_repository(cfg, password)
    try:
        return [s.to_public() for s in repo.find_snapshots(kind=kind, tags=tags)]
    finally:
        repo.close()


def _node_public(path: str, node: dict[str, Any]) -> dict[str, Any]:
    out = {
        "path": path,
        "type": node["type"],
        "mode": oct(node.get("mode", 0)),
        "uid": node.get("uid"),
        "gid": node.get("gid"),
        "user": node.get("user"),
        "group": node.get("group"),
        "size": node.get("size"),
        "mtime": iso(node.get("mtime_ns", 0) / 1e9),
    }
    if node.get("target") is not None:
        out["target"] = node["target"]
    if node.get("changed_during_read"):
        out["changed_during_read"] = True
    return out


def list_files(
    cfg: Config, password: str, ref: str, path: str = "/", recursive: bool = True
) -> dict[str, Any]:
    """Return the snapshot id and its nodes below `path`; raise NotFoundError."""
    repo = open_repository(cfg, password)
    try:
        snap = repo.resolve_snapshot(ref)
        nodes = [_node_public(p, n) for p, n in ls(repo, snap, path, recursive)]
        return {"snapshot": snap.id, "nodes": nodes}
    finally:
        repo.close()


def diff_snapshots(cfg: Config, password: str, a: str, b: str) -> dict[str, Any]:
    """Return the changes between two snapshots."""
    repo = open_repository(cfg, password)
    try:
        sa, sb = repo.resolve_snapshot(a), repo.resolve_snapshot(b)
        changes = diff(repo, sa, sb)
        counts: dict[str, int] = {}
        for c in changes:
            counts[c["change"]] = counts.get(c["change"], 0) + 1
        return {"a": sa.id, "b": sb.id, "changes": changes, "counts": counts}
    finally:
        repo.close()


def cat_file(cfg: Config, password: str, ref: str, path: str) -> Iterator[bytes]:
    """Yield the bytes of one file of a snapshot; raise NotFoundError or DecryptError (exit 13)."""
    repo = open_repository(cfg, password)
    try:
        snap = repo.resolve_snapshot(ref)
        yield from open_file(repo, snap, path)
    finally:
        repo.close()
