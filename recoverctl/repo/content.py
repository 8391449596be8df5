"""Reading a snapshot back, blob by blob: tree nodes, the node at a path, a file's content.

A file's blobs are fetched in runs stored back to back in one pack, one ranged read per run.
Chunks stored as page patches (repo/page_patch.py) are put together here, so every reader of a
file's bytes goes through `iter_file`, and every check of a file on disk through `first_difference`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from recoverctl.errors import NotFoundError
from recoverctl.repo.crypto import DecryptError
from recoverctl.repo.index import BlobLocation, Index
from recoverctl.repo.page_patch import Patch, apply_patch, mask_runs, node_patches, patch_misfit
from recoverctl.repo.repository import Repository
from recoverctl.repo.snapshot import Snapshot
from recoverctl.repo.tree import InvalidTreeError, Node

MAX_READ = 16 * 1024 * 1024
# Patch blobs are read beside their bases, so their runs are kept short.
PATCH_READ = 2 * 1024 * 1024
# A restore reads a file's packs in stretches of at most this much: below glibc's mmap threshold
# (set at the entry points), so each read reuses heap memory instead of faulting in fresh pages,
# and at a few hundred reads per GiB still one request per many blobs.
SCATTER_READ = 2 * 1024 * 1024
# Neighbouring single-blob files in a pack are fetched in one read when the bytes between them
# (blobs of other files) are at most this much: reading them costs less than another request.
BATCH_GAP = 1024 * 1024

T = TypeVar("T")


def tree_nodes(repo: Repository, tree_id: str, directory: str) -> list[Node]:
    """Return the nodes of the tree at `directory` ('/a/b'); an InvalidTreeError names the directory."""
    try:
        nodes: list[Node] = repo.load_tree(bytes.fromhex(tree_id))["nodes"]
    except InvalidTreeError as e:
        raise e.locate(directory=directory) from None
    return nodes


@contextlib.contextmanager
def naming(snap: Snapshot) -> Iterator[None]:
    """Name `snap` in an InvalidTreeError raised while reading its trees."""
    try:
        yield
    except InvalidTreeError as e:
        raise e.locate(snapshot=snap.short_id) from None


def walk(repo: Repository, tree_id: str, prefix: str = "") -> Iterator[tuple[str, Node]]:
    """Yield (path, node) for every node below a tree, depth first, parents before children."""
    for node in tree_nodes(repo, tree_id, prefix):
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
        with naming(snap):
            nodes = tree_nodes(repo, node["subtree"], "/" + "/".join(parts[:i]))
        found = [n for n in nodes if n["name"] == part]
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


def _runs(
    repo: Repository, content: list[str], max_read: int = MAX_READ
) -> Iterator[list[tuple[bytes, BlobLocation]]]:
    """Group a file's blobs into runs stored back to back in one pack, so one ranged read fetches a run."""
    run: list[tuple[bytes, BlobLocation]] = []
    index = repo.load_index()
    for hex_id in content:
        bid = bytes.fromhex(hex_id)
        loc = _located(index.get(bid), hex_id)
        if run:
            last = run[-1][1]
            size = run[-1][1].offset + last.length - run[0][1].offset
            if loc.pack != last.pack or loc.offset != last.offset + last.length or size > max_read:
                yield run
                run = []
        run.append((bid, loc))
    if run:
        yield run


def _located(loc: BlobLocation | None, hex_id: str) -> BlobLocation:
    if loc is None:
        raise NotFoundError(
            f"blob {hex_id[:16]} is missing from the index",
            hint="run 'recoverctl verify' and 'recoverctl repair index'",
        )
    return loc


def pack_stretches(
    members: Iterable[tuple[BlobLocation, T]], gap: int = BATCH_GAP, max_read: int = MAX_READ
) -> Iterator[tuple[str, int, int, list[tuple[BlobLocation, T]]]]:
    """Given blob locations with a tag each, yield (pack, offset, length, members): one ranged read
    each, in pack and offset order, covering members at most `gap` bytes apart (the blobs between
    them, of other files, cost less to read than another request) and at most `max_read` long."""
    by_pack: dict[str, list[tuple[BlobLocation, T]]] = {}
    for member in members:
        by_pack.setdefault(member[0].pack, []).append(member)
    for pack, items in by_pack.items():
        items.sort(key=lambda item: item[0].offset)
        start = 0
        while start < len(items):
            first = items[start][0]
            end = first.offset + first.length
            stop = start + 1
            while stop < len(items):
                loc = items[stop][0]
                if loc.offset - end > gap or loc.offset + loc.length - first.offset > max_read:
                    break
                end = max(end, loc.offset + loc.length)
                stop += 1
            yield pack, first.offset, end - first.offset, items[start:stop]
            start = stop


