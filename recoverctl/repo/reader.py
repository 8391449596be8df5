"""Read snapshots back: walk trees, list, diff, stream one file, restore to a directory.

Restores run files in parallel, write each file to a temporary name in its directory and rename
it into place only after every blob was decrypted and authenticated, so a damaged blob never
leaves wrong bytes under the real name. Files of one blob (most small files) are grouped by pack
and restored in pack order, one ranged read per stretch of neighbouring blobs, instead of one
read per file; such a file is created only once its blob is authenticated. Directory metadata
is applied last, deepest first.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import os
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from recoverctl.errors import NotFoundError, ObjectNotFound, RecoverctlError
from recoverctl.progress import Progress
from recoverctl.repo.crypto import DecryptError
from recoverctl.repo.index import BlobLocation
from recoverctl.repo.repository import Repository
from recoverctl.repo.snapshot import Snapshot
from recoverctl.repo.tree import Node

MAX_READ = 16 * 1024 * 1024
# Neighbouring single-blob files in a pack are fetched in one read when the bytes between them
# (blobs of other files) are at most this much: reading them costs less than another request.
BATCH_GAP = 1024 * 1024


def walk(repo: Repository, tree_id: str, prefix: str = "") -> Iterator[tuple[str, Node]]:
    """Yield (path, node) for every node below a tree, depth first, parents before children."""
    for node in repo.load_tree(bytes.fromhex(tree_id))["nodes"]:
        path = f"{prefix}/{node['name']}"
        yield path, node
        if node["type"] == "dir" and node.get("subtree"):
            yield from walk(repo, node["subtree"], path)


def find_node(repo: Repository, snap: Snapshot, path: str) -> Node:
    """Return the node at `path` ('/a/b') in a snapshot; raise NotFoundError."""
    parts = [p for p in path.strip("/").split("/") if p]
    node: Node = {"type": "dir", "subtree": snap.tree, "name": ""}
    for i, part in enumerate(parts):
        if node["type"] != "dir" or not node.get("subtree"):
            break
        found = [n for n in repo.load_tree(bytes.fromhex(node["subtree"]))["nodes"] if n["name"] == part]
        if not found:
            break
        node = found[0]
        if i == len(parts) - 1:
            return node
    else:
        return node
    raise NotFoundError(
        f"'{path}' is not in snapshot {snap.short_id}", hint=f"list it with 'recoverctl ls {snap.short_id}'"
    )


def _runs(repo: Repository, content: list[str]) -> Iterator[list[tuple[bytes, BlobLocation]]]:
    """Group a file's blobs into runs stored back to back in one pack, so one ranged read fetches a run."""
    run: list[tuple[bytes, BlobLocation]] = []
    index = repo.load_index()
    for hex_id in content:
        bid = bytes.fromhex(hex_id)
        loc = index.get(bid)
        if loc is None:
            raise NotFoundError(
                f"blob {hex_id[:16]} is missing from the index",
                hint="run 'recoverctl verify' and 'recoverctl repair index'",
            )
        if run:
            last = run[-1][1]
            size = run[-1][1].offset + last.length - run[0][1].offset
            if loc.pack != last.pack or loc.offset != last.offset + last.length or size > MAX_READ:
                yield run
                run = []
        run.append((bid, loc))
    if run:
        yield run


def iter_content(repo: Repository, content: list[str]) -> Iterator[bytes]:
    """Yield the verified plaintext of each blob of a file, in order; raise DecryptError on damage."""
    for run in _runs(repo, content):
        first = run[0][1]
        last = run[-1][1]
        data = memoryview(repo.read_pack(first.pack, first.offset, last.offset + last.length - first.offset))
        for bid, loc in run:
            start = loc.offset - first.offset
            yield repo.open_blob(bid, loc.type, data[start : start + loc.length], loc.pack)


def open_file(repo: Repository, snap: Snapshot, path: str) -> Iterator[bytes]:
    """Yield the bytes of one file in a snapshot (e.g. a stored stream); raise NotFoundError."""
    node = find_node(repo, snap, path)
    if node["type"] != "file":
        raise NotFoundError(f"'{path}' in snapshot {snap.short_id} is a {node['type']}, not a file")
    return iter_content(repo, node.get("content", []))


