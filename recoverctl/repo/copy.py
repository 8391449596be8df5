"""Copying snapshots and WAL from one repository into another (restic `copy`, pgBackRest's repo2).

Every blob id is a keyed hash (BLAKE3 keyed with each repository's own MAC key, so ids leak
nothing about content): the same plaintext has a different id in each repository. A copy
therefore reads each blob from the source (decrypting it verifies it against its source id),
derives its id in the target from the same plaintext, and lets the target's BlobSaver skip what
the target's index already holds; trees are rewritten with the target's ids, which changes their
ids (and the snapshot's) too.

No state lives outside the two repositories. Each copied snapshot records where it came from
(`metadata.copied_from`: source repository id and snapshot id), so what is copied is derived
from the target's snapshots. Walking the trees of each such pair side by side maps source ids
to target ids for everything copied before; a mapping is used only while the target's index
(the truth) still lists the id, so a rerun reads and sends only what is missing. Packs a killed
copy uploaded without writing their index are indexed from their headers before starting.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from recoverctl.errors import NotFoundError, UsageError, VerificationError
from recoverctl.repo.crypto import DecryptError
from recoverctl.repo.pack import DATA, TREE
from recoverctl.repo.page_patch import PATCH_FORMAT_VERSION, blob_ids
from recoverctl.repo.repository import Repository
from recoverctl.repo.saver import BlobSaver, SaveStats
from recoverctl.repo.snapshot import Snapshot
from recoverctl.repo.tree import InvalidTreeError
from recoverctl.storage.base import ObjectInfo

COPIED_FROM = "copied_from"
WAL_PREFIX = "wal/"


@dataclass
class CopyStats:
    """What one copy run moved: snapshots, blobs (read, sent, already there) and WAL objects."""

    snapshots_copied: int = 0
    snapshots_present: int = 0
    blobs_read: int = 0
    blobs_sent: int = 0
    blobs_deduplicated: int = 0
    bytes_read: int = 0
    packs_uploaded: int = 0
    bytes_uploaded: int = 0
    wal_copied: int = 0
    wal_present: int = 0
    wal_bytes_uploaded: int = 0
    copied: list[dict[str, str]] = field(default_factory=list)


@dataclass
class CopyPlan:
    """The snapshots (oldest first) and WAL objects the target lacks."""

    snapshots: list[Snapshot]
    snapshots_present: int
    wal: list[ObjectInfo]
    wal_present: int


@dataclass
class CopyLag:
    """How far a copy is behind its source: snapshots missing, and the source time of the newest
    WAL object minus that of the newest one the copy holds (per WAL source, the largest)."""

    snapshots_missing: int
    wal_missing: int
    wal_lag_s: float | None
    # The source's time of the newest WAL object the copy holds (None: it holds none).
    wal_newest_at: float | None = None


def origins(src: Repository, dst: Repository) -> dict[str, Snapshot]:
    """Return source snapshot id → the target snapshot copied from it (copies from other
    repositories are ignored)."""
    out: dict[str, Snapshot] = {}
    for s in dst.list_snapshots():
        origin = s.metadata.get(COPIED_FROM)
        if isinstance(origin, dict) and origin.get("repository") == src.id and origin.get("snapshot"):
            out[str(origin["snapshot"])] = s
    return out


def _wal_objects(repo: Repository, source: str | None) -> list[ObjectInfo]:
    prefix = WAL_PREFIX if source is None else f"{WAL_PREFIX}{source}/"
    return [o for o in repo.storage.list(prefix) if not o.key.endswith("/")]


def plan_copy(src: Repository, dst: Repository, *, source: str | None = None) -> CopyPlan:
    """Return what `dst` lacks of `src`: snapshots (of `source`, if given) and WAL objects."""
    done = origins(src, dst)
    snaps = [s for s in src.list_snapshots() if source is None or s.source == source]
    have = {o.key for o in _wal_objects(dst, source)}
    wal = _wal_objects(src, source)
    return CopyPlan(
        snapshots=[s for s in snaps if s.id not in done],
        snapshots_present=sum(1 for s in snaps if s.id in done),
        wal=sorted((o for o in wal if o.key not in have), key=lambda o: o.key),
        wal_present=sum(1 for o in wal if o.key in have),
    )


def copy_lag(src: Repository, dst: Repository, *, source: str | None = None) -> CopyLag:
    """Return how far `dst` is behind `src` (see CopyLag); 0 s when every WAL object is there."""
    plan = plan_copy(src, dst, source=source)
    have = {o.key for o in _wal_objects(dst, source)}
    by_source: dict[str, list[ObjectInfo]] = {}
    for o in _wal_objects(src, source):
        by_source.setdefault(o.key.split("/")[1], []).append(o)
    lag: float | None = 0.0
    held = [(o.mtime or 0.0) for objects in by_source.values() for o in objects if o.key in have]
    for objects in by_source.values():
        newest = max((o.mtime or 0.0) for o in objects)
        copied = [(o.mtime or 0.0) for o in objects if o.key in have]
        if not copied:
            lag = None  # nothing of this source's WAL is in the copy: no finite lag
            break
        lag = max(lag or 0.0, newest - max(copied))
    return CopyLag(
        snapshots_missing=len(plan.snapshots),
        wal_missing=len(plan.wal),
        wal_lag_s=lag,
        wal_newest_at=max(held) if held else None,
    )


class RepositoryCopy:
    """One copy run from `src` into `dst`; the caller holds both repositories' locks."""

    def __init__(
        self, src: Repository, dst: Repository, *, progress: Callable[[dict[str, Any]], None] | None = None
    ):
        self.src, self.dst = src, dst
        self.stats = CopyStats()
        self.blob_map: dict[bytes, bytes] = {}
        self.tree_map: dict[bytes, bytes] = {}
        self.snap_map: dict[str, str] = {}
        self.progress = progress or (lambda _counters: None)
        self._lock = threading.Lock()
        self._step = ""
        self._bytes_done = 0
        self._bytes_total = 0

    def run(self, plan: CopyPlan) -> CopyStats:
        """Copy what `plan` lists; return the stats. Raise VerificationError when what arrived
        does not read back, DecryptError/NotFoundError for a damaged source."""
        self.dst.index_orphan_packs()
        self.dst.load_index()
        self.stats.snapshots_present = plan.snapshots_present
        if plan.snapshots:
            self._map_copied()
        self._bytes_total = self._bytes_to_copy(plan)
        if plan.snapshots:
            saves = SaveStats()
            with BlobSaver(self.dst, stats=saves) as saver:
                for snap in plan.snapshots:
                    what = f"{snap.kind} {snap.source}" if snap.source else snap.kind
                    self._report(f"snapshot {snap.short_id} ({what})")
                    self._copy_snapshot(snap, saver)
            self.stats.packs_uploaded, self.stats.bytes_uploaded = saves.packs_uploaded, saves.bytes_uploaded
        self.stats.wal_present = plan.wal_present
        if plan.wal:
            self._report(f"{len(plan.wal)} WAL objects")
            with ThreadPoolExecutor(self.dst.parallelism) as pool:
                stored_sizes = pool.map(self._copy_wal, (o.key for o in plan.wal))
                for obj, stored in zip(plan.wal, stored_sizes, strict=True):
                    self.stats.wal_copied += 1
                    self.stats.wal_bytes_uploaded += stored
                    self._advance(obj.size)
        return self.stats

    # --- progress ----------------------------------------------------------------------------------

    def _bytes_to_copy(self, plan: CopyPlan) -> int:
        """Return the plaintext bytes of the data blobs the target lacks plus the stored bytes of
        the WAL objects to copy: the total a progress bar counts towards. It walks the new trees
        once more than the copy does; trees are small beside the data they name."""
        index = self.src.load_index()
        wanted: set[bytes] = set()
        for snap in plan.snapshots:
            wanted.update(self._walk_new(bytes.fromhex(snap.tree))[2])
        blobs = sum(loc.raw_length for loc in map(index.get, wanted) if loc is not None)
        return blobs + sum(o.size for o in plan.wal)

    def _report(self, step: str) -> None:
        self._step = step
        self._advance(0)

    def _advance(self, n: int) -> None:
        with self._lock:
            self._bytes_done += n
            counters = {"now": self._step, "bytes_done": self._bytes_done, "bytes_total": self._bytes_total}
        self.progress(counters)

    # --- what the target already holds -------------------------------------------------------------

    def _map_copied(self) -> None:
        """Map source ids to target ids by walking every (source, copy) snapshot pair's trees."""
        for sid, copy in origins(self.src, self.dst).items():
            self.snap_map[sid] = copy.id
            try:
                snap = self.src.load_snapshot(sid)
            except (DecryptError, NotFoundError):
                continue  # forgotten on the source since: nothing to map
            self._pair_trees(bytes.fromhex(snap.tree), bytes.fromhex(copy.tree))

    def _pair_trees(self, src_root: bytes, dst_root: bytes) -> None:
        stack = [(src_root, dst_root)]
        while stack:
            s, d = stack.pop()
            if s in self.tree_map:
                continue
            try:
                s_tree, d_tree = self.src.load_tree(s), self.dst.load_tree(d)
            except (DecryptError, NotFoundError, InvalidTreeError):
                continue  # unreadable on either side: left unmapped, so copied again
            self.tree_map[s] = d
            d_nodes = {n["name"]: n for n in d_tree["nodes"]}
            for n in s_tree["nodes"]:
                m = d_nodes.get(n["name"])
                if m is None:
                    continue
                if n.get("subtree") and m.get("subtree"):
                    stack.append((bytes.fromhex(n["subtree"]), bytes.fromhex(m["subtree"])))
                s_content, d_content = blob_ids(n), blob_ids(m)
                if len(s_content) == len(d_content):
                    for a, b in zip(s_content, d_content, strict=True):
                        self.blob_map[bytes.fromhex(a)] = bytes.fromhex(b)

    def _present(self, mapping: dict[bytes, bytes], src_id: bytes) -> bool:
        target = mapping.get(src_id)
        return target is not None and target in self.dst.index

    # --- one snapshot --------------------------------------------------------------------------------

    def _copy_snapshot(self, snap: Snapshot, saver: BlobSaver) -> None:
        root = bytes.fromhex(snap.tree)
        trees, order, wanted = self._walk_new(root)
        self._copy_blobs(wanted, saver)
        for tid in order:
            self.tree_map[tid] = self._rewrite_tree(trees[tid], saver)
        saver.flush()
        self._verify_trees([self.tree_map[t] for t in order])
        copy = Snapshot(
            time=snap.time,
            kind=snap.kind,
            tree=self.tree_map[root].hex(),
            paths=list(snap.paths),
            source=snap.source,
            tags=dict(snap.tags),
            parent=self.snap_map.get(snap.parent) if snap.parent else None,
            hostname=snap.hostname,
            username=snap.username,
            metadata={**snap.metadata, COPIED_FROM: {"repository": self.src.id, "snapshot": snap.id}},
            summary=dict(snap.summary),
            partial=snap.partial,
        )
        sid = self.dst.save_snapshot(copy)
        self.dst.load_snapshot(sid)  # authenticates under the target's key and its own name
        self.snap_map[snap.id] = sid
        self.stats.snapshots_copied += 1
        self.stats.copied.append({"snapshot": snap.id, "copy": sid})

    def _walk_new(self, root: bytes) -> tuple[dict[bytes, dict[str, Any]], list[bytes], list[bytes]]:
        """Return the source trees under `root` the target lacks, their ids children-first (the
        order to rewrite them in), and the data blob ids the target lacks."""
        trees: dict[bytes, dict[str, Any]] = {}
        order: list[bytes] = []
        wanted: dict[bytes, None] = {}
        stack: list[tuple[bytes, bool]] = [(root, False)]
        while stack:
            tid, expanded = stack.pop()
            if expanded:
                order.append(tid)
                continue
            if tid in trees or self._present(self.tree_map, tid):
                continue
            tree = self.src.load_tree(tid)
            trees[tid] = tree
            stack.append((tid, True))
            for n in tree["nodes"]:
                if n.get("subtree"):
                    stack.append((bytes.fromhex(n["subtree"]), False))
                if n.get("patches") and int(self.dst.config["version"]) < PATCH_FORMAT_VERSION:
                    raise UsageError(
                        f"'{n['name']}' stores chunks as page patches, which the repository at "
                        f"'{self.dst.url}' (format version {self.dst.config['version']}) cannot hold; "
                        "nothing was copied of this snapshot",
                        hint="run 'recoverctl repair upgrade --repo NAME' on the target first (older "
                        "recoverctl versions then refuse it), then copy again",
                    )
                for h in blob_ids(n):
                    bid = bytes.fromhex(h)
                    if not self._present(self.blob_map, bid):
                        wanted[bid] = None
        return trees, order, list(wanted)

    def _copy_blobs(self, wanted: Iterable[bytes], saver: BlobSaver) -> None:
        """Read each blob from the source (in pack order, in parallel) and save it in the target."""
        index = self.src.load_index()

        def where(bid: bytes) -> tuple[str, int]:
            loc = index.get(bid)
            return (loc.pack, loc.offset) if loc is not None else ("", 0)

        def one(bid: bytes) -> None:
            plain = self.src.read_blob(bid)  # raises unless it decrypts and matches its id
            new_id, new = saver.save(DATA, plain)
            with self._lock:
                self.blob_map[bid] = new_id
                self.stats.blobs_read += 1
                self.stats.bytes_read += len(plain)
                if new:
                    self.stats.blobs_sent += 1
                else:
                    self.stats.blobs_deduplicated += 1
            self._advance(len(plain))

        with ThreadPoolExecutor(self.src.parallelism) as pool:
            for _ in pool.map(one, sorted(wanted, key=where)):
                pass

    def _rewrite_tree(self, tree: dict[str, Any], saver: BlobSaver) -> bytes:
        """Return the target id of `tree` with every blob and subtree id replaced by the target's."""
        nodes = []
        for n in tree["nodes"]:
            m = dict(n)
            if n.get("content") is not None:
                m["content"] = [self.blob_map[bytes.fromhex(h)].hex() for h in n["content"]]
            if n.get("patches"):
                blob = self.blob_map
                m["patches"] = [[c, mask, blob[bytes.fromhex(h)].hex()] for c, mask, h in n["patches"]]
            if n.get("subtree"):
                m["subtree"] = self.tree_map[bytes.fromhex(n["subtree"])].hex()
            nodes.append(m)
        # The archiver's encoding (repo/archive_pipeline.py), so equal trees dedup across runs.
        data = json.dumps({"nodes": nodes}, separators=(",", ":"), sort_keys=True).encode()
        new_id, new = saver.save(TREE, data)
        if new:
            self.stats.blobs_sent += 1
        else:
            self.stats.blobs_deduplicated += 1
        return new_id

    def _verify_trees(self, tree_ids: list[bytes]) -> None:
        """Read back each tree written (decrypted and checked against its id in the target) and
        check that every blob it names is in the target's index."""
        for tid in tree_ids:
            for n in self.dst.load_tree(tid)["nodes"]:
                missing = [h for h in blob_ids(n) if bytes.fromhex(h) not in self.dst.index]
                if missing or (n.get("subtree") and bytes.fromhex(n["subtree"]) not in self.dst.index):
                    raise VerificationError(
                        f"copy to '{self.dst.url}': '{n['name']}' names blobs the target does not hold",
                        hint="run 'recoverctl verify --repo NAME' on the copy, then copy again",
                    )

    # --- WAL -----------------------------------------------------------------------------------------

    def _copy_wal(self, key: str) -> int:
        """Copy one WAL object, re-encrypted for the target; return the bytes stored. Raise
        VerificationError when it does not read back identical."""
        plain = self.src.get_object(key)
        stored = self.dst.put_object(key, plain)
        if hashlib.sha256(self.dst.get_object(key)).digest() != hashlib.sha256(plain).digest():
            raise VerificationError(f"WAL object '{key}' reads back different from '{self.dst.url}'")
        return stored