def read_scattered(repo: Repository, node: Node, write: Callable[[int, bytes | memoryview], None]) -> int:
    """Given a file node, hand each piece of its bytes to `write(offset, data)`, reading its blobs
    pack by pack (`pack_stretches`) rather than in file order; return the file's length.

    A file's chunks are sealed in parallel, so consecutive chunks are rarely neighbours in a pack:
    in file order a 1 GiB relation file took ~5,000 reads (as many requests to an object store);
    by pack, a few dozen. A blob used at several offsets (zero pages) is opened once. Page patches
    are written after every base. Raise NotFoundError for a blob missing from the index and
    DecryptError for a damaged one or a patch that does not fit its base, possibly after some
    writes: the caller writes to a file it discards on failure.
    """
    index = repo.load_index()
    content: list[str] = node.get("content") or []
    at: dict[bytes, list[int]] = {}
    starts: list[int] = []  # of each chunk
    bases: dict[bytes, BlobLocation] = {}
    offset = 0
    for hex_id in content:
        bid = bytes.fromhex(hex_id)
        loc = bases.get(bid) or _located(index.get(bid), hex_id)
        bases[bid] = loc
        at.setdefault(bid, []).append(offset)
        starts.append(offset)
        offset += loc.raw_length
    patches = node_patches(node)
    page_size = int(node.get("page_size") or 0)
    pages: dict[bytes, list[Patch]] = {}  # patch blob: the patches it holds the pages of
    located: dict[bytes, BlobLocation] = {}
    for p in patches.values():
        bid = bytes.fromhex(p.blob)
        located[bid] = located.get(bid) or _located(index.get(bid), p.blob)
        pages.setdefault(bid, []).append(p)
    for bid, plain in _open_by_pack(repo, bases):
        if len(plain) != bases[bid].raw_length:  # the offsets come from the index's lengths
            raise DecryptError(f"blob {bid.hex()[:16]} is not as long as the index says")
        for where in at[bid]:
            write(where, plain)
    for bid, opened in _open_by_pack(repo, located):
        view = memoryview(opened)
        for p in pages[bid]:
            base_length = bases[bytes.fromhex(content[p.chunk])].raw_length  # checked above
            misfit = patch_misfit(p, page_size, base_length, len(view))
            if misfit is not None:
                raise DecryptError(misfit)
            used = 0
            for first, n in mask_runs(p.mask):
                write(starts[p.chunk] + first * page_size, view[used : used + n * page_size])
                used += n * page_size
    return offset


def _open_by_pack(repo: Repository, blobs: dict[bytes, BlobLocation]) -> Iterator[tuple[bytes, bytes]]:
    """Yield (id, verified plaintext) of each blob, read pack by pack (`pack_stretches`)."""
    stretches = pack_stretches(((loc, bid) for bid, loc in blobs.items()), max_read=SCATTER_READ)
    for pack, start, length, members in stretches:
        data = memoryview(repo.read_pack(pack, start, length))
        for loc, bid in members:
            begin = loc.offset - start
            yield bid, repo.open_blob(bid, loc.type, data[begin : begin + loc.length], pack)


def iter_content(repo: Repository, content: list[str], max_read: int = MAX_READ) -> Iterator[bytes]:
    """Yield the verified plaintext of each blob of a list, in order; raise DecryptError on damage."""
    for run in _runs(repo, content, max_read):
        first = run[0][1]
        last = run[-1][1]
        data = memoryview(repo.read_pack(first.pack, first.offset, last.offset + last.length - first.offset))
        for bid, loc in run:
            start = loc.offset - first.offset
            yield repo.open_blob(bid, loc.type, data[start : start + loc.length], loc.pack)


