"""BlobSaver: dedup → seal → pack → upload, in parallel with bounded memory.

Blobs already in the index (or being written by another thread) are skipped. At most one finished
pack per uploader waits or is uploaded, each streamed from its spool file (`Storage.put_file`):
the sealer that fills a pack waits for an upload slot, and holds a gate meanwhile that every other
sealer passes before adding a blob, so a slow storage stalls the sealers instead of piling up full
packs (each is 16 MiB of temporary disk). An index file is written every few packs, so an
interrupted backup leaves packs that the next backup finds in the index (and `index_orphan_packs`
catches the rest).
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field
from typing import Any, Protocol

from recoverctl.repo.pack import DATA, TREE, FinishedPack, PackBuilder, PackEntry, blob_aad, pack_key
from recoverctl.repo.repository import Repository

_STOP = object()


@dataclass
class SaveStats:
    blobs_added: int = 0
    bytes_added: int = 0
    bytes_added_stored: int = 0
    packs_uploaded: int = 0
    bytes_uploaded: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


class BlobSaver:
    """Save blobs into `repo`; use as a context manager, or call `flush()` before writing a snapshot."""

    def __init__(self, repo: Repository, *, index_every: int = 8, stats: SaveStats | None = None):
        self.repo = repo
        self.cipher = repo.cipher
        self.stats = stats or SaveStats()
        self.index_every = index_every
        self._lock = threading.Lock()
        self._pending: set[bytes] = set()
        self._builders = {t: PackBuilder(self.cipher, repo.pack_size) for t in (DATA, TREE)}
        self._unindexed: list[tuple[str, int, list[PackEntry]]] = []
        uploaders = max(2, repo.parallelism // 2)
        self._pack_slots = threading.Semaphore(uploaders)  # finished packs in memory
        self._gate = threading.Lock()  # held while a full pack waits for a slot
        self._queue: queue.Queue[Any] = queue.Queue()  # bounded by _pack_slots
        self._error: BaseException | None = None
        repo.load_index()
        self._threads = [
            threading.Thread(target=self._uploader, name=f"pack-upload-{i}", daemon=True)
            for i in range(uploaders)
        ]
        for t in self._threads:
            t.start()
        self._closed = False

    def __enter__(self) -> BlobSaver:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is None:
            self.flush()
        self.close()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def save(self, blob_type: int, data: bytes | memoryview) -> tuple[bytes, bool]:
        """Return (blob id, whether it was new); raise the first upload failure."""
        self._raise_if_failed()
        bid = self.cipher.blob_id(data)
        with self._lock:
            if bid in self.repo.index or bid in self._pending:
                return bid, False
            self._pending.add(bid)
        head, ct = self.cipher.seal_parts(data, blob_aad(blob_type, bid), compress=True)
        full: PackBuilder | None = None
        with self._gate:
            pass  # wait while a full pack waits for an upload slot
        with self._lock:
            builder = self._builders[blob_type]
            builder.add(blob_type, bid, head, len(data), ct)
            self.stats.blobs_added += 1
            self.stats.bytes_added += len(data)
            self.stats.bytes_added_stored += len(head) + len(ct)
            if builder.full:
                full = builder
                self._builders[blob_type] = PackBuilder(self.cipher, self.repo.pack_size)
        if full is not None:
            self._enqueue(full)
        return bid, True

    def _enqueue(self, builder: PackBuilder) -> None:
        with self._gate:
            self._pack_slots.acquire()  # released by the uploader once the pack is stored (or failed)
        try:
            pack = builder.finish()
        except BaseException:
            self._pack_slots.release()
            raise
        self._queue.put(pack)
        self._raise_if_failed()

    def _uploader(self) -> None:
        while True:
            item = self._queue.get()
            stop = item is _STOP
            try:
                if stop:
                    return
                pack: FinishedPack = item
                if self._error is not None:
                    pack.close()
                    continue  # keep draining so producers never block on a dead pipeline
                pid, size, entries = pack.id, pack.size, pack.entries
                try:
                    self.repo.storage.put_file(pack_key(pid), pack.body, size)
                except BaseException as e:
                    self._error = self._error or e
                    continue
                finally:
                    pack.close()  # the spool file goes before its slot is handed on
                self.repo.index.add_pack(pid, size, entries)
                write: list[tuple[str, int, list[PackEntry]]] = []
                with self._lock:
                    self._pending.difference_update(e.id for e in entries)
                    self.stats.packs_uploaded += 1
                    self.stats.bytes_uploaded += size
                    self._unindexed.append((pid, size, entries))
                    if len(self._unindexed) >= self.index_every:
                        write, self._unindexed = self._unindexed, []
                if write:
                    try:
                        self.repo.write_index(write)
                    except BaseException as e:
                        self._error = self._error or e
            finally:
                if not stop:
                    self._pack_slots.release()
                self._queue.task_done()

    def flush(self) -> None:
        """Upload partly filled packs and write the index for everything uploaded; raise failures."""
        self._raise_if_failed()
        with self._lock:
            builders = [b for b in self._builders.values() if len(b)]
            self._builders = {t: PackBuilder(self.cipher, self.repo.pack_size) for t in (DATA, TREE)}
        for b in builders:
            self._enqueue(b)
        self._queue.join()
        self._raise_if_failed()
        with self._lock:
            write, self._unindexed = self._unindexed, []
        if write:
            self.repo.write_index(write)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for _ in self._threads:
            self._queue.put(_STOP)
        for t in self._threads:
            t.join()


class Saver(Protocol):
    stats: SaveStats

    def save(self, blob_type: int, data: bytes | memoryview) -> tuple[bytes, bool]: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


class DryRunSaver:
    """Computes ids and what would be added, stores nothing."""

    def __init__(self, repo: Repository):
        self.repo = repo
        self.stats = SaveStats()
        self._seen: set[bytes] = set()
        self._lock = threading.Lock()
        repo.load_index()

    def save(self, blob_type: int, data: bytes | memoryview) -> tuple[bytes, bool]:
        bid = self.repo.cipher.blob_id(data)
        with self._lock:
            if bid in self.repo.index or bid in self._seen:
                return bid, False
            self._seen.add(bid)
            self.stats.blobs_added += 1
            self.stats.bytes_added += len(data)
        return bid, True

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass
