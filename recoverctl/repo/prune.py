"""Prune: delete packs no snapshot needs, repack partly used ones, rewrite the index.

Order matters for crash safety: new packs and the new index are written before old index files
and packs are deleted, so an interrupted prune leaves extra objects, never missing ones.
Objects still under S3 Object Lock retention are never deleted; they are reported instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from recoverctl.errors import VerificationError
from recoverctl.progress import Progress
from recoverctl.repo.index import BlobLocation
from recoverctl.repo.pack import PackBuilder, PackEntry, pack_key
from recoverctl.repo.page_patch import blob_ids
from recoverctl.repo.repository import Repository
from recoverctl.storage.base import ObjectInfo

IsLocked = Callable[[ObjectInfo], bool]


@dataclass
class PrunePlan:
    used_blobs: int = 0
    delete: list[str] = field(default_factory=list)
    repack: list[str] = field(default_factory=list)
    keep: int = 0
    bytes_total: int = 0
    bytes_unused: int = 0
    bytes_freed: int = 0
    locked: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "packs_delete": len(self.delete),
            "packs_repack": len(self.repack),
            "packs_keep": self.keep,
            "bytes_total": self.bytes_total,
            "bytes_unused": self.bytes_unused,
            "bytes_freed": self.bytes_freed,
            "locked_not_deleted": self.locked,
        }


def used_blobs(repo: Repository) -> set[bytes]:
    """Return every blob id any snapshot references; raise VerificationError when one is not indexed."""
    index = repo.load_index()
    used: set[bytes] = set()
    missing = 0
    for snap in repo.list_snapshots():
        stack = [snap.tree]
        while stack:
            tid = bytes.fromhex(stack.pop())
            if tid in used:
                continue
            used.add(tid)
            if tid not in index:
                missing += 1
                continue
            for node in repo.load_tree(tid)["nodes"]:
                if node.get("subtree"):
                    stack.append(node["subtree"])
                for h in blob_ids(node):
                    b = bytes.fromhex(h)
                    used.add(b)
                    if b not in index:
                        missing += 1
    if missing:
        raise VerificationError(
            f"{missing} blob(s) referenced by snapshots are not indexed in '{repo.url}'; refusing to prune",
            hint="run 'recoverctl repair index' and 'recoverctl verify' first",
        )
    return used


def plan(repo: Repository, max_unused: float, is_locked: IsLocked, *, dry_run: bool = False) -> PrunePlan:
    """Decide which packs to delete and which to repack so unused space ends ≤ max_unused % of the total.

    Packs no index lists (an interrupted backup) are planned for too; their index is written only
    when not `dry_run`: a dry run writes nothing to the repository.
    """
    repo.index_orphan_packs(write=not dry_run)
    used = used_blobs(repo)
    p = PrunePlan(used_blobs=len(used))
    stored = {o.key.rsplit("/", 1)[1]: o for o in repo.storage.list("data/")}
    by_pack = repo.index.by_pack()
    partial: list[tuple[float, str, int]] = []
    for pid, size in repo.index.packs.items():
        if pid not in stored:
            continue
        p.bytes_total += size
        used_bytes = sum(loc.length for bid, loc in by_pack.get(pid, []) if bid in used)
        unused = size - used_bytes
        if used_bytes == 0:
            p.delete.append(pid)
            p.bytes_unused += unused
        elif unused > 0:
            partial.append((unused / size, pid, unused))
            p.bytes_unused += unused
        else:
            p.keep += 1
    allowed = p.bytes_total * max_unused / 100
    remaining = p.bytes_unused - sum(stored[pid].size for pid in p.delete)
    for _ratio, pid, unused in sorted(partial, reverse=True):
        if remaining <= allowed:
            p.keep += 1
            continue
        p.repack.append(pid)
        remaining -= unused
    for pid in list(p.delete) + list(p.repack):
        if is_locked(stored[pid]):
            p.locked.append(pack_key(pid))
            if pid in p.delete:
                p.delete.remove(pid)
            else:
                p.repack.remove(pid)
                p.keep += 1
    return p


def execute(
    repo: Repository, p: PrunePlan, is_locked: IsLocked, progress: Progress | None = None
) -> PrunePlan:
    """Carry out a plan; return it with bytes freed and objects that Object Lock kept."""
    progress = progress or Progress()
    used = used_blobs(repo)
    index = repo.index
    by_pack = index.by_pack()
    new_packs: list[tuple[str, int, list[PackEntry]]] = []
    builder = PackBuilder(repo.cipher, repo.pack_size)

    def flush_builder() -> None:
        nonlocal builder
        if len(builder):
            pack = builder.finish()
            try:
                repo.storage.put_file(pack_key(pack.id), pack.body, pack.size)
            finally:
                pack.close()
            new_packs.append((pack.id, pack.size, pack.entries))
        builder = PackBuilder(repo.cipher, repo.pack_size)

    for n, pid in enumerate(p.repack, 1):
        data = repo.storage.get(pack_key(pid))
        for bid, loc in by_pack.get(pid, []):
            if bid not in used:
                continue
            sealed = memoryview(data)[loc.offset : loc.offset + loc.length]
            repo.open_blob(bid, loc.type, sealed, pid)  # never carry damaged data forward
            builder.add(loc.type, bid, bytes(sealed), loc.raw_length)
            if builder.full:
                flush_builder()
        progress.update({"packs_repacked": n, "packs_to_repack": len(p.repack)})
    flush_builder()

    gone = set(p.delete) | set(p.repack)
    keep_entries: dict[str, list[PackEntry]] = {}
    for bid, loc in index.blobs.items():
        if loc.pack in gone or bid not in used:
            continue
        keep_entries.setdefault(loc.pack, []).append(_entry(bid, loc))
    packs = [(pid, index.packs[pid], entries) for pid, entries in keep_entries.items()] + new_packs
    old_files = [o for o in repo.storage.list("index/")]
    written: list[str] = []
    for i in range(0, len(packs), 5000):
        written.append(repo.write_index(packs[i : i + 5000]))
    # An old index file we cannot delete (Object Lock) still lists its packs: keep those packs too.
    still_listed: set[str] = set()
    for o in old_files:
        if o.key in written:
            continue
        if is_locked(o):
            p.locked.append(o.key)
            still_listed.update(x["id"] for x in repo.read_index_file(o.key).get("packs", []))
        else:
            repo.storage.delete(o.key)
    stored = {o.key.rsplit("/", 1)[1]: o for o in repo.storage.list("data/")}
    for pid in sorted(gone):
        if pid in still_listed:
            p.locked.append(pack_key(pid) + " (listed by a locked index file)")
            continue
        if pid in stored:
            repo.storage.delete(pack_key(pid))
            p.bytes_freed += stored[pid].size
    p.bytes_freed -= sum(size for _, size, _ in new_packs)
    repo.load_index(reload=True)
    return p


def _entry(bid: bytes, loc: BlobLocation) -> PackEntry:
    return PackEntry(loc.type, bid, loc.offset, loc.length, loc.raw_length)
