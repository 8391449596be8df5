"""Page patches: a fixed-boundary chunk stored as an earlier snapshot's blob plus the pages that
changed since, so a sparse change stores (and a backup reads) only its pages, not whole chunks.

A file node cut at fixed boundaries (`block_size`) may carry ``page_size`` and ``patches``: a list
of ``[chunk index, page mask, patch blob id]`` sorted by chunk index. ``content[chunk index]`` is
then the base blob; bit p of the mask names page p of the chunk; the patch blob's plaintext is
the named pages in order, ``page_size`` bytes each. The chunk's bytes are the base's with those
pages replaced. Every snapshot still restores on its own: base and patch are both its blobs.

A writer keeps at most `MAX_PATCH_PAGES` pages in one chunk's patch (it reads the chunk whole
again past that), so a restore reads at most 1.25 chunks per chunk. Repository format 3 and
later only: an older client would not know that the listed chunk is not the whole story.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, NamedTuple

from recoverctl.repo.crypto import DecryptError

if TYPE_CHECKING:
    from recoverctl.repo.tree import Node
# The first repository format whose file nodes may hold patches (older clients refuse it).
PATCH_FORMAT_VERSION = 3
# A chunk whose patch would name more pages than this is stored whole again.
PATCH_SHARE = 4  # 1 / PATCH_SHARE of a chunk's pages


class Patch(NamedTuple):
    chunk: int
    mask: int
    blob: str


def max_patch_pages(block_size: int, page_size: int) -> int:
    """Return how many pages of a chunk a patch may name before the chunk is stored whole."""
    return block_size // page_size // PATCH_SHARE


def node_patches(node: Node) -> dict[int, Patch]:
    """Given a (validated) file node, return its patches by chunk index, in chunk order."""
    return {int(c): Patch(int(c), int(m), b) for c, m, b in node.get("patches") or ()}


def blob_ids(node: Node) -> list[str]:
    """Given a file node, return every blob id it refers to: its content, then its patch blobs."""
    content: list[str] = node.get("content") or []
    patches = node.get("patches")
    return content + [p[2] for p in patches] if patches else list(content)


def content_layout(node: Node) -> Node:
    """Given a file node, return the fields that say how its content is stored (for a node that
    keeps that content with new metadata)."""
    return {k: node[k] for k in ("content", "block_size", "page_size", "patches") if k in node}


def mask_runs(mask: int) -> Iterator[tuple[int, int]]:
    """Given a page mask, yield (first page, page count) of each run of consecutive set bits."""
    page = 0
    while mask:
        if not mask & 1:
            skip = (mask & -mask).bit_length() - 1
            mask >>= skip
            page += skip
            continue
        run = (~mask & (mask + 1)).bit_length() - 1  # trailing ones
        yield page, run
        mask >>= run
        page += run


def patch_misfit(patch: Patch, page_size: int, base_length: int, pages_length: int) -> str | None:
    """Given a patch, its file's page size and the lengths of its base and of its patch blob,
    return why they do not belong together, or None when the patch fits its base."""
    count = patch.mask.bit_count()
    if pages_length != count * page_size:
        return (
            f"patch blob {patch.blob[:16]} holds {pages_length} bytes, not the {count} page(s) of "
            f"{page_size} bytes its file names for chunk {patch.chunk}"
        )
    if patch.mask.bit_length() * page_size > base_length:
        return (
            f"patch blob {patch.blob[:16]} names a page past the end of chunk {patch.chunk} "
            f"({base_length} bytes)"
        )
    return None


def apply_patch(base: bytes, patch: Patch, page_size: int, pages: bytes) -> bytes:
    """Given a chunk's base bytes, its patch and the patch blob's plaintext, return the chunk.

    Raise DecryptError when the patch does not fit (`patch_misfit`): the node and its blobs do not
    belong together.
    """
    misfit = patch_misfit(patch, page_size, len(base), len(pages))
    if misfit is not None:
        raise DecryptError(misfit)
    out = bytearray(base)
    at = 0
    for first, n in mask_runs(patch.mask):
        size = n * page_size
        out[first * page_size : first * page_size + size] = pages[at : at + size]
        at += size
    return bytes(out)
