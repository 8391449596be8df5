"""The archiver's pipeline: walk a file tree, read and store its files, finish its trees.

Pipeline: the walker lists directories and lstat()s entries on the calling thread; files go to a
pool of readers; a reader cuts each file with FastCDC and hands chunks to a second pool that
hashes, compresses, encrypts and packs them (BlobSaver); full packs go to uploader threads.
Every hand-off is bounded, so memory stays flat whatever the file sizes. Directory trees are
finished in post-order on one thread, and the snapshot is written last.
"""

from __future__ import annotations

import getpass
import io
import json
import os
import queue
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from pyfastcdc import FastCDC

from recoverctl.progress import Progress
from recoverctl.repo.archive_jobs import Counters, DirJob, FileJob, Subdir
from recoverctl.repo.content_ids import ContentIds
from recoverctl.repo.fixed_read import FixedRead, FixedResult, ReadPlanFn, read_fixed
from recoverctl.repo.pack import DATA, TREE
from recoverctl.repo.page_patch import blob_ids, content_layout
from recoverctl.repo.repository import Repository
from recoverctl.repo.saver import BlobSaver, DryRunSaver, Saver
from recoverctl.repo.snapshot import Snapshot
from recoverctl.repo.tree import Node, node_from_stat, same_metadata, unchanged

ExcludeFn = Callable[[str, os.stat_result], bool]
ForceRereadFn = Callable[[str, os.stat_result], bool]
# Given a symlink's path relative to the root, return whether to back up its target directory in
# its place (e.g. PostgreSQL's pg_tblspc/<oid> links).
FollowFn = Callable[[str], bool]
# Given the warnings so far, return whether the snapshot is partial (see backup_tree).
BeforeSnapshotFn = Callable[[list[str]], bool]


@dataclass
class BackupResult:
    snapshot_id: str | None
    summary: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    partial: bool = False
    snapshot: Snapshot | None = None


class _VanishedError(Exception):
    pass