def ls(
    repo: Repository, snap: Snapshot, path: str = "/", recursive: bool = True
) -> Iterator[tuple[str, Node]]:
    """Yield (path, node) below `path` in a snapshot."""
    node = find_node(repo, snap, path)
    base = "/" + path.strip("/") if path.strip("/") else ""
    if node["type"] != "dir":
        yield base, node
        return
    if base:
        yield base, node
    if not node.get("subtree"):
        return
    if recursive:
        yield from walk(repo, node["subtree"], base)
    else:
        for n in repo.load_tree(bytes.fromhex(node["subtree"]))["nodes"]:
            yield f"{base}/{n['name']}", n


def _meta(node: Node) -> tuple[Any, ...]:
    return (
        node.get("type"),
        node.get("mode"),
        node.get("uid"),
        node.get("gid"),
        node.get("mtime_ns"),
        node.get("size"),
        node.get("target"),
        node.get("xattrs"),
    )


def diff(repo: Repository, a: Snapshot, b: Snapshot) -> list[dict[str, Any]]:
    """Return the changes from snapshot a to b: [{"path", "change": added|removed|modified|metadata}]."""
    out: list[dict[str, Any]] = []

    def rec(ta: str | None, tb: str | None, prefix: str) -> None:
        if ta == tb:
            return
        na = {n["name"]: n for n in repo.load_tree(bytes.fromhex(ta))["nodes"]} if ta else {}
        nb = {n["name"]: n for n in repo.load_tree(bytes.fromhex(tb))["nodes"]} if tb else {}
        for name in sorted(set(na) | set(nb)):
            path = f"{prefix}/{name}"
            x, y = na.get(name), nb.get(name)
            if x is None:
                assert y is not None
                out.append({"path": path, "change": "added", "type": y["type"]})
                if y["type"] == "dir":
                    rec(None, y.get("subtree"), path)
            elif y is None:
                out.append({"path": path, "change": "removed", "type": x["type"]})
                if x["type"] == "dir":
                    rec(x.get("subtree"), None, path)
            elif x["type"] != y["type"]:
                out.append({"path": path, "change": "modified", "type": y["type"]})
            elif x["type"] == "dir":
                if _meta(x)[:4] != _meta(y)[:4]:
                    out.append({"path": path, "change": "metadata", "type": "dir"})
                rec(x.get("subtree"), y.get("subtree"), path)
            elif x.get("content") != y.get("content") or x.get("target") != y.get("target"):
                out.append({"path": path, "change": "modified", "type": y["type"]})
            elif _meta(x) != _meta(y):
                out.append({"path": path, "change": "metadata", "type": y["type"]})

    rec(a.tree, b.tree, "")
    return out


# --- restore ---------------------------------------------------------------------------------------


@dataclass
class RestoreResult:
    files: int = 0
    dirs: int = 0
    bytes: int = 0
    skipped: int = 0
    removed: int = 0
    errors: list[dict[str, str]] = field(default_factory=list)
    duration_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "dirs": self.dirs,
            "bytes": self.bytes,
            "files_skipped_unchanged": self.skipped,
            "removed": self.removed,
            "errors": self.errors,
            "duration_s": round(self.duration_s, 3),
        }


def _selected(path: str, include: list[str] | None) -> tuple[bool, bool]:
    """Return (restore this node, descend into it) for an include list of '/a/b' paths."""
    if not include:
        return True, True
    for inc in include:
        if path == inc or path.startswith(inc + "/"):
            return True, True
        if inc.startswith(path + "/"):
            return False, True
    return False, False


