"""The content ids of one file, collected in order while its chunks are sealed in the background."""

from __future__ import annotations

from concurrent.futures import Future


class ContentIds:
    """A file's content ids in chunk order: each appended item is an id (a chunk kept or stored
    already) or the future of a chunk being sealed.

    A done future is replaced by its id as the next item is appended. Holding every future until
    the file ends cost ~1.6 KiB per chunk (a Future carries a Condition, a lock and a deque): 13 MiB
    for a 1 GiB relation file at 128 KiB chunks, per file being read, which made a backup's peak
    memory grow with its largest files. An id is ~110 bytes.
    """

    def __init__(self) -> None:
        self._items: list[str | Future[str]] = []
        self._pending = 0  # items before this index are ids

    def append(self, item: str | Future[str]) -> None:
        """Add the next chunk's id or future; raise the error of a done future that failed."""
        items = self._items
        items.append(item)
        i = self._pending
        while i < len(items):
            current = items[i]
            if isinstance(current, Future):
                if not current.done():
                    break
                items[i] = current.result()
            i += 1
        self._pending = i

    def result(self) -> list[str]:
        """Wait for the chunks still being sealed; return every id in order."""
        return [r if isinstance(r, str) else r.result() for r in self._items]

    def cancel(self) -> None:
        """Cancel the chunks not yet being sealed (the file failed or was abandoned)."""
        for r in self._items[self._pending :]:
            if isinstance(r, Future):
                r.cancel()
