"""Restore a snapshot into a directory, confined to it (see repo/confined.py).

Restores run files in parallel, write each file to a temporary name in its directory and rename
it into place only after every blob was decrypted and authenticated, so a damaged blob never
leaves wrong bytes under the real name. Files of one blob (most small files) are grouped by pack
and restored in pack order, one ranged read per stretch of neighbouring blobs, instead of one
read per file; such a file is created only once its blob is authenticated. Directory metadata
is applied last, deepest first.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from recoverctl.errors import ObjectNotFound, RecoverctlError, UsageError
from recoverctl.progress import Progress
from recoverctl.repo.confined import (
    DIR_FLAGS,
    NEW_FILE,
    Dir,
    DirTable,
    apply_meta,
    apply_meta_at,
    entries,
    remove,
    write_all,
    write_replacing,
)
from recoverctl.repo.content import holds, iter_file, pack_stretches, read_scattered, tree_nodes
from recoverctl.repo.crypto import DecryptError
from recoverctl.repo.index import BlobLocation
from recoverctl.repo.repository import Repository
from recoverctl.repo.restore_target import link_leaves, open_unchanged, selected, write_at
from recoverctl.repo.tree import InvalidTreeError, Node


@dataclass
class RestoreResult:
    files: int = 0
    dirs: int = 0
    bytes: int = 0
    skipped: int = 0
    removed: int = 0
    errors: list[dict[str, str]] = field(default_factory=list)
    duration_s: float = 0.0
    dry_run: bool = False
    would_remove: list[str] = field(default_factory=list)
    would_overwrite: list[str] = field(default_factory=list)
    links_skipped: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "files": self.files,
            "dirs": self.dirs,
            "bytes": self.bytes,
            "files_skipped_unchanged": self.skipped,
            "removed": self.removed,
            "errors": self.errors,
            "duration_s": round(self.duration_s, 3),
        }
        if self.dry_run:
            out.update(dry_run=True, would_remove=self.would_remove, would_overwrite=self.would_overwrite)
        if self.links_skipped:
            out["links_skipped"] = self.links_skipped
        return out


# A single-blob file waiting for its pack's batch: location, blob id, node, directory, name, path.
_Queued = tuple[BlobLocation, bytes, Node, Dir, str, str]


class _Restorer:
    """One restore into a target directory, confined to it (see repo/confined.py).

    Entries already at the snapshot's names are replaced (the caller allowed it: `force` or
    `delta`); with `delta`, entries the snapshot lacks are removed and matching files kept.
    `mounts` ({'/snapshot/dir': '/abs/dir'}) sends a directory's content to a directory the caller
    chose and left linked into the target (PostgreSQL's pg_tblspc/<oid>). With `inner_links_only`,
    symlinks that could point outside (`link_leaves`) are not created, and whatever is at their
    name is left alone; they are listed in the result's `links_skipped`.
    """

    def __init__(
        self,
        repo: Repository,
        target: str,
        include: list[str] | None,
        delta: bool,
        verify: bool,
        progress: Progress,
        *,
        force: bool = False,
        dry_run: bool = False,
        mounts: dict[str, str] | None = None,
        inner_links_only: bool = False,
    ):
        self.repo = repo
        self.inner_links_only = inner_links_only
        self.target = target
        self.include = ["/" + i.strip("/") for i in include] if include else None
        self.delta = delta
        self.force = force
        self.dry_run = dry_run
        self.mounts = {"/" + k.strip("/"): v for k, v in (mounts or {}).items()}
        self.verify = verify
        # Verification reads the file back through the descriptor it was written with.
        self.write_flags = os.O_RDWR if verify else os.O_WRONLY
        self.progress = progress
        self.result = RestoreResult(dry_run=dry_run)
        self.bytes_total: int | None = None  # the snapshot's size when all of it is restored: progress
        self.is_root = os.geteuid() == 0
        self._lock = threading.Lock()
        self.slots = threading.BoundedSemaphore(4 * repo.parallelism)
        self.hardlinks: dict[tuple[int, int], Future[tuple[Dir, str] | None]] = {}
        self.dir_meta: list[tuple[Dir, Node]] = []
        self.by_pack: dict[str, list[_Queued]] = {}

    def _fail(self, path: str, err: BaseException) -> None:
        msg = err.message if isinstance(err, RecoverctlError) else str(err)
        entry = {"path": path, "error": msg, "damaged": "yes" if isinstance(err, DecryptError) else "no"}
        if isinstance(err, ObjectNotFound) and "pack" in err.details:
            entry["missing_pack"] = str(err.details["pack"])  # gone under us: Repository.read_pack
        with self._lock:
            self.result.errors.append(entry)
        self.progress.warn(f"{path}: {msg}")

    def _nodes(self, tree_id: str | None, directory: str) -> list[Node]:
        return tree_nodes(self.repo, tree_id, directory) if tree_id else []

    def _open_target(self) -> int | None:
        """Open (create) the target; refuse a non-empty one unless force or delta; None for a dry
        run into a directory that does not exist yet."""
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
        try:
            fd = os.open(self.target, flags)
        except FileNotFoundError:
            if self.dry_run:
                return None
            os.makedirs(self.target, exist_ok=True)
            fd = os.open(self.target, flags)
        except NotADirectoryError:
            raise UsageError(
                f"restore target '{self.target}' is not a directory", hint="give a new or empty directory"
            ) from None
        if self.force or self.delta:
            return fd
        with os.scandir(fd) as it:
            present = sorted(e.name for e in itertools.islice(it, 6))
        if present:
            os.close(fd)
            shown = ", ".join(present[:5]) + (", ..." if len(present) > 5 else "")
            raise UsageError(
                f"restore target '{self.target}' is not empty (it holds {shown})",
                hint="restore into a new or empty directory; or pass --delta to make it equal to the "
                "snapshot (deletes what the snapshot lacks; preview with --delta --dry-run), or --force "
                "to write the snapshot over it and keep the rest",
            )
        return fd

    def run(self, tree_id: str) -> RestoreResult:
        started = time.monotonic()
        root_fd = self._open_target()
        if self.dry_run:
            try:
                self._plan(tree_id, root_fd, "")
            finally:
                if root_fd is not None:
                    os.close(root_fd)
        else:
            assert root_fd is not None
            table = DirTable(root_fd)
            try:
                self._restore(tree_id, table)
            finally:
                table.close()
        self.result.duration_s = time.monotonic() - started
        return self.result

    def _restore(self, tree_id: str, table: DirTable) -> None:
        self.table = table
        self.pool = ThreadPoolExecutor(self.repo.parallelism, thread_name_prefix="restore")
        futures: list[Future[Any]] = []
        try:
            self._restore_dir(tree_id, table.root, False, futures)
            for pack, items in self.by_pack.items():
                futures.append(self.pool.submit(self._restore_batch, pack, items))
            for f in futures:
                f.result()
        finally:
            self.pool.shutdown(wait=True)
        # Last and deepest first: writing into a directory changes its mtime, and a read-only
        # mode would stop the writes.
        for d, node in reversed(self.dir_meta):
            try:
                with table.use(d) as fd:
                    apply_meta(fd, node, self.is_root)
            except OSError as e:
                self._fail(d.rel, e)

    def _wanted(self, nodes: list[Node], rel: str) -> Iterator[tuple[Node, str, str, bool]]:
        """Yield (node, name, path, restore it) for the nodes of directory `rel` the include list
        reaches (restore False: only on the way to an included path)."""
        for node in nodes:
            path = f"{rel}/{node['name']}"
            restore, descend = selected(path, self.include)
            if descend:
                yield node, node["name"], path, restore

    def _extraneous(
        self, existing: dict[str, bool], nodes: list[Node], rel: str
    ) -> list[tuple[str, bool, str]]:
        """With delta, return (name, is a directory, path) of the entries of directory `rel` that
        the snapshot lacks and the include list covers: those a restore removes."""
        if not self.delta or not existing:
            return []
        keep = {n["name"] for n in nodes}
        return [
            (name, is_dir, f"{rel}/{name}")
            for name, is_dir in sorted(existing.items())
            if name not in keep and selected(f"{rel}/{name}", self.include)[0]
        ]

    def _remove(self, dir_fd: int, name: str, is_dir: bool, path: str) -> bool:
        try:
            remove(dir_fd, name, is_dir)
        except OSError as e:
            self._fail(path, e)
            return False
        return True

    def _restore_dir(self, tree_id: str | None, d: Dir, fresh: bool, futures: list[Future[Any]]) -> None:
        """Restore the nodes of a tree into directory d; `fresh`: d was just created (so empty)."""
        nodes = self._nodes(tree_id, d.rel)
        with self.table.use(d) as dfd:
            # {name: is a directory} of what is already there; a fresh directory holds nothing.
            existing = {} if fresh else entries(dfd)
            for name, is_dir, path in self._extraneous(existing, nodes, d.rel):
                if self._remove(dfd, name, is_dir, path):
                    with self._lock:
                        self.result.removed += 1
            for node, name, path, restore in self._wanted(nodes, d.rel):
                in_way = existing.get(name)  # None: nothing there; True: a directory; False: other
                if node["type"] == "dir":
                    self._dir(node, d, dfd, name, path, in_way, restore, futures)
                    continue
                if not restore or self._skipped_link(node, path):
                    continue
                if in_way and not self._remove(dfd, name, True, path):
                    continue
                if node["type"] == "file":
                    self._queue_file(node, d, name, path, futures)
                    continue
                try:
                    self._special(node, dfd, name)
                except OSError as e:
                    self._fail(path, e)

    def _dir(
        self,
        node: Node,
        parent: Dir,
        dfd: int,
        name: str,
        path: str,
        in_way: bool | None,
        restore: bool,
        futures: list[Future[Any]],
    ) -> None:
        try:
            mount = self.mounts.get(path)
            if mount is not None:
                child = self.table.pinned(os.open(mount, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC), path)
            else:
                if in_way is False:
                    os.unlink(name, dir_fd=dfd)
                if in_way is not True:
                    os.mkdir(name, dir_fd=dfd)  # the umask applies, as for makedirs; the mode comes last
                child = Dir(parent, name, path)
            if restore:
                self.dir_meta.append((child, node))
                with self._lock:
                    self.result.dirs += 1
            self._restore_dir(node.get("subtree"), child, in_way is not True and mount is None, futures)
        except OSError as e:
            self._fail(path, e)

    def _skipped_link(self, node: Node, path: str) -> bool:
        """Whether `node` is a symlink left out by `inner_links_only` (then listed in the result)."""
        if not (self.inner_links_only and node["type"] == "symlink" and link_leaves(node.get("target", ""))):
            return False
        with self._lock:
            self.result.links_skipped.append({"path": path, "target": node.get("target", "")})
        return True

    def _queue_file(self, node: Node, d: Dir, name: str, path: str, futures: list[Future[Any]]) -> None:
        if self._batch(node, d, name, path):
            return
        key = (node.get("dev", 0), node.get("inode", 0))
        if node.get("links", 1) > 1 and key in self.hardlinks:
            futures.append(self.pool.submit(self._link, self.hardlinks[key], d, name, path))
            return
        self.slots.acquire()
        fut = self.pool.submit(self._file, node, d, name, path)
        if node.get("links", 1) > 1:
            self.hardlinks[key] = fut
        futures.append(fut)

    def _batch(self, node: Node, d: Dir, name: str, path: str) -> bool:
        """Queue a file of one blob for its pack's batch; return False to restore it on its own."""
        content: list[str] = node.get("content") or []
        if len(content) != 1 or self.delta or node.get("links", 1) > 1 or node.get("patches"):
            return False
        bid = bytes.fromhex(content[0])
        loc = self.repo.index.get(bid)
        if loc is None:
            return False  # restored on its own, which reports the missing blob
        self.by_pack.setdefault(loc.pack, []).append((loc, bid, node, d, name, path))
        return True

    def _restore_batch(self, pack: str, items: list[_Queued]) -> None:
        """Restore single-blob files from one pack: read neighbouring blobs in one request each."""
        for _pack, start, length, run in pack_stretches((item[0], item[1:]) for item in items):
            try:
                data = memoryview(self.repo.read_pack(pack, start, length))
            except RecoverctlError as e:
                for _loc, (*_, path) in run:
                    self._fail(path, e)
                continue
            for loc, (bid, node, d, name, path) in run:
                try:
                    begin = loc.offset - start
                    plain = self.repo.open_blob(bid, loc.type, data[begin : begin + loc.length], pack)
                    with self.table.use(d) as dfd:
                        written = self._write_new(node, dfd, name, plain)
                except (RecoverctlError, OSError) as e:
                    self._fail(path, e)
                    continue
                self._count_file(written)

    def _count_file(self, written: int) -> None:
        with self._lock:
            self.result.files += 1
            self.result.bytes += written
            counters = {
                "files_restored": self.result.files,
                "bytes_restored": self.result.bytes,
                "bytes_total": self.bytes_total,
            }
        self.progress.update(counters)

    def _link(self, first: Future[tuple[Dir, str] | None], d: Dir, name: str, path: str) -> None:
        src = first.result()
        if src is None:
            return
        src_dir, src_name = src
        try:
            with self.table.use(src_dir) as sfd, self.table.use(d) as dfd:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(name, dir_fd=dfd)
                os.link(src_name, name, src_dir_fd=sfd, dst_dir_fd=dfd, follow_symlinks=False)
        except OSError as e:
            self._fail(path, e)

    def _special(self, node: Node, dfd: int, name: str) -> None:
        t = node["type"]
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=dfd)
        if t == "symlink":
            os.symlink(node.get("target", ""), name, dir_fd=dfd)
        elif t == "fifo":
            os.mkfifo(name, node.get("mode", 0o600), dir_fd=dfd)
        elif t in ("chardev", "blockdev"):
            if not self.is_root:
                return
            kind = stat.S_IFCHR if t == "chardev" else stat.S_IFBLK
            os.mknod(name, kind | node.get("mode", 0o600), node.get("rdev", 0), dir_fd=dfd)
        elif t == "socket":
            return
        apply_meta_at(dfd, name, node, self.is_root)

    def _file(self, node: Node, d: Dir, name: str, path: str) -> tuple[Dir, str] | None:
        try:
            with self.table.use(d) as dfd:
                if self.delta:
                    same = open_unchanged(self.repo, node, dfd, name)
                    if same is not None:
                        try:
                            apply_meta(same, node, self.is_root)
                        finally:
                            os.close(same)
                        with self._lock:
                            self.result.skipped += 1
                        return d, name
                if len(node.get("content") or ()) <= 1:
                    # The blob is authenticated before the file is created, so wrong bytes can
                    # never appear under the name.
                    written = self._write_new(node, dfd, name, b"".join(iter_file(self.repo, node)))
                else:
                    written = self._write_via_temp(node, dfd, name, self._scatter(node))
            self._count_file(written)
            return d, name
        except (RecoverctlError, OSError) as e:
            self._fail(path, e)
            return None
        finally:
            self.slots.release()

    def _write_new(self, node: Node, dfd: int, name: str, data: bytes) -> int:
        """Create `name` holding authenticated `data` (via a temporary name when it exists)."""
        try:
            fd = os.open(name, self.write_flags | NEW_FILE, 0o600, dir_fd=dfd)
        except FileExistsError:

            def put(fd: int) -> int:
                self._put(fd, node, 0, data)
                return len(data)

            return self._write_via_temp(node, dfd, name, put)
        try:
            try:
                if node.get("sparse"):
                    self._put(fd, node, 0, data)
                    os.ftruncate(fd, len(data))
                else:
                    # Straight on the descriptor: a file object per small file costs more than its write.
                    write_all(fd, data)
                if self.verify:
                    self._verify_written(fd, node)
                apply_meta(fd, node, self.is_root)
            finally:
                os.close(fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(name, dir_fd=dfd)
            raise
        return len(data)

    def _scatter(self, node: Node) -> Callable[[int], int]:
        """Return how to write a file of many blobs through its descriptor, pack by pack."""

        def put(fd: int) -> int:
            return read_scattered(self.repo, node, lambda offset, data: self._put(fd, node, offset, data))

        return put

    def _put(self, fd: int, node: Node, offset: int, data: bytes | memoryview) -> None:
        write_at(fd, data, offset, sparse=bool(node.get("sparse")))

    def _write_via_temp(self, node: Node, dfd: int, name: str, put: Callable[[int], int]) -> int:
        """Write to a temporary name with `put(fd)` (returning the length it wrote) and rename into
        place once every blob was authenticated."""

        def fill(fd: int) -> int:
            written = put(fd)
            if node.get("sparse"):
                os.ftruncate(fd, written)  # holes at the end
            if self.verify:
                self._verify_written(fd, node)
            apply_meta(fd, node, self.is_root)
            return written

        return write_replacing(dfd, name, fill, self.write_flags)

    def _verify_written(self, fd: int, node: Node) -> None:
        if not holds(self.repo, fd, node):
            raise DecryptError(f"restored bytes of '{node['name']}' differ from the snapshot")

    def _plan(self, tree_id: str | None, dfd: int | None, rel: str) -> None:
        """Dry run: count what would be restored and list what would be removed or overwritten.

        Nothing is created or changed; `dfd` is the existing directory at `rel` (None: absent).
        """
        nodes = self._nodes(tree_id, rel)
        existing = entries(dfd) if dfd is not None else {}
        res = self.result
        for _name, is_dir, path in self._extraneous(existing, nodes, rel):
            res.would_remove.append(path + ("/" if is_dir else ""))
        for node, name, path, restore in self._wanted(nodes, rel):
            in_way = existing.get(name)
            if node["type"] == "dir":
                res.dirs += restore
                mount = self.mounts.get(path)
                child: int | None = None
                try:
                    if mount is not None and os.path.isdir(mount):
                        child = os.open(mount, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                    elif mount is None and in_way and dfd is not None:
                        child = os.open(name, DIR_FLAGS, dir_fd=dfd)
                    elif mount is None and in_way is False:
                        res.would_overwrite.append(path)
                    self._plan(node.get("subtree"), child, path)
                except OSError as e:
                    self._fail(path, e)
                finally:
                    if child is not None:
                        os.close(child)
                continue
            if not restore or self._skipped_link(node, path):
                continue
            if in_way is False and node["type"] == "file" and self.delta and dfd is not None:
                try:
                    same = open_unchanged(self.repo, node, dfd, name)
                except (OSError, RecoverctlError) as e:  # a patched chunk's blobs may be damaged
                    self._fail(path, e)
                    continue
                if same is not None:
                    os.close(same)
                    res.skipped += 1
                    continue
            if node["type"] == "file":
                res.files += 1
                res.bytes += int(node.get("size") or 0)
            if in_way is not None:
                res.would_overwrite.append(path + ("/" if in_way else ""))


def restore_snapshot(
    repo: Repository,
    snapshot_id: str,
    target_dir: str,
    include: list[str] | None = None,
    delta: bool = False,
    verify: bool = False,
    progress: Progress | None = None,
    *,
    force: bool = False,
    dry_run: bool = False,
    mounts: dict[str, str] | None = None,
    inner_links_only: bool = False,
) -> RestoreResult:
    """Restore a snapshot (id, prefix or 'latest') into `target_dir`; return counts and per-file errors.

    Nothing is created, changed or removed outside `target_dir` (and `mounts`), whatever the
    snapshot's trees say or symlinks already in the target point at. `include` restricts to paths
    ('/a/b') in the snapshot. A non-empty target is refused (UsageError, exit 2) unless `force`
    (entries at the snapshot's names are replaced, others kept) or `delta` (also: files whose
    content already matches are kept, entries not in the snapshot are removed). `dry_run` changes
    nothing and lists in the result what would be removed and overwritten. `mounts` maps snapshot
    directories ('/pg_tblspc/16385') to directories outside the target that receive their content.
    `inner_links_only` leaves out symlinks that could point outside the directory they are
    restored into (absolute, or climbing with '..'), for a copy a server will run on; the result
    lists them in `links_skipped`.
    Files whose blobs fail authentication are not written (listed in `errors` with damaged=yes);
    the caller decides the exit code. Raise NotFoundError for an unknown snapshot, InvalidTreeError
    (exit 13, naming the snapshot and directory) for a tree no backup writes.
    """
    snap = repo.resolve_snapshot(snapshot_id)
    repo.load_index()
    r = _Restorer(
        repo,
        target_dir,
        include,
        delta,
        verify,
        progress or Progress(),
        force=force,
        dry_run=dry_run,
        mounts=mounts,
        inner_links_only=inner_links_only,
    )
    r.bytes_total = None if include else snap.summary.get("bytes_total")
    try:
        return r.run(snap.tree)
    except InvalidTreeError as e:
        raise e.locate(snapshot=snap.short_id) from None