class Archiver:
    """One backup run. Not reusable; call `run()` once."""

    def __init__(
        self,
        repo: Repository,
        *,
        dry_run: bool = False,
        progress: Progress | None = None,
        force_read: bool = False,
        force_reread: ForceRereadFn | None = None,
        exclude: ExcludeFn | None = None,
        one_file_system: bool = False,
        follow_symlinks: FollowFn | None = None,
        read_plan: ReadPlanFn | None = None,
    ):
        self.repo = repo
        self.dry_run = dry_run
        self.progress = progress or Progress()
        self.force_read = force_read
        self.force_reread = force_reread
        self.exclude = exclude
        self.one_file_system = one_file_system
        self.follow_symlinks = follow_symlinks
        self.read_plan = read_plan
        self.counters = Counters()
        self.warnings: list[str] = []
        self.partial = False
        self._lock = threading.Lock()
        c = repo.chunker
        self.chunk_min, self.chunk_avg, self.chunk_max = int(c["min"]), int(c["avg"]), int(c["max"])
        self._cdc_local = threading.local()
        self.saver: Saver
        p = repo.parallelism
        # Readers of large files (small ones are read by the walker): each holds FastCDC's 8 MiB
        # stream buffer; half the sealers keep them busy, as restic's two readers do.
        self.file_pool = ThreadPoolExecutor(max(2, p // 2), thread_name_prefix="read")
        self.chunk_pool = ThreadPoolExecutor(p, thread_name_prefix="seal")
        # Bounds the chunks read but not yet sealed: memory is about (p + 2) chunks.
        self.chunk_slots = threading.BoundedSemaphore(p + 2)
        self._dirs: queue.Queue[DirJob | None] = queue.Queue(maxsize=4096)
        self._finisher_error: BaseException | None = None
        self._started = time.monotonic()

    # --- chunking and saving ----------------------------------------------------------------------

    def _cdc(self) -> FastCDC:
        cdc = getattr(self._cdc_local, "cdc", None)
        if cdc is None:
            cdc = FastCDC(self.chunk_avg, min_size=self.chunk_min, max_size=self.chunk_max)
            self._cdc_local.cdc = cdc
        return cdc

    def _seal_chunk(self, data: bytes) -> str:
        try:
            bid, _new = self.saver.save(DATA, data)
            return bid.hex()
        finally:
            self.chunk_slots.release()

    def save_stream(self, stream: BinaryIO | io.RawIOBase, on_bytes: Callable[[int], None]) -> list[str]:
        """Chunk a stream and save its chunks in parallel; return the content ids in order."""
        ids = ContentIds()
        try:
            for chunk in self._cdc().cut_stream(stream):
                data = bytes(chunk.data)
                on_bytes(len(data))
                ids.append(self._submit_chunk(data))
            return ids.result()
        finally:
            ids.cancel()

    def _submit_chunk(self, data: bytes) -> Future[str]:
        """Queue one chunk for sealing (bounded by `chunk_slots`); return its content id's future."""
        self.chunk_slots.acquire()
        try:
            return self.chunk_pool.submit(self._seal_chunk, data)
        except BaseException:
            self.chunk_slots.release()
            raise

    def _read_file(self, path: str, st: os.stat_result, plan: FixedRead | None = None) -> FixedResult:
        """Return the content ids of a file, the length they cover (its bytes read, unless a
        fixed-boundary `plan` keeps chunks of the parent) and its page patches; raise
        _VanishedError or OSError."""
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)
        try:
            fd = os.open(path, flags | getattr(os, "O_NOATIME", 0))
        except PermissionError:
            fd = os.open(path, flags)
        except FileNotFoundError:
            raise _VanishedError(path) from None
        with os.fdopen(fd, "rb", buffering=0) as f:
            if plan is not None:
                indexed = self._all_indexed
                return read_fixed(
                    fd, st.st_size, plan, self._submit_chunk, self._add_read, lambda c: indexed((c,))
                )
            if st.st_size < self.chunk_min:
                data = f.read()
                self._add_read(len(data))
                return FixedResult(([self.saver.save(DATA, data)[0].hex()] if data else []), len(data), [])
            total = 0

            def count(k: int) -> None:
                nonlocal total
                total += k
                self._add_read(k)
                self.progress.update(self._status())  # within a large file too, not only after it

            return FixedResult(self.save_stream(f, count), total, [])

    def _add_read(self, n: int) -> None:
        with self._lock:
            self.counters.bytes_read += n

    def _file_task(
        self, path: str, relpath: str, node: Node, st: os.stat_result, plan: FixedRead | None = None
    ) -> list[str] | None:
        try:
            for attempt in (1, 2):
                content, n, patches = self._read_file(path, st, plan)
                if patches:
                    assert plan is not None
                    node.update(page_size=plan.page_size, patches=patches)
                else:
                    node.pop("patches", None)
                    node.pop("page_size", None)
                after = os.lstat(path)
                if (after.st_size, after.st_mtime_ns, after.st_ctime_ns) == (
                    st.st_size,
                    st.st_mtime_ns,
                    st.st_ctime_ns,
                ):
                    return content
                if attempt == 2:
                    node["changed_during_read"] = True
                    node["size"] = n
                    self._warn(f"{path}: changed while it was read; stored as read and flagged")
                    return content
                st = after
                node.update(size=after.st_size, mtime_ns=after.st_mtime_ns, ctime_ns=after.st_ctime_ns)
            return None
        except _VanishedError:
            self._warn(f"{path}: vanished before it could be read; not in the snapshot")
            return None
        except OSError as e:
            self._warn(f"{path}: cannot read: {e.strerror}; not in the snapshot")
            return None
        finally:
            with self._lock:
                self.counters.files_done += 1
                counters = self._status()
            self.progress.update(counters)

    def _warn(self, text: str) -> None:
        with self._lock:
            self.warnings.append(text)
            self.partial = True
        self.progress.warn(text)

    def _status(self) -> dict[str, Any]:
        c = self.counters
        return {
            "files_done": c.files_done,
            "files_new": c.files_new,
            "files_changed": c.files_changed,
            "files_unmodified": c.files_unmodified,
            "bytes_read": c.bytes_read,
            "bytes_added": self.saver.stats.bytes_added,
            "bytes_done": c.bytes_read + c.bytes_unmodified,
            "bytes_total": c.bytes_total,
        }

    # --- walking ----------------------------------------------------------------------------------

    def _walk_dir(
        self,
        path: str,
        relpath: str,
        node: Node | None,
        selection: dict[str, Any] | None,
        parent_tree: str | None,
        extras: dict[str, Any],
        root_dev: int | None,
    ) -> DirJob:
        """Queue a directory's files on the readers, walk its subdirectories, return its job.
        `selection`: the named paths below only; `extras`: in-memory entries added here."""
        job = DirJob(node, relpath)
        parent_nodes = self._parent_nodes(job, parent_tree)
        names = self._list_names(path) if selection is None else sorted(selection)
        subdirs: list[Subdir] = []
        extra_here = {k: v for k, v in extras.items() if isinstance(v, bytes) or k not in names}
        reused = [0, 0]  # unchanged files and their bytes, added to the counters once per directory
        keep_to = root_dev if self.one_file_system and selection is None else None
        for name in names:
            child_path = f"{path}/{name}" if path != "/" else f"/{name}"
            child_rel = f"{relpath}/{name}" if relpath else name
            extra = extras.get(name) if extras else None
            child_extras = extra if isinstance(extra, dict) else {}
            try:
                st = os.lstat(child_path)
            except FileNotFoundError:
                if selection is not None and relpath == "" and not child_extras:
                    self._warn(f"{child_path}: does not exist; not in the snapshot")
                elif child_extras:
                    extra_here[name] = child_extras
                continue
            except OSError as e:
                self._warn(f"{child_path}: cannot stat: {e.strerror}")
                continue
            followed = self._followed(child_path, child_rel, st)
            if followed is None:
                continue
            st = followed
            if self.exclude is not None and self.exclude(child_rel, st):
                continue
            if isinstance(extra, bytes):
                continue  # an in-memory file replaces the one on disk
            parent = parent_nodes.get(name)
            reusable = (
                parent is not None
                and stat.S_ISREG(st.st_mode)
                and self._content_reusable(parent, child_rel, st)
            )
            if parent is not None and reusable and same_metadata(parent, st):
                # Nothing of the inode changed (else its ctime would have): the parent's node
                # stands as it is, content included, without reading names or xattrs again.
                job.entries.append(self._reused_file(parent, st, reused))
                continue
            try:
                child = node_from_stat(name, st, child_path)
            except OSError as e:
                self._warn(f"{child_path}: cannot read metadata: {e.strerror}")
                continue
            t = child["type"]
            if t == "dir":
                sub_sel = selection.get(name) if selection is not None else None
                self._dir_entry(
                    job, subdirs, child_path, child_rel, child, st, sub_sel, child_extras, keep_to
                )
            elif t == "file":
                job.entries.append(
                    self._file_entry(child_path, child_rel, child, st, parent, reusable, reused)
                )
            else:
                job.entries.append(child)
        self._count_reused(reused)
        self._descend(job, subdirs, parent_nodes, selection is not None, root_dev)
        for name, value in extra_here.items():
            job.entries.append(self._extra_entry(name, value, f"{relpath}/{name}" if relpath else name))
        with self._lock:
            self.counters.dirs += 1
        self._put_dir(job)
        return job

    def _parent_nodes(self, job: DirJob, parent_tree: str | None) -> dict[str, Node]:
        """Load the directory's tree in the parent snapshot into `job`; return its nodes by name
        (none when there is no parent tree or it cannot be read: every file is then read)."""
        if not parent_tree:
            return {}
        try:
            job.parent_nodes = self.repo.load_tree(bytes.fromhex(parent_tree))["nodes"]
            job.parent_tree = parent_tree
            return {n["name"]: n for n in job.parent_nodes}
        except Exception:
            return {}

    def _list_names(self, path: str) -> list[str]:
        """Return the sorted entry names of a directory; none (with a warning) when it cannot be listed."""
        try:
            return sorted(os.listdir(path)) if os.path.isdir(path) else []
        except FileNotFoundError:
            return []
        except OSError as e:
            self._warn(f"{path}: cannot list directory: {e.strerror}")
            return []

    def _followed(self, path: str, relpath: str, st: os.stat_result) -> os.stat_result | None:
        """Given an entry's lstat(), return the stat to back it up with: its target directory's for a
        symlink `follow_symlinks` names, else its own; None (with a warning) when the link is broken."""
        follow = self.follow_symlinks
        if follow is None or not stat.S_ISLNK(st.st_mode) or not follow(relpath):
            return st
        try:
            target_st = os.stat(path)
        except OSError as e:
            self._warn(f"{path}: cannot follow link: {e.strerror}")
            return None
        return target_st if stat.S_ISDIR(target_st.st_mode) else st  # walked as the directory it points to

    def _reused_file(self, parent: Node, st: os.stat_result, reused: list[int]) -> FileJob:
        """Return the job of an unchanged file: its parent snapshot's node (counted in `reused`)."""
        reused[0] += 1
        reused[1] += st.st_size
        node = parent if parent.get("dev") == st.st_dev else {**parent, "dev": st.st_dev}
        return FileJob(node, None, parent.get("content", []))

    def _dir_entry(
        self,
        job: DirJob,
        subdirs: list[Subdir],
        path: str,
        relpath: str,
        child: Node,
        st: os.stat_result,
        sub_sel: dict[str, Any] | None,
        extras: dict[str, Any],
        keep_to_dev: int | None,
    ) -> None:
        """Add a subdirectory to `job`: queued in `subdirs` for the walk, or on its own (empty) when
        it is a mount point of another file system than `keep_to_dev`."""
        if keep_to_dev is not None and st.st_dev != keep_to_dev:
            job.entries.append(child)  # the mount point itself, empty
            return
        subdirs.append((len(job.entries), path, relpath, child, sub_sel, extras or {}))
        job.entries.append(child)  # replaced by the DirJob below

    def _count_reused(self, reused: list[int]) -> None:
        if reused[0]:
            with self._lock:
                c = self.counters
                c.files_unmodified += reused[0]
                c.files_done += reused[0]
                c.bytes_total += reused[1]
                c.bytes_unmodified += reused[1]

    def _descend(
        self,
        job: DirJob,
        subdirs: list[Subdir],
        parent_nodes: dict[str, Node],
        selected: bool,
        root_dev: int | None,
    ) -> None:
        """Walk the subdirectories found in `job`'s directory, putting their jobs in its entries."""
        # Files first, then recurse: readers stay busy while the walker descends.
        for idx, child_path, child_rel, child, sub_sel, child_extras in subdirs:
            parent_sub = parent_nodes.get(child["name"], {}).get("subtree")
            dev = root_dev
            if self.one_file_system and selected:
                # A path named for backup sets the file system its subtree stays on.
                dev = child["dev"] if sub_sel is None else None
            job.entries[idx] = self._walk_dir(
                child_path, child_rel, child, sub_sel, parent_sub, child_extras, dev
            )

    def _extra_entry(self, name: str, value: bytes | dict[str, Any], relpath: str) -> FileJob | DirJob:
        now = time.time_ns()
        base: Node = {
            "name": name,
            "mode": 0o600 if isinstance(value, bytes) else 0o700,
            "uid": os.getuid(),
            "gid": os.getgid(),
            "mtime_ns": now,
            "ctime_ns": now,
        }
        if isinstance(value, bytes):
            base.update(type="file", size=len(value))
            content = []
            for chunk in self._cdc().cut_buf(value) if value else ():
                content.append(self.saver.save(DATA, bytes(chunk.data))[0].hex())
            with self._lock:
                self.counters.files_new += 1
            return FileJob(base, None, content)
        base["type"] = "dir"
        job = DirJob(base, relpath)
        for n, v in sorted(value.items()):
            job.entries.append(self._extra_entry(n, v, f"{relpath}/{n}"))
        self._put_dir(job)
        return job

    def _file_entry(
        self,
        path: str,
        relpath: str,
        node: Node,
        st: os.stat_result,
        parent: Node | None,
        reusable: bool,
        reused: list[int],
    ) -> FileJob:
        """Return the job of a file: the parent's content when `reusable` (counted in `reused`,
        which the caller adds to the counters), else its content read here (one blob) or a read
        queued on the readers."""
        if parent is not None and reusable:
            reused[0] += 1
            reused[1] += st.st_size
            node.update(content_layout(parent))  # with block_size and patches, for the next incremental
            return FileJob(node, None, list(parent.get("content", ())))
        with self._lock:
            c = self.counters
            c.bytes_total += st.st_size
            if parent is not None and parent.get("type") == "file":
                c.files_changed += 1
            else:
                c.files_new += 1
        plan = self.read_plan(relpath, st, parent) if self.read_plan is not None else None
        if plan is not None:
            node["block_size"] = plan.block_size  # its content ids sit at fixed offsets
        if st.st_size < self.chunk_min:
            # One blob: read here, in the walker. Handing thousands of 4 KiB files to the reader
            # pool made the threads fight over the GIL on every open/read/stat (10,000 small files
            # took ~3.6 s instead of ~1.7 s); large files still go to the pool.
            return FileJob(node, None, self._file_task(path, relpath, node, st, plan))
        return FileJob(node, self.file_pool.submit(self._file_task, path, relpath, node, st, plan))

    def _content_reusable(self, parent: Node, relpath: str, st: os.stat_result) -> bool:
        """Whether a file may keep the content of its parent snapshot's node without a read."""
        return (
            not self.force_read
            and unchanged(parent, st)
            and not (self.force_reread is not None and self.force_reread(relpath, st))
            and self._all_indexed(blob_ids(parent))
        )

    def _all_indexed(self, content: Iterable[str]) -> bool:
        blobs, fromhex = self.repo.index.blobs, bytes.fromhex
        return all(map(blobs.__contains__, map(fromhex, content)))

    # --- finishing trees --------------------------------------------------------------------------

    def _put_dir(self, job: DirJob) -> None:
        while True:
            if self._finisher_error is not None:
                raise self._finisher_error
            try:
                self._dirs.put(job, timeout=0.5)
                return
            except queue.Full:
                continue

    def _finisher(self) -> None:
        while True:
            job = self._dirs.get()
            if job is None:
                return
            if self._finisher_error is not None:
                continue
            try:
                job.tree_id = self._save_tree(job)
            except BaseException as e:
                self._finisher_error = e

    def _save_tree(self, job: DirJob) -> str:
        nodes: list[Node] = []
        for entry in job.entries:
            if isinstance(entry, FileJob):
                content = entry.result()
                if content is None:
                    continue
                entry.node["content"] = content
                nodes.append(entry.node)
            elif isinstance(entry, DirJob):
                assert entry.node is not None and entry.tree_id is not None
                entry.node["subtree"] = entry.tree_id
                nodes.append(entry.node)
            else:
                nodes.append(entry)
        nodes.sort(key=lambda n: n["name"])
        if job.parent_tree is not None and nodes == job.parent_nodes:
            # Same nodes, same JSON, same id: skip serialising, hashing and the index lookup.
            return job.parent_tree
        data = json.dumps({"nodes": nodes}, separators=(",", ":"), sort_keys=True).encode()
        bid, _new = self.saver.save(TREE, data)
        return bid.hex()

    # --- the run ----------------------------------------------------------------------------------

    def run(
        self,
        walk: Callable[[], DirJob],
        *,
        kind: str,
        paths: list[str],
        source: str | None,
        tags: dict[str, str] | None,
        metadata: dict[str, Any] | None,
        parent: Snapshot | None,
    ) -> BackupResult:
        self.saver = DryRunSaver(self.repo) if self.dry_run else BlobSaver(self.repo)
        finisher = threading.Thread(target=self._finisher, name="tree-finisher", daemon=True)
        finisher.start()
        ok = False
        try:
            try:
                root = walk()
            finally:
                self._dirs.put(None)
                finisher.join()
            if self._finisher_error is not None:
                raise self._finisher_error
            assert root.tree_id is not None
            self.saver.flush()
            ok = True
        finally:
            self.file_pool.shutdown(wait=ok, cancel_futures=not ok)
            self.chunk_pool.shutdown(wait=ok, cancel_futures=not ok)
            self.saver.close()
        duration = time.monotonic() - self._started
        c, s = self.counters, self.saver.stats
        summary = {
            "files_new": c.files_new,
            "files_changed": c.files_changed,
            "files_unmodified": c.files_unmodified,
            "dirs": c.dirs,
            "bytes_read": c.bytes_read,
            "bytes_total": c.bytes_total,
            "bytes_added": s.bytes_added,
            "bytes_added_stored": s.bytes_added_stored,
            "blobs_added": s.blobs_added,
            "packs_uploaded": s.packs_uploaded,
            "bytes_uploaded": s.bytes_uploaded,
            "duration_s": round(duration, 3),
            "warnings": len(self.warnings),
        }
        snap = Snapshot(
            time=time.time(),
            kind=kind,
            tree=root.tree_id,
            paths=paths,
            source=source,
            tags=dict(tags or {}),
            parent=parent.id if parent else None,
            hostname=socket.gethostname(),
            username=_username(),
            metadata=dict(metadata or {}),
            summary=summary,
            partial=self.partial,
        )
        sid = None if self.dry_run else self.repo.save_snapshot(snap)
        summary = {**summary, "duration_s": round(time.monotonic() - self._started, 3)}
        return BackupResult(sid, summary, self.warnings, self.partial, None if self.dry_run else snap)


def _username() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return str(os.getuid())
