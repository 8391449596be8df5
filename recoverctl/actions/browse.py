"""Read-only use cases on snapshots: list, ls, diff, cat."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from recoverctl.config import Config
from recoverctl.repo import diff, ls, open_file
from recoverctl.repo.configured import open_repository
from recoverctl.repo.snapshot import Snapshot, iso


@dataclass
class SnapshotListing:
    """Snapshots oldest first; their JSON is the stable `snapshots --json` shape."""

    snapshots: list[Snapshot]

    def to_json(self) -> list[dict[str, Any]]:
        return [s.to_public() for s in self.snapshots]


@dataclass
class FileNode:
    """One entry of a snapshot's tree as `ls` shows it; `mode` is octal text, `mtime` ISO 8601."""

    path: str
    type: str
    mode: str
    uid: int | None
    gid: int | None
    user: str | None
    group: str | None
    size: int | None
    mtime: str
    target: str | None = None
    changed_during_read: bool = False

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "path": self.path,
            "type": self.type,
            "mode": self.mode,
            "uid": self.uid,
            "gid": self.gid,
            "user": self.user,
            "group": self.group,
            "size": self.size,
            "mtime": self.mtime,
        }
        if self.target is not None:
            out["target"] = self.target
        if self.changed_during_read:
            out["changed_during_read"] = True
        return out


@dataclass
class FileListing:
    """The snapshot `ls` read and its nodes below the path asked for."""

    snapshot: str
    nodes: list[FileNode]

    def to_json(self) -> dict[str, Any]:
        return {"snapshot": self.snapshot, "nodes": [n.to_json() for n in self.nodes]}


@dataclass
class SnapshotDiff:
    """The changes from snapshot `a` to `b` ({path, change, ...} each) and their count per change."""

    a: str
    b: str
    changes: list[dict[str, Any]]
    counts: dict[str, int]


def list_snapshots(
    cfg: Config, password: str, *, kind: str | None = None, tags: dict[str, str] | None = None
) -> SnapshotListing:
    """Return every snapshot (oldest first), filtered by kind and tags."""
    with open_repository(cfg, password) as repo:
        return SnapshotListing(repo.find_snapshots(kind=kind, tags=tags))


def _node(path: str, node: dict[str, Any]) -> FileNode:
    return FileNode(
        path=path,
        type=node["type"],
        mode=oct(node.get("mode", 0)),
        uid=node.get("uid"),
        gid=node.get("gid"),
        user=node.get("user"),
        group=node.get("group"),
        size=node.get("size"),
        mtime=iso(node.get("mtime_ns", 0) / 1e9),
        target=node.get("target"),
        changed_during_read=bool(node.get("changed_during_read")),
    )


def list_files(cfg: Config, password: str, ref: str, path: str = "/", recursive: bool = True) -> FileListing:
    """Return the snapshot id and its nodes below `path`; raise NotFoundError."""
    with open_repository(cfg, password) as repo:
        snap = repo.resolve_snapshot(ref)
        return FileListing(snap.id, [_node(p, n) for p, n in ls(repo, snap, path, recursive)])


def diff_snapshots(cfg: Config, password: str, a: str, b: str) -> SnapshotDiff:
    """Return the changes between two snapshots."""
    with open_repository(cfg, password) as repo:
        sa, sb = repo.resolve_snapshot(a), repo.resolve_snapshot(b)
        changes = diff(repo, sa, sb)
    counts: dict[str, int] = {}
    for c in changes:
        counts[c["change"]] = counts.get(c["change"], 0) + 1
    return SnapshotDiff(sa.id, sb.id, changes, counts)


def cat_file(cfg: Config, password: str, ref: str, path: str) -> Iterator[bytes]:
    """Yield the bytes of one file of a snapshot; raise NotFoundError or DecryptError (exit 13)."""
    with open_repository(cfg, password) as repo:
        snap = repo.resolve_snapshot(ref)
        yield from open_file(repo, snap, path)
