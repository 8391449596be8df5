"""Re-hash a restored tree against its snapshot: the drill's proof that the restore is byte-exact."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recoverctl.repo import Repository
from recoverctl.repo.reader import walk
from recoverctl.repo.snapshot import Snapshot
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
    index = repo.load_index()
    out = RehashResult()
    for path, node in walk(repo, snap.tree):
        if node["type"] != "file":
            continue
        on_disk = root / path.lstrip("/")
        out.files += 1
        try:
            with open(on_disk, "rb") as f:
                for n, hex_id in enumerate(node.get("content", [])):
                    loc = index.get(bytes.fromhex(hex_id))
                    if loc is None:
                        out.add_mismatch(path, f"chunk {n} ({hex_id[:16]}) is not in the index")
                        break
                    data = f.read(loc.raw_length)
                    out.bytes += len(data)
                    if len(data) != loc.raw_length or repo.cipher.blob_id(data) != bytes.fromhex(hex_id):
                        out.add_mismatch(path, f"chunk {n} at byte {_chunk_offset(node, n, index)} differs")
                        break
                else:
                    if f.read(1):
                        out.add_mismatch(
                            path, f"longer on disk than the {node.get('size', '?')} bytes stored"
                        )
        except FileNotFoundError:
            out.add_mismatch(path, "missing after the restore")
        except OSError as e:
            out.add_mismatch(path, f"unreadable: {e.strerror}")
    out.duration_s = time.monotonic() - started
    return out


def _chunk_offset(node: dict[str, Any], n: int, index: Any) -> int:
    """Return the byte offset of chunk `n` of a file node (for naming where a mismatch starts)."""
    total = 0
    for hex_id in node.get("content", [])[:n]:
        loc = index.get(bytes.fromhex(hex_id))
        total += loc.raw_length if loc is not None else 0
    return total


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
