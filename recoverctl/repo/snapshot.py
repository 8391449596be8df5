"""Snapshot documents: what was backed up, when, from where, and the root tree that holds it."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any


def iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass
class Snapshot:
    """One backup. `tree` is the hex id of the root tree blob; `partial` marks files read while changing."""

    time: float
    kind: str
    tree: str
    paths: list[str]
    source: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    parent: str | None = None
    hostname: str | None = None
    username: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    partial: bool = False
    id: str = ""

    @property
    def short_id(self) -> str:
        return self.id[:8]

    def to_doc(self) -> dict[str, Any]:
        return {
            "version": 1,
            "time": self.time,
            "kind": self.kind,
            "tree": self.tree,
            "paths": self.paths,
            "source": self.source,
            "tags": self.tags,
            "parent": self.parent,
            "hostname": self.hostname,
            "username": self.username,
            "metadata": self.metadata,
            "summary": self.summary,
            "partial": self.partial,
        }

    @classmethod
    def from_doc(cls, sid: str, doc: dict[str, Any]) -> Snapshot:
        return cls(
            id=sid,
            time=float(doc["time"]),
            kind=doc["kind"],
            tree=doc["tree"],
            paths=list(doc.get("paths") or []),
            source=doc.get("source"),
            tags=dict(doc.get("tags") or {}),
            parent=doc.get("parent"),
            hostname=doc.get("hostname"),
            username=doc.get("username"),
            metadata=dict(doc.get("metadata") or {}),
            summary=dict(doc.get("summary") or {}),
            partial=bool(doc.get("partial")),
        )

    def to_public(self) -> dict[str, Any]:
        """Return the stable `snapshots --json` shape."""
        return {
            "id": self.id,
            "short_id": self.short_id,
            "time": iso(self.time),
            "timestamp": self.time,
            "kind": self.kind,
            "source": self.source,
            "paths": self.paths,
            "tags": self.tags,
            "parent": self.parent,
            "hostname": self.hostname,
            "partial": self.partial,
            "summary": self.summary,
            "metadata": self.metadata,
        }
