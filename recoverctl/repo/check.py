"""Verify a repository: structure always, and with read-data every blob decrypted and re-hashed.

Every named object is checked against its name: key slots (format 2) and snapshot and index
files by their content hash, blobs by their keyed id, single objects (WAL) by the key in their
AAD (read with read-data), packs by their SHA-256 (read with read-data).

Damage is reported per pack, and mapped back to every snapshot and file it affects.
`rebuild_index` (for `repair index`) rewrites the index from the pack headers alone.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from recoverctl.errors import ObjectNotFound, RecoverctlError
from recoverctl.progress import Progress
from recoverctl.repo.crypto import DecryptError
from recoverctl.repo.index import BlobLocation, Index
from recoverctl.repo.pack import PackEntry
from recoverctl.repo.page_patch import blob_ids, node_patches, patch_misfit
from recoverctl.repo.repository import FORMAT_VERSION, RESERVED_PREFIXES, Repository
from recoverctl.repo.snapshot import Snapshot
from recoverctl.repo.tree import InvalidTreeError, Node


class FinishReads(Protocol):
    """Waits for the pack reads and records them, or with abandon=True cancels those not started."""

    def __call__(self, *, abandon: bool = False) -> None: ...


# verify --read-data reads each pack in ranges of this size (see Checker._read_pack).
VERIFY_WINDOW = 4 * 1024 * 1024


@dataclass
class CheckReport:
    errors: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    damaged_packs: set[str] = field(default_factory=set)
    damaged_blobs: set[bytes] = field(default_factory=set)
    missing_blobs: set[bytes] = field(default_factory=set)
    affected: list[dict[str, Any]] = field(default_factory=list)
    verified: dict[str, bool] = field(default_factory=dict)
    packs_total: int = 0
    snapshots: int = 0
    trees: int = 0
    blobs_read: int = 0

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "errors": self.errors,
            "notes": self.notes,
            "damaged_packs": sorted(self.damaged_packs),
            "affected": self.affected,
            "snapshots": self.snapshots,
            "trees": self.trees,
            "packs_total": self.packs_total,
            "packs_read": len(self.verified),
            "blobs_read": self.blobs_read,
        }


def select_subset(packs: Iterable[str], spec: str, ordered: list[str] | None = None) -> list[str]:
    """Given pack ids and 'P%' or 'n/t', return the packs to read.

    'n/t' is the n-th of t stable groups (by pack id); 'P%' takes that share of the packs, in
    `ordered` order when given (least recently verified first) so repeated runs rotate.
    """
    all_packs = sorted(packs)
    spec = spec.strip()
    if spec.endswith("%"):
        share = float(spec[:-1])
        if not 0 < share <= 100:
            raise ValueError(f"subset share must be in (0, 100]: {spec}")
        count = max(1, math.ceil(len(all_packs) * share / 100)) if all_packs else 0
        order = [p for p in (ordered or []) if p in set(all_packs)]
        order += [p for p in all_packs if p not in set(order)]
        return order[:count]
    if "/" in spec:
        n, t = (int(x) for x in spec.split("/", 1))
        if not 1 <= n <= t:
            raise ValueError(f"subset n/t needs 1 <= n <= t: {spec}")
        return [p for p in all_packs if int(p[:8], 16) % t == n - 1]
    raise ValueError(f"invalid subset {spec!r}: use P% or n/t")


class Checker:
    def __init__(self, repo: Repository, progress: Progress | None = None):
        self.repo = repo
        self.progress = progress or Progress()
        self.report = CheckReport()

    def _error(self, kind: str, message: str, **extra: Any) -> None:
        self.report.errors.append({"kind": kind, "message": message, **extra})
        self.progress.warn(message)

    def load_index(self) -> Index:
        """Load every index file, reporting unreadable ones instead of failing."""
        index = Index()
        keys = [o.key for o in self.repo.storage.list("index/")]
        for key, doc, err in self.repo.read_index_files(keys, tolerate_damage=True):
            if doc is None:
                self._error("index", f"index file '{key}' is damaged: {err}", object=key)
            else:
                index.merge_document(doc)
                index.files.add(key)
        self.repo.index = index
        self.repo._index_loaded = True
        return index

    def check_keys(self) -> None:
        """Report key files that are not usable slots, or (format 2) not named by their hash."""
        for row in self.repo.list_keys():
            if row["problem"]:
                self._error(
                    "key_slot",
                    f"key file 'keys/{row['id']}' is not a usable key slot: {row['problem']}",
                    object=f"keys/{row['id']}",
                )
        version = int(self.repo.config["version"])
        if version < FORMAT_VERSION:
            lacks = ["PostgreSQL incrementals store changed chunks whole, not their changed pages"]
            if version < 2:
                lacks.insert(0, "a key slot copied under another name is not detected")
            self.report.notes.append(
                f"the repository uses format version {version}: {'; '.join(lacks)}; "
                f"'recoverctl repair upgrade' moves it to version {FORMAT_VERSION}"
            )

    def check_objects(self) -> None:
        """Read every single object (WAL files and the like): each is sealed with its own key
        as AAD, so one copied or swapped under another name fails here as it would on fetch."""
        keys = [o.key for o in self.repo.storage.list("") if not o.key.startswith(RESERVED_PREFIXES)]

        def read(key: str) -> tuple[str, str]:
            try:
                self.repo.get_object(key)
            except (DecryptError, ObjectNotFound) as e:
                return key, str(e)
            return key, ""

        with ThreadPoolExecutor(self.repo.parallelism) as pool:
            for key, err in pool.map(read, keys):
                if err:
                    self._error("object", f"object '{key}' is damaged or misplaced: {err}", object=key)

    def check_packs(self, index: Index) -> dict[str, int]:
        stored = self.repo.list_packs()
        self.report.packs_total = len(stored)
        for pid, size in sorted(index.packs.items()):
            if pid not in stored:
                self._error("pack_missing", f"pack {pid} is in the index but missing from storage", pack=pid)
                self.report.damaged_packs.add(pid)
            elif stored[pid] != size:
                self._error(
                    "pack_size",
                    f"pack {pid} has {stored[pid]} bytes, the index says {size}",
                    pack=pid,
                )
                self.report.damaged_packs.add(pid)
        unindexed = [p for p in stored if p not in index.packs]
        if unindexed:
            self.report.notes.append(
                f"{len(unindexed)} pack(s) in storage are in no index (left by an interrupted backup or a "
                "lost index file): 'recoverctl repair index' indexes them, 'prune' removes unused ones"
            )
        return stored

    def check_snapshots(self, index: Index) -> list[Snapshot]:
        snaps: list[Snapshot] = []
        for sid in self.repo.snapshot_ids():
            try:
                snaps.append(self.repo.load_snapshot(sid))
            except (DecryptError, ValueError, KeyError) as e:
                self._error("snapshot", f"snapshot {sid[:8]} is unreadable: {e}", snapshot=sid)
        self.report.snapshots = len(snaps)
        seen: set[str] = set()
        blobs, fromhex = index.blobs, bytes.fromhex
        for snap in snaps:
            stack = [(snap.tree, "")]
            while stack:
                tid, directory = stack.pop()
                if tid in seen:
                    continue
                seen.add(tid)
                bid = bytes.fromhex(tid)
                if bid not in index:
                    self.report.missing_blobs.add(bid)
                    continue
                try:
                    tree = self.repo.load_tree(bid)
                except DecryptError:
                    self.report.damaged_blobs.add(bid)
                    continue
                except ObjectNotFound:
                    self.report.missing_blobs.add(bid)
                    continue
                except InvalidTreeError as e:
                    e.locate(snapshot=snap.short_id, directory=directory)
                    self._error("tree_invalid", e.message, snapshot=snap.id, tree=tid)
                    continue
                for node in tree["nodes"]:
                    if node.get("subtree"):
                        stack.append((node["subtree"], f"{directory}/{node['name']}"))
                    content = blob_ids(node)
                    if content and not all(map(blobs.__contains__, map(fromhex, content))):
                        self.report.missing_blobs.update(b for b in map(fromhex, content) if b not in blobs)
                    if node.get("patches"):
                        self._check_patches(index, node, snap, f"{directory}/{node['name']}")
        self.report.trees = len(seen)
        if self.report.missing_blobs:
            self._error(
                "blob_missing",
                f"{len(self.report.missing_blobs)} blob(s) referenced by snapshots are in no index "
                "(a lost index file or pack): run 'recoverctl repair index'",
            )
        return snaps

    def _check_patches(self, index: Index, node: Node, snap: Snapshot, path: str) -> None:
        """Report page patches whose blobs' lengths (from the index) do not fit their masks: a
        restore would refuse those chunks as damaged."""
        page_size = int(node["page_size"])
        content = node["content"]
        for patch in node_patches(node).values():
            base, pages = index.get(bytes.fromhex(content[patch.chunk])), index.get(bytes.fromhex(patch.blob))
            if base is None or pages is None:
                continue  # reported as missing blobs
            misfit = patch_misfit(patch, page_size, base.raw_length, pages.raw_length)
            if misfit is not None:
                self._error(
                    "patch_invalid",
                    f"snapshot {snap.short_id}: '{path}': {misfit}; restoring the file fails",
                    snapshot=snap.id,
                    path=path,
                )

    def read_packs(self, index: Index, packs: list[str], stored: dict[str, int]) -> FinishReads:
        """Start reading `packs` on a pool; return the function that waits and records the results
        (or, called with abandon=True, cancels the reads not started and returns at once).

        The reads run while the caller checks the snapshots' trees; only the recording touches the
        report, on the caller's thread, so errors keep their order.
        """
        by_pack = index.by_pack()

        def read(pid: str) -> tuple[str, list[bytes], str]:
            if pid not in stored:
                return pid, [b for b, _ in by_pack.get(pid, [])], "missing"
            return self._read_pack(pid, stored[pid], by_pack.get(pid, []))

        pool = ThreadPoolExecutor(self.repo.parallelism)
        try:
            results = pool.map(read, packs)
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise

        def finish(*, abandon: bool = False) -> None:
            if abandon:
                # The caller is failing (or Ctrl-C): waiting for every read, with its retries, would
                # delay that and could replace the caller's error with a read's.
                pool.shutdown(wait=False, cancel_futures=True)
                return
            with pool:
                self._record_reads(results, by_pack, len(packs), {p: stored.get(p, 0) for p in packs})

        return finish

    def _read_pack(
        self, pid: str, size: int, blobs: list[tuple[bytes, BlobLocation]]
    ) -> tuple[str, list[bytes], str]:
        """Read pack `pid` of `size` bytes front to back in windows, opening each indexed blob once
        its bytes are in and hashing the whole; return (pid, damaged blob ids, problem or "").

        A pack is never in memory whole: at most a window and the blob it cuts through (a
        whole-pack read on `parallelism` threads was most of verify's peak memory).
        """
        pending = sorted(blobs, key=lambda b: b[1].offset)
        digest = hashlib.sha256()
        bad: list[bytes] = []
        buf, buf_start, pos, i = bytearray(), 0, 0, 0
        while pos < size:
            data = self.repo.read_pack(pid, pos, min(VERIFY_WINDOW, size - pos))
            if not data:
                break
            digest.update(data)
            buf += data
            pos += len(data)
            del data
            while i < len(pending) and pending[i][1].offset + pending[i][1].length <= pos:
                bid, loc = pending[i]
                start = loc.offset - buf_start
                with memoryview(buf) as view, view[start : start + loc.length] as sealed:
                    try:
                        self.repo.open_blob(bid, loc.type, sealed, pid)
                    except DecryptError:
                        bad.append(bid)
                i += 1
            keep_from = pending[i][1].offset if i < len(pending) else pos
            del buf[: max(0, min(keep_from, pos) - buf_start)]
            buf_start = max(buf_start, min(keep_from, pos))
        bad.extend(bid for bid, _ in pending[i:])  # past the pack's end: the index names bytes it lacks
        if pos != size:
            return pid, bad, f"pack ends at {pos} of {size} bytes"
        return pid, bad, "" if digest.hexdigest() == pid else "content hash mismatch"

    def _record_reads(
        self,
        results: Iterator[tuple[str, list[bytes], str]],
        by_pack: dict[str, list[tuple[bytes, BlobLocation]]],
        total: int,
        sizes: dict[str, int],
    ) -> None:
        bytes_read, bytes_total = 0, sum(sizes.values())
        for done, (pid, bad, problem) in enumerate(results, 1):
            bytes_read += sizes.get(pid, 0)
            self.report.blobs_read += len(by_pack.get(pid, []))
            ok = not bad and not problem
            self.report.verified[pid] = ok
            if not ok:
                self.report.damaged_packs.add(pid)
                self.report.damaged_blobs.update(bad)
                what = f"{len(bad)} damaged blob(s)" if bad else problem
                self._error("pack_damaged", f"pack {pid} is damaged: {what}", pack=pid, blobs=len(bad))
            counts = {"packs_read": done, "packs_to_read": total}
            self.progress.update({**counts, "bytes_read": bytes_read, "bytes_total": bytes_total})

    def map_damage(self, snaps: list[Snapshot], index: Index) -> None:
        """Name every snapshot and file touched by damaged or missing blobs (or packs)."""
        bad = set(self.report.damaged_blobs) | set(self.report.missing_blobs)
        for pid in self.report.damaged_packs:
            if pid in self.report.verified:
                continue  # read: the precise damaged blobs are known
            bad.update(b for b, loc in index.blobs.items() if loc.pack == pid)
        if not bad:
            return
        for snap in snaps:
            paths: list[str] = []
            self._affected_paths(snap.tree, "", bad, paths)
            if paths:
                self.report.affected.append(
                    {"snapshot": snap.id, "time": snap.time, "paths": paths[:1000], "count": len(paths)}
                )

    def _affected_paths(self, tid: str, prefix: str, bad: set[bytes], paths: list[str]) -> None:
        bid = bytes.fromhex(tid)
        if bid in bad:
            paths.append(prefix + "/ (directory listing)")
            return
        try:
            tree = self.repo.load_tree(bid)
        except RecoverctlError:
            paths.append(prefix + "/ (directory listing)")
            return
        for node in tree["nodes"]:
            path = f"{prefix}/{node['name']}"
            if node.get("subtree"):
                self._affected_paths(node["subtree"], path, bad, paths)
            elif any(bytes.fromhex(h) in bad for h in blob_ids(node)):
                paths.append(path)


def check(
    repo: Repository,
    *,
    read_packs: Callable[[list[str]], list[str]] | None = None,
    read_objects: bool = False,
    progress: Progress | None = None,
) -> CheckReport:
    """Check structure; with `read_packs` (given all pack ids, return those to read) read and verify
    data; with `read_objects` read every single object (WAL files) too.

    Return the report (never raises for damage; the caller maps `ok` to an exit code).
    """
    c = Checker(repo, progress)
    c.check_keys()
    index = c.load_index()
    stored = c.check_packs(index)
    reading = c.read_packs(index, read_packs(sorted(index.packs)), stored) if read_packs else None
    try:
        snaps = c.check_snapshots(index)
    except BaseException:
        if reading is not None:
            reading(abandon=True)
        raise
    if reading is not None:
        reading()
    if read_objects:
        c.check_objects()
    c.map_damage(snaps, index)
    return c.report


@dataclass
class IndexRebuild:
    """What `rebuild_index` found in the pack headers and wrote in place of the old index."""

    packs: int
    blobs: int
    index_files_written: int
    index_files_removed: int
    unreadable_packs: list[str]


def rebuild_index(repo: Repository, progress: Progress | None = None) -> IndexRebuild:
    """Rewrite the index from every pack header; delete the old index files. Return counts.

    Packs whose header is unreadable are reported and left alone (prune removes them).
    """
    progress = progress or Progress()
    stored = repo.list_packs()
    old_files = [o.key for o in repo.storage.list("index/")]
    found: list[tuple[str, int, list[PackEntry]]] = []
    damaged: list[str] = []

    def header(item: tuple[str, int]) -> tuple[str, int, list[PackEntry] | None]:
        try:
            return item[0], item[1], repo.read_pack_header(item[0], item[1])
        except (DecryptError, ObjectNotFound):
            return item[0], item[1], None

    with ThreadPoolExecutor(repo.parallelism) as pool:
        for pid, size, entries in pool.map(header, sorted(stored.items())):
            if entries is None:
                damaged.append(pid)
                progress.warn(f"pack {pid}: header unreadable; not indexed")
            else:
                found.append((pid, size, entries))
    new_files: list[str] = []
    for i in range(0, len(found), 5000):
        new_files.append(repo.write_index(found[i : i + 5000]))
    for key in old_files:
        if key not in new_files:
            repo.storage.delete(key)
    repo.load_index(reload=True)
    blobs = sum(len(e) for _, _, e in found)
    return IndexRebuild(
        packs=len(found),
        blobs=blobs,
        index_files_written=len(new_files),
        index_files_removed=len([k for k in old_files if k not in new_files]),
        unreadable_packs=damaged,
    )