def iter_file(repo: Repository, node: Node) -> Iterator[bytes]:
    """Given a file node, yield its bytes chunk by chunk (page patches applied); raise
    DecryptError on a damaged blob or a patch that does not fit its chunk."""
    content: list[str] = node.get("content") or []
    patches = node_patches(node)
    if not patches:
        yield from iter_content(repo, content)
        return
    page_size = int(node["page_size"])
    # Bases and patches are read as two streams, each in its own runs: interleaving them in one
    # list would break every run at each patch, one read per blob.
    pages = iter_content(repo, [p.blob for p in patches.values()], PATCH_READ)
    for i, base in enumerate(iter_content(repo, content)):
        patch = patches.get(i)
        yield base if patch is None else apply_patch(base, patch, page_size, next(pages))


@dataclass(frozen=True)
class Difference:
    """Where a file first differs from its node: chunk index, byte offset, and how."""

    chunk: int
    offset: int
    why: str


# Patched chunks compared together: their blobs are fetched pack by pack, as a restore does, and
# their bytes on disk (128 KiB each) are held until then.
COMPARE_GROUP = 64


def first_difference(repo: Repository, node: Node, read: Callable[[int, int], bytes]) -> Difference | None:
    """Given a file node and `read(offset, length)` of a file's bytes, return where the file first
    differs from the node's content, or None when it starts with exactly that content.

    Whole chunks are compared by their keyed hash, without reading the repository. Patched chunks
    are put together from their blobs, fetched for `COMPARE_GROUP` chunks at a time pack by pack
    (one request per chunk would be two per patched chunk against an object store); raise
    DecryptError when those blobs are damaged.
    """
    index = repo.load_index()
    patches = node_patches(node)
    page_size = int(node.get("page_size") or 0)
    pending: list[_Patched] = []
    offset = 0
    for n, hex_id in enumerate(node.get("content") or ()):
        bid = bytes.fromhex(hex_id)
        loc = index.get(bid)
        found: Difference | None = None
        if loc is None:
            found = Difference(n, offset, f"chunk {n} ({hex_id[:16]}) is not in the index")
        else:
            data = read(offset, loc.raw_length)
            patch = patches.get(n)
            if patch is not None:
                pending.append(_Patched(n, offset, bid, loc, patch, data))
            elif len(data) != loc.raw_length or repo.cipher.blob_id(data) != bid:
                found = Difference(n, offset, f"chunk {n} at byte {offset} differs")
        if found is not None or len(pending) >= COMPARE_GROUP:
            earlier = _first_patched_difference(repo, index, pending, page_size)
            pending = []
            if earlier is not None or found is not None:
                return earlier or found
        assert loc is not None
        offset += loc.raw_length
    return _first_patched_difference(repo, index, pending, page_size)


@dataclass(frozen=True)
class _Patched:
    """A patched chunk waiting for its comparison: index, offset, base, patch, bytes on disk."""

    chunk: int
    offset: int
    base: bytes
    base_at: BlobLocation
    patch: Patch
    data: bytes


def _first_patched_difference(
    repo: Repository, index: Index, chunks: list[_Patched], page_size: int
) -> Difference | None:
    """Return the first of `chunks` whose bytes on disk are not its base with its patch applied."""
    if not chunks:
        return None
    patch_blobs = {
        bytes.fromhex(c.patch.blob): _located(index.get(bytes.fromhex(c.patch.blob)), c.patch.blob)
        for c in chunks
    }
    pages = dict(_open_by_pack(repo, patch_blobs))
    differ: list[_Patched] = []
    by_base: dict[bytes, list[_Patched]] = {}
    for c in chunks:
        by_base.setdefault(c.base, []).append(c)
    for bid, base in _open_by_pack(repo, {c.base: c.base_at for c in chunks}):
        for c in by_base[bid]:
            if c.data != apply_patch(base, c.patch, page_size, pages[bytes.fromhex(c.patch.blob)]):
                differ.append(c)
    if not differ:
        return None
    first = min(differ, key=lambda c: c.chunk)
    return Difference(first.chunk, first.offset, f"chunk {first.chunk} at byte {first.offset} differs")


def holds(repo: Repository, fd: int, node: Node) -> bool:
    """Whether the open file `fd` starts with exactly the content of file node `node`."""
    return first_difference(repo, node, lambda offset, n: os.pread(fd, n, offset)) is None


def open_file(repo: Repository, snap: Snapshot, path: str) -> Iterator[bytes]:
    """Yield the bytes of one file in a snapshot (e.g. a stored stream); raise NotFoundError."""
    node = find_node(repo, snap, path)
    if node["type"] != "file":
        raise NotFoundError(f"'{path}' in snapshot {snap.short_id} is a {node['type']}, not a file")
    return iter_file(repo, node)