class _Restorer:
    def __init__(
        self,
        repo: Repository,
        target: str,
        include: list[str] | None,
        delta: bool,
        verify: bool,
        progress: Progress,
    ):
        self.repo = repo
        self.target = target
        self.include = ["/" + i.strip("/") for i in include] if include else None
        self.delta = delta
        self.verify = verify
        self.progress = progress
        self.result = RestoreResult()
        self.is_root = os.geteuid() == 0
        self._lock = threading.Lock()
        self.pool = ThreadPoolExecutor(repo.parallelism, thread_name_prefix="restore")
        self.slots = threading.BoundedSemaphore(4 * repo.parallelism)
        self.hardlinks: dict[tuple[int, int], Future[str | None]] = {}
        self.dirs: list[tuple[str, Node]] = []
        # pack id → single-blob files to restore from it: (location, blob id, node, out, path)
        self.by_pack: dict[str, list[tuple[BlobLocation, bytes, Node, str, str]]] = {}

    def _fail(self, path: str, err: BaseException) -> None:
        msg = err.message if isinstance(err, RecoverctlError) else str(err)
        entry = {"path": path, "error": msg, "damaged": "yes" if isinstance(err, DecryptError) else "no"}
        if isinstance(err, ObjectNotFound) and "pack" in err.details:
            entry["missing_pack"] = str(err.details["pack"])  # gone under us: Repository.read_pack
        with self._lock:
            self.result.errors.append(entry)
        self.progress.warn(f"{path}: {msg}")

    def run(self, tree_id: str) -> RestoreResult:
        started = time.monotonic()
        os.makedirs(self.target, exist_ok=True)
        futures: list[Future[Any]] = []
        try:
            self._restore_dir(tree_id, "", self.target, futures)
            for pack, items in self.by_pack.items():
                futures.append(self.pool.submit(self._restore_batch, pack, items))
            for f in futures:
                f.result()
        finally:
            self.pool.shutdown(wait=True)
        for path, node in reversed(self.dirs):
            try:
                _apply_meta(path, node, self.is_root)
            except OSError as e:
                self._fail(path, e)
        self.result.duration_s = time.monotonic() - started
        return self.result

    def _restore_dir(self, tree_id: str, rel: str, dest: str, futures: list[Future[Any]]) -> None:
        nodes = self.repo.load_tree(bytes.fromhex(tree_id))["nodes"]
        if self.delta:
            self._remove_extraneous(dest, rel, {n["name"] for n in nodes})
        for node in nodes:
            path = f"{rel}/{node['name']}"
            restore, descend = _selected(path, self.include)
            if not descend:
                continue
            out = os.path.join(dest, node["name"])
            t = node["type"]
            if t == "dir":
                try:
                    os.makedirs(out, exist_ok=True)
                except OSError as e:
                    self._fail(path, e)
                    continue
                if restore:
                    self.dirs.append((out, node))
                    with self._lock:
                        self.result.dirs += 1
                if node.get("subtree"):
                    self._restore_dir(node["subtree"], path, out, futures)
                continue
            if not restore:
                continue
            if t == "file":
                if self._batch(node, out, path):
                    continue
                key = (node.get("dev", 0), node.get("inode", 0))
                if node.get("links", 1) > 1 and key in self.hardlinks:
                    first = self.hardlinks[key]
                    futures.append(self.pool.submit(self._link, first, out, path))
                    continue
                self.slots.acquire()
                fut = self.pool.submit(self._file, node, out, path)
                if node.get("links", 1) > 1:
                    self.hardlinks[key] = fut
                futures.append(fut)
            else:
                try:
                    self._special(node, out)
                except OSError as e:
                    self._fail(path, e)

    def _batch(self, node: Node, out: str, path: str) -> bool:
        """Queue a file of one blob for its pack's batch; return False to restore it on its own."""
        content: list[str] = node.get("content") or []
        if len(content) != 1 or self.delta or node.get("links", 1) > 1:
            return False
        bid = bytes.fromhex(content[0])
        loc = self.repo.index.get(bid)
        if loc is None:
            return False  # restored on its own, which reports the missing blob
        self.by_pack.setdefault(loc.pack, []).append((loc, bid, node, out, path))
        return True

    def _restore_batch(self, pack: str, items: list[tuple[BlobLocation, bytes, Node, str, str]]) -> None:
        """Restore single-blob files from one pack: read neighbouring blobs in one request each."""
        items.sort(key=lambda item: item[0].offset)
        start = 0
        while start < len(items):
            first = items[start][0]
            end = first.offset + first.length
            stop = start + 1
            while stop < len(items):
                loc = items[stop][0]
                if loc.offset - end > BATCH_GAP or loc.offset + loc.length - first.offset > MAX_READ:
                    break
                end = max(end, loc.offset + loc.length)
                stop += 1
            run = items[start:stop]
            start = stop
            try:
                data = memoryview(self.repo.read_pack(pack, first.offset, end - first.offset))
            except RecoverctlError as e:
                for _loc, _bid, _node, _out, path in run:
                    self._fail(path, e)
                continue
            for loc, bid, node, out, path in run:
                try:
                    begin = loc.offset - first.offset
                    plain = self.repo.open_blob(bid, loc.type, data[begin : begin + loc.length], pack)
                    written = self._write_new(node, out, plain)
                except (RecoverctlError, OSError) as e:
                    self._fail(path, e)
                    continue
                self._count_file(written)

    def _count_file(self, written: int) -> None:
        with self._lock:
            self.result.files += 1
            self.result.bytes += written
            counters = {"files_restored": self.result.files, "bytes_restored": self.result.bytes}
        self.progress.update(counters)

    def _remove_extraneous(self, dest: str, rel: str, keep: set[str]) -> None:
        import shutil

        try:
            existing = os.listdir(dest)
        except FileNotFoundError:
            return
        for name in existing:
            if name in keep:
                continue
            path = f"{rel}/{name}"
            restore, _ = _selected(path, self.include)
            if not restore:
                continue
            full = os.path.join(dest, name)
            if os.path.isdir(full) and not os.path.islink(full):
                shutil.rmtree(full)
            else:
                os.unlink(full)
            with self._lock:
                self.result.removed += 1

    def _link(self, first: Future[str | None], out: str, path: str) -> None:
        src = first.result()
        if src is None:
            return
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(out)
            os.link(src, out)
        except OSError as e:
            self._fail(path, e)

    def _special(self, node: Node, out: str) -> None:
        t = node["type"]
        with contextlib.suppress(FileNotFoundError):
            if os.path.isdir(out) and not os.path.islink(out):
                os.rmdir(out)
            else:
                os.unlink(out)
        if t == "symlink":
            os.symlink(node.get("target", ""), out)
        elif t == "fifo":
            os.mkfifo(out, node.get("mode", 0o600))
        elif t in ("chardev", "blockdev"):
            if not self.is_root:
                return
            import stat as st

            kind = st.S_IFCHR if t == "chardev" else st.S_IFBLK
            os.mknod(out, kind | node.get("mode", 0o600), node.get("rdev", 0))
        elif t == "socket":
            return
        _apply_meta(out, node, self.is_root)

    def _unchanged_on_disk(self, node: Node, out: str) -> bool:
        try:
            st = os.lstat(out)
        except FileNotFoundError:
            return False
        if not os.path.isfile(out) or os.path.islink(out) or st.st_size != node.get("size"):
            return False
        index = self.repo.load_index()
        with open(out, "rb") as f:
            for hex_id in node.get("content", []):
                loc = index.get(bytes.fromhex(hex_id))
                if loc is None:
                    return False
                if self.repo.cipher.blob_id(f.read(loc.raw_length)) != bytes.fromhex(hex_id):
                    return False
        return True

    def _file(self, node: Node, out: str, path: str) -> str | None:
        try:
            if self.delta and self._unchanged_on_disk(node, out):
                _apply_meta(out, node, self.is_root)
                with self._lock:
                    self.result.skipped += 1
                return out
            content = node.get("content", [])
            if len(content) <= 1 and not os.path.lexists(out):
                written = self._write_small(node, out, content)
            else:
                written = self._write_via_temp(node, out, iter_content(self.repo, content))
            self._count_file(written)
            return out
        except (RecoverctlError, OSError) as e:
            self._fail(path, e)
            return None
        finally:
            self.slots.release()

    def _write_small(self, node: Node, out: str, content: list[str]) -> int:
        """Write a file of at most one blob straight to its name: the blob is authenticated before
        the file is created, so wrong bytes can never appear under the name."""
        return self._write_new(node, out, b"".join(iter_content(self.repo, content)))

    def _write_new(self, node: Node, out: str, data: bytes) -> int:
        """Create `out` holding authenticated `data` (via a temporary name when it exists)."""
        try:
            fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return self._write_via_temp(node, out, (data,))
        try:
            # Straight on the descriptor: a file object per small file costs more than its write.
            try:
                if node.get("sparse"):
                    with os.fdopen(fd, "wb", closefd=False) as f:
                        _write_sparse(f, data)
                        f.truncate(len(data))
                else:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view) :]
                if self.verify:
                    self._verify_written(out, node)
                _apply_meta(fd, node, self.is_root)
            finally:
                os.close(fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(out)
            raise
        return len(data)

    def _write_via_temp(self, node: Node, out: str, chunks: Iterable[bytes]) -> int:
        """Write to a temporary name and rename into place once every blob was authenticated."""
        tmp = os.path.join(os.path.dirname(out), f".{node['name'][:100]}.rctmp-{os.urandom(4).hex()}")
        written = 0
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                sparse = bool(node.get("sparse"))
                for data in chunks:
                    if sparse:
                        _write_sparse(f, data)
                    else:
                        f.write(data)
                    written += len(data)
                if sparse:
                    f.truncate(written)
            if self.verify:
                self._verify_written(tmp, node)
            _apply_meta(tmp, node, self.is_root)
            os.replace(tmp, out)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return written

    def _verify_written(self, tmp: str, node: Node) -> None:
        index = self.repo.load_index()
        with open(tmp, "rb") as f:
            for hex_id in node.get("content", []):
                loc = index.get(bytes.fromhex(hex_id))
                assert loc is not None
                if self.repo.cipher.blob_id(f.read(loc.raw_length)) != bytes.fromhex(hex_id):
                    raise DecryptError(f"restored bytes of '{node['name']}' differ from the snapshot")


_HOLE = 64 * 1024
_ZEROS = bytes(_HOLE)


def _write_sparse(f: Any, data: bytes) -> None:
    """Write data, seeking over all-zero 64 KiB pieces so they stay holes."""
    mv = memoryview(data)
    for i in range(0, len(mv), _HOLE):
        piece = mv[i : i + _HOLE]
        if piece == _ZEROS[: len(piece)]:
            f.seek(len(piece), os.SEEK_CUR)
        else:
            f.write(piece)


def _apply_meta(path: str | int, node: Node, is_root: bool) -> None:
    """Apply ownership (as root), mode, xattrs and times to a restored entry, given its path or an
    open descriptor of a regular file (no path lookups then)."""
    link = node["type"] == "symlink"
    by_path = isinstance(path, str)
    if is_root:
        with contextlib.suppress(OSError):
            if isinstance(path, str):
                os.lchown(path, node.get("uid", -1), node.get("gid", -1))
            else:
                os.chown(path, node.get("uid", -1), node.get("gid", -1))
    if not link:
        os.chmod(path, node.get("mode", 0o644))
        for name, value in (node.get("xattrs") or {}).items():
            try:
                if by_path:
                    os.setxattr(path, name, base64.b64decode(value), follow_symlinks=False)
                else:
                    os.setxattr(path, name, base64.b64decode(value))
            except OSError as e:
                if e.errno not in (errno.ENOTSUP, errno.EPERM, errno.EACCES):
                    raise
    mtime = int(node.get("mtime_ns") or 0)
    times = (int(node.get("atime_ns") or mtime), mtime)
    with contextlib.suppress(NotImplementedError, OSError):
        if by_path:
            os.utime(path, ns=times, follow_symlinks=not link)
        else:
            os.utime(path, ns=times)


def restore_snapshot(
    repo: Repository,
    snapshot_id: str,
    target_dir: str,
    include: list[str] | None = None,
    delta: bool = False,
    verify: bool = False,
    progress: Progress | None = None,
) -> RestoreResult:
    """Restore a snapshot (id, prefix or 'latest') into `target_dir`; return counts and per-file errors.

    `include` restricts to paths ('/a/b') in the snapshot. With `delta`, files whose content
    already matches are kept and entries not in the snapshot are removed. Files whose blobs
    fail authentication are not written (listed in `errors` with damaged=yes); the caller decides
    the exit code. Raise NotFoundError for an unknown snapshot.
    """
    snap = repo.resolve_snapshot(snapshot_id)
    repo.load_index()
    r = _Restorer(repo, target_dir, include, delta, verify, progress or Progress())
    return r.run(snap.tree)
