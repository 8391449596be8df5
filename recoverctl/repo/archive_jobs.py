"""What the archiver's walker hands on: a file's job (content known, or being read by the readers),
a directory's job (its entries, finished into a tree in post-order), and the run's counters."""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from recoverctl.repo.tree import Node


@dataclass
class Counters:
    files_new: int = 0
    files_changed: int = 0
    files_unmodified: int = 0
    dirs: int = 0
    bytes_read: int = 0
    bytes_total: int = 0
    bytes_unmodified: int = 0  # of unchanged files, not read: done for the progress
    files_done: int = 0


class FileJob:
    """A file node and its content ids: known (`content`) or being read (`future`)."""

    def __init__(self, node: Node, future: Future[list[str] | None] | None, content: list[str] | None = None):
        self.node = node
        self.future = future
        self.content = content

    def result(self) -> list[str] | None:
        """Return the content ids (None: the file is not in the snapshot), waiting for the read."""
        return self.future.result() if self.future is not None else self.content


class DirJob:
    def __init__(self, node: Node | None, relpath: str):
        self.node = node  # None for the root
        self.relpath = relpath
        self.entries: list[Node | FileJob | DirJob] = []
        self.tree_id: str | None = None
        # The parent snapshot's tree of this directory: reused as is when the nodes come out equal.
        self.parent_tree: str | None = None
        self.parent_nodes: list[Node] | None = None

    def wait_files(self) -> None:
        """Block until every file below this directory has been read (or given up on)."""
        for entry in self.entries:
            if isinstance(entry, FileJob):
                entry.result()
            elif isinstance(entry, DirJob):
                entry.wait_files()


# A subdirectory found by the walker: its index in the entries, path, relative path, node,
# selection below it and in-memory extras below it.
Subdir = tuple[int, str, str, Node, dict[str, Any] | None, dict[str, Any]]
