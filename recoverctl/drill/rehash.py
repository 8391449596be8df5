"""Re-hash a restored tree against its snapshot: the drill's proof that the restore is byte-exact."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recoverctl.repo import Repository
from recoverctl.repo.content import first_difference
from recoverctl.repo.crypto import DecryptError
from recoverctl.repo.reader import walk
from recoverctl.repo.snapshot import Snapshot
from recoverctl.repo.tree import Node
from recoverctl.units import human_size

# Mismatches listed in the check output; the count is always complete.
MISMATCH_LIMIT = 50


@dataclass
class RehashResult:
    files: int = 0
    bytes: int = 0
    mismatches: list[dict[str, str]] = field(default_factory=list)
    mismatch_count: int = 0
    duration_s: float = 0.0

    def add_mismatch(self, path: str, why: str) -> None:
        self.mismatch_count += 1
        if len(self.mismatches) < MISMATCH_LIMIT:
            self.mismatches.append({"path": path, "why": why})


def rehash_tree(repo: Repository, snap: Snapshot, root: Path) -> RehashResult:
    """Given a snapshot restored under `root`, re-hash every regular file on disk chunk by chunk
    against the blob ids in the snapshot; return the counts and every mismatching path."""
    started = time.monotonic()
    out = RehashResult()
    for path, node in walk(repo, snap.tree):
        if node["type"] != "file":
            continue
        on_disk = root / path.lstrip("/")
        out.files += 1
        try:
            read_back, why = _rehash_file(repo, node, on_disk)
        except FileNotFoundError:
            why, read_back = "missing after the restore", 0
        except OSError as e:
            why, read_back = f"unreadable: {e.strerror}", 0
        except DecryptError as e:
            why, read_back = f"its stored chunks cannot be read to compare: {e.message}", 0
        out.bytes += read_back
        if why is not None:
            out.add_mismatch(path, why)
    out.duration_s = time.monotonic() - started
    return out


def _rehash_file(repo: Repository, node: Node, on_disk: Path) -> tuple[int, str | None]:
    """Return the bytes of `on_disk` compared with its node and why it differs (None: it does not)."""
    fd = os.open(on_disk, os.O_RDONLY | os.O_CLOEXEC)
    try:
        read_back = 0

        def read(offset: int, n: int) -> bytes:
            nonlocal read_back
            data = os.pread(fd, n, offset)
            read_back += len(data)
            return data

        diff = first_difference(repo, node, read)
        if diff is not None:
            return read_back, diff.why
        if os.fstat(fd).st_size > read_back:
            return read_back, f"longer on disk than the {node.get('size', '?')} bytes stored"
        return read_back, None
    finally:
        os.close(fd)


def rehash_check(repo: Repository, snap: Snapshot, root: Path) -> dict[str, Any]:
    """Re-hash the tree restored at `root` against `snap`; return the drill check result (name,
    kind, ok, output, expected, actual, duration_s, details)."""
    started = time.monotonic()
    r = rehash_tree(repo, snap, root)
    if r.mismatch_count:
        listed = "; ".join(f"{m['path']}: {m['why']}" for m in r.mismatches)
        more = (
            f" (and {r.mismatch_count - len(r.mismatches)} more)"
            if r.mismatch_count > len(r.mismatches)
            else ""
        )
        output = f"{r.mismatch_count} of {r.files} file(s) differ from the snapshot: {listed}{more}"
    else:
        output = f"{r.files} files, {human_size(r.bytes)} re-hashed: all match the snapshot"
    return {
        "name": "rehash",
        "kind": "rehash",
        "ok": r.mismatch_count == 0,
        "output": output,
        "expected": "every file matches the snapshot",
        "actual": f"{r.mismatch_count} mismatching",
        "duration_s": round(time.monotonic() - started, 3),
        "details": {
            "files_checked": r.files,
            "bytes_checked": r.bytes,
            "mismatch_count": r.mismatch_count,
            "mismatches": r.mismatches,
        },
    }
