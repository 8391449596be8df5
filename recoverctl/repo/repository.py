"""Open, create and read a repository: config, keys, index, blobs, trees, snapshots, objects.

See docs/repository-format.md for the on-storage layout. A Repository is shared by threads:
reads are thread-safe; writes of blobs go through a BlobSaver (recoverctl.repo.saver).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from typing import Any, BinaryIO

from recoverctl.errors import (
    NotFoundError,
    ObjectNotFound,
    UsageError,
    VerificationError,
)
from recoverctl.repo import crypto
from recoverctl.repo.crypto import Cipher, DecryptError, KeySlotError, MasterKey
from recoverctl.repo.index import Index, document
from recoverctl.repo.keys import (
    FormatUpgrade,
    canonical_config,
    key_rows,
    read_slot,
    unlock_master,
    write_key,
)
from recoverctl.repo.pack import (
    HeaderTooShort,
    PackEntry,
    blob_aad,
    pack_key,
    parse_header,
)
from recoverctl.repo.snapshot import Snapshot
from recoverctl.repo.tree import parse_tree
from recoverctl.storage.base import ObjectInfo, Storage

# Version 2 names every key slot by its content hash (KeySlot.id), so a slot copied under another
# name is refused; version 1 named them at random. Everything else is the same in both, and the
# checks that need no format change (snapshot and index names are the SHA-256 of their bytes,
# single objects carry their key in the AAD) apply to both. Version 3 file nodes may store a chunk
# as page patches (repo/page_patch.py), which an older client would restore wrongly, so it must
# refuse them. `repair upgrade` moves 1 or 2 to 3.
FORMAT_VERSION = 3
RESERVED_PREFIXES = ("config", "keys/", "data/", "index/", "snapshots/", "locks/")
DEFAULT_CHUNKER = {"name": "fastcdc", "min": 256 * 1024, "avg": 1024 * 1024, "max": 4 * 1024 * 1024}


class Repository:
    """An opened repository: its storage, master key, config and loaded index."""

    def __init__(
        self,
        storage: Storage,
        master: MasterKey,
        config: dict[str, Any],
        key_id: str,
        *,
        compression_level: int = 3,
        pack_size_mib: int = 16,
        parallelism: int = 4,
    ):
        self.storage = storage
        self.master = master
        self.config = config
        self.key_id = key_id
        self.cipher = Cipher(master, compression_level)
        self.pack_size = max(1, pack_size_mib) * 1024 * 1024
        self.parallelism = max(1, parallelism)
        self.chunker: dict[str, Any] = dict(config.get("chunker") or DEFAULT_CHUNKER)
        self.index = Index()
        self._index_loaded = False
        self._index_lock = threading.Lock()
        self._tree_cache: dict[bytes, dict[str, Any]] = {}

    @property
    def id(self) -> str:
        return str(self.config["id"])

    @property
    def url(self) -> str:
        return self.storage.url

    # --- creating and opening ----------------------------------------------------------------------

    @classmethod
    def init(
        cls,
        storage: Storage,
        password: str,
        *,
        compression_level: int = 3,
        pack_size_mib: int = 16,
        parallelism: int = 4,
        kdf: dict[str, Any] | None = None,
        chunker: dict[str, Any] | None = None,
    ) -> Repository:
        """Create a repository on `storage`; raise UsageError when one already exists there."""
        try:
            storage.stat("config")
            exists = True
        except ObjectNotFound:
            exists = False
        if exists or any(True for _ in storage.list("keys/")):
            raise UsageError(
                f"a repository already exists at '{storage.url}'",
                hint="use it as it is, or choose an empty location",
            )
        if not password:
            raise UsageError("refusing to create a repository with an empty passphrase")
        master = MasterKey.generate()
        config: dict[str, Any] = {
            "version": FORMAT_VERSION,
            "id": os.urandom(16).hex(),
            "created": time.time(),
            "chunker": dict(chunker or DEFAULT_CHUNKER),
        }
        cipher = Cipher(master)
        config["mac"] = cipher.mac(canonical_config(config))
        key_id = write_key(storage, master, password, kdf)
        storage.put("config", json.dumps(config, indent=1).encode())
        return cls(
            storage,
            master,
            config,
            key_id,
            compression_level=compression_level,
            pack_size_mib=pack_size_mib,
            parallelism=parallelism,
        )

    @classmethod
    def open(
        cls,
        storage: Storage,
        password: str,
        *,
        compression_level: int = 3,
        pack_size_mib: int = 16,
        parallelism: int = 4,
    ) -> Repository:
        """Open the repository on `storage` with `password`.

        Raise NotFoundError when there is none, VerificationError for a newer format or a
        tampered config, WrongKeyError when no key slot opens with the passphrase.
        """
        try:
            raw = storage.get("config")
        except ObjectNotFound:
            raise NotFoundError(
                f"no repository at '{storage.url}'",
                hint="create one with 'recoverctl init', or check RECOVERCTL_REPOSITORY",
            ) from None
        try:
            config = json.loads(raw)
            version = int(config["version"])
        except (ValueError, KeyError, TypeError):
            raise VerificationError(f"the repository config at '{storage.url}' is not readable") from None
        if version > FORMAT_VERSION:
            raise UsageError(
                f"the repository at '{storage.url}' uses format version {version}; "
                f"this recoverctl reads up to version {FORMAT_VERSION}",
                hint="upgrade recoverctl to open it",
            )
        if version < 1:
            raise VerificationError(f"the repository config at '{storage.url}' has no valid format version")
        master, key_id = unlock_master(storage, password, config, named_slots=version >= 2)
        return cls(
            storage,
            master,
            config,
            key_id,
            compression_level=compression_level,
            pack_size_mib=pack_size_mib,
            parallelism=parallelism,
        )

    def close(self) -> None:
        self.storage.close()

    def __enter__(self) -> Repository:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- keys -------------------------------------------------------------------------------------

    def list_keys(self) -> list[dict[str, Any]]:
        """Return every key file; one that is not a usable slot is listed with its `problem`."""
        return key_rows(self.storage, self.key_id, named=int(self.config["version"]) >= 2)

    def upgrade(self, *, dry_run: bool = False) -> FormatUpgrade:
        """Bring the repository to FORMAT_VERSION: rename each key slot to its content hash, then
        write the config with the new version (last, so an interrupted upgrade is simply run again).

        Return the version before and after and the slots renamed. Raise UsageError when a key
        file is not a usable slot (remove it first with `key remove`).
        """
        before = int(self.config["version"])
        renames: list[tuple[ObjectInfo, str]] = []
        for o in sorted(self.storage.list("keys/"), key=lambda o: o.key):
            try:
                slot = read_slot(self.storage, o, named=False)
            except KeySlotError as e:
                raise UsageError(
                    f"key file '{o.key}' of '{self.url}' is not a usable key slot: {e.message}",
                    hint=f"remove it with 'recoverctl key remove {o.key.split('/', 1)[1]}', then upgrade",
                ) from None
            if slot.id != o.key.split("/", 1)[1]:
                renames.append((o, slot.id))
        result = FormatUpgrade(
            url=self.url,
            version_before=before,
            version=FORMAT_VERSION,
            keys_renamed=[{"from": o.key.split("/", 1)[1], "to": new} for o, new in renames],
            dry_run=dry_run,
        )
        if dry_run:
            return result
        for o, new in renames:
            self.storage.put(f"keys/{new}", self.storage.get(o.key))
            self.storage.delete(o.key)
            if o.key.split("/", 1)[1] == self.key_id:
                self.key_id = new
        if before < FORMAT_VERSION:
            config = {k: v for k, v in self.config.items() if k != "mac"}
            config["version"] = FORMAT_VERSION
            config["mac"] = self.cipher.mac(canonical_config(config))
            self.storage.put("config", json.dumps(config, indent=1).encode())
            self.config = config
        return result

    def add_key(self, password: str) -> str:
        """Add a key slot for `password`; return its id."""
        if not password:
            raise UsageError("refusing to add an empty passphrase")
        return write_key(self.storage, self.master, password)

    def remove_key(self, key_id: str) -> str:
        """Remove the key slot with id (prefix) `key_id`; refuse the last one. Return the full id."""
        rows = self.list_keys()
        matches = [k["id"] for k in rows if k["id"].startswith(key_id)]
        if not matches:
            raise NotFoundError(f"no key '{key_id}' in '{self.url}'", hint="see 'recoverctl key list'")
        if len(matches) > 1:
            raise UsageError(f"key id prefix '{key_id}' is ambiguous", hint="give more characters")
        usable = [k["id"] for k in rows if not k["problem"]]
        if usable == matches:
            raise UsageError(
                f"refusing to remove the last key of '{self.url}': the repository would be unreadable",
                hint="add another key first with 'recoverctl key add'",
            )
        self.storage.delete(f"keys/{matches[0]}")
        return matches[0]

    def change_password(self, new_password: str) -> str:
        """Rewrap the master key under `new_password` (new slot), drop the current slot; return the new id."""
        new_id = self.add_key(new_password)
        self.storage.delete(f"keys/{self.key_id}")
        self.key_id = new_id
        return new_id

    # --- index ------------------------------------------------------------------------------------

    def load_index(self, *, reload: bool = False) -> Index:
        """Read every index file (in parallel) into memory; return the index."""
        with self._index_lock:
            if self._index_loaded and not reload:
                return self.index
            index = Index()
            for key, doc, _ in self.read_index_files([o.key for o in self.storage.list("index/")]):
                assert doc is not None
                index.merge_document(doc)
                index.files.add(key)
                del doc
            self.index = index
            self._index_loaded = True
            return index

    def read_index_files(
        self, keys: list[str], *, tolerate_damage: bool = False
    ) -> Iterator[tuple[str, dict[str, Any] | None, str]]:
        """Given index file keys, yield (key, document, "") for each, in order, read in parallel;
        raise DecryptError for a damaged one, or with `tolerate_damage` yield (key, None, why)."""

        def load(key: str) -> tuple[str, dict[str, Any] | None, str]:
            try:
                return key, self.read_index_file(key), ""
            except (DecryptError, ValueError) as e:
                if not tolerate_damage:
                    raise
                return key, None, str(e)

        # A window of reads, not pool.map over every key: map would read and decode every index
        # file before the caller merged the first, and a large repository's documents are many
        # times the size of its merged index.
        window = 2 * self.parallelism
        with ThreadPoolExecutor(self.parallelism) as pool:
            for start in range(0, len(keys), window):
                yield from pool.map(load, keys[start : start + window])

    def read_index_file(self, key: str) -> dict[str, Any]:
        """Return an index file's document; raise DecryptError when it is damaged or misnamed."""
        doc: dict[str, Any] = self._open_named(key, b"index", f"index file '{key}'")
        return doc

    def _open_named(self, key: str, aad: bytes, what: str) -> Any:
        """Return the JSON document in a content-named object (`index/<sha256>`,
        `snapshots/<sha256>`: the name is the SHA-256 of the stored bytes).

        Raise DecryptError when it does not authenticate, or when its bytes do not hash to its
        name: a copy of another object, or two objects swapped. Only the holder of the key can
        make an object that authenticates, and it writes each under the hash of its bytes, so
        the pair (authentic, named by its hash) is exactly what was written under that name.
        """
        sealed = self.storage.get(key)
        doc = self.cipher.open_json(sealed, aad, what)
        if crypto.sha256_hex(sealed) != key.rsplit("/", 1)[-1]:
            raise DecryptError(
                f"{what} is not stored under its own name: it is a copy of another object, "
                "or was moved or swapped",
                hint=f"run 'recoverctl verify' to find every such object, then delete '{key}' "
                "from the storage: it is not what was written under that name",
                details={"object": key},
            )
        return doc

    def write_index(self, packs: Iterable[tuple[str, int, Iterable[PackEntry]]]) -> str:
        """Write one index file listing `packs`; return its key."""
        sealed = self.cipher.seal_json(document(packs), b"index")
        key = f"index/{crypto.sha256_hex(sealed)}"
        self.storage.put(key, sealed)
        self.index.files.add(key)
        return key

    def read_pack_header(self, pack_id: str, size: int | None = None) -> list[PackEntry]:
        """Return the entries a pack's own header lists; raise DecryptError when it is damaged."""
        key = pack_key(pack_id)
        if size is None:
            size = self.storage.stat(key).size
        want = min(size, 64 * 1024)
        while True:
            tail = self.storage.get(key, size - want, want)
            try:
                return parse_header(self.cipher, tail, size, f"pack {pack_id}")
            except HeaderTooShort as e:
                if e.needed > size or want >= size:
                    raise DecryptError(f"pack {pack_id}: header length exceeds the pack") from None
                want = min(size, e.needed)

    def list_packs(self) -> dict[str, int]:
        """Return pack id → size for every pack object in storage."""
        return {o.key.rsplit("/", 1)[1]: o.size for o in self.storage.list("data/")}

    def index_orphan_packs(self, *, write: bool = True) -> int:
        """Index packs in storage but in no index (an interrupted backup left them); return how many.

        With `write=False` they are indexed in memory only (a dry run plans from them and writes
        nothing to the repository).
        """
        self.load_index()
        orphans = {p: s for p, s in self.list_packs().items() if p not in self.index.packs}
        if not orphans:
            return 0
        found: list[tuple[str, int, list[PackEntry]]] = []

        def header(item: tuple[str, int]) -> tuple[str, int, list[PackEntry]] | None:
            try:
                return item[0], item[1], self.read_pack_header(item[0], item[1])
            except (DecryptError, ObjectNotFound):
                return None

        with ThreadPoolExecutor(self.parallelism) as pool:
            for r in pool.map(header, orphans.items()):
                if r is not None:
                    found.append(r)
                    self.index.add_pack(*r)
        if found and write:
            self.write_index(found)
        return len(found)

    # --- blobs and trees --------------------------------------------------------------------------

    def read_pack(self, pack_id: str, offset: int = 0, length: int | None = None) -> bytes:
        """Return bytes of a pack the index lists; raise ObjectNotFound saying why it may be gone.

        A reader without a lock (read-only repository) is not protected from a concurrent prune,
        so a pack vanishing under it is expected then: the error says so and to retry.
        """
        try:
            return self.storage.get(pack_key(pack_id), offset, length)
        except ObjectNotFound:
            raise ObjectNotFound(
                f"pack {pack_id} is in the index of '{self.url}' but missing from storage: a prune that "
                "ran while this command was reading may have removed it",
                hint="run the command again (it reads the current index); if the pack is still "
                "missing, run 'recoverctl verify' to see what is affected",
                details={"pack": pack_id},
            ) from None

    def has_blob(self, blob_id: bytes) -> bool:
        return blob_id in self.load_index()

    def read_blob(self, blob_id: bytes) -> bytes:
        """Return the verified plaintext of a blob; raise NotFoundError or DecryptError."""
        loc = self.load_index().get(blob_id)
        if loc is None:
            raise NotFoundError(
                f"blob {blob_id.hex()[:16]} is not in the index of '{self.url}'",
                hint="run 'recoverctl verify' and 'recoverctl repair index'",
            )
        sealed = self.read_pack(loc.pack, loc.offset, loc.length)
        return self.open_blob(blob_id, loc.type, sealed, loc.pack)

    def open_blob(self, blob_id: bytes, blob_type: int, sealed: bytes | memoryview, pack: str) -> bytes:
        plain = self.cipher.open(
            sealed, blob_aad(blob_type, blob_id), f"blob {blob_id.hex()[:16]} in pack {pack}"
        )
        if self.cipher.blob_id(plain) != blob_id:
            raise DecryptError(f"blob {blob_id.hex()[:16]} in pack {pack} does not match its id")
        return plain

    def load_tree(self, tree_id: bytes) -> dict[str, Any]:
        """Return a directory tree document {"nodes": [...]} (cached); raise InvalidTreeError (exit 13)
        for a tree whose entries no file system could hold (see repo/tree.py)."""
        cached = self._tree_cache.get(tree_id)
        if cached is not None:
            return cached
        tree = parse_tree(tree_id, self.read_blob(tree_id))
        if len(self._tree_cache) > 4096:
            self._tree_cache.clear()
        self._tree_cache[tree_id] = tree
        return tree

    # --- snapshots --------------------------------------------------------------------------------

    def save_snapshot(self, snap: Snapshot) -> str:
        """Write a snapshot document (the last step of a backup); return its id."""
        sealed = self.cipher.seal_json(snap.to_doc(), b"snapshot")
        sid = crypto.sha256_hex(sealed)
        self.storage.put(f"snapshots/{sid}", sealed)
        snap.id = sid
        return sid

    def snapshot_ids(self) -> list[str]:
        return [o.key.split("/", 1)[1] for o in self.storage.list("snapshots/")]

    def load_snapshot(self, sid: str) -> Snapshot:
        """Return snapshot `sid`; raise DecryptError when it is damaged, copied or swapped."""
        doc = self._open_named(f"snapshots/{sid}", b"snapshot", f"snapshot {sid}")
        return Snapshot.from_doc(sid, doc)

    def list_snapshots(self) -> list[Snapshot]:
        """Return every snapshot, oldest first."""
        ids = self.snapshot_ids()
        with ThreadPoolExecutor(self.parallelism) as pool:
            snaps = list(pool.map(self.load_snapshot, ids))
        return sorted(snaps, key=lambda s: (s.time, s.id))

    def find_snapshots(
        self,
        *,
        kind: str | None = None,
        source: str | None = None,
        tags: dict[str, str] | None = None,
        paths: list[str] | None = None,
    ) -> list[Snapshot]:
        """Return the snapshots matching every given filter, oldest first."""
        out = []
        for s in self.list_snapshots():
            if kind is not None and s.kind != kind:
                continue
            if source is not None and s.source != source:
                continue
            if tags and any(s.tags.get(k) != v for k, v in tags.items()):
                continue
            if paths is not None and sorted(s.paths) != sorted(paths):
                continue
            out.append(s)
        return out

    def resolve_snapshot(self, ref: str, **filters: Any) -> Snapshot:
        """Given an id prefix or 'latest', return the snapshot; raise NotFoundError or UsageError."""
        if ref == "latest":
            snaps = self.find_snapshots(**filters)
            if not snaps:
                raise NotFoundError(f"no snapshots in '{self.url}'", hint="run a backup first")
            return snaps[-1]
        matches = [i for i in self.snapshot_ids() if i.startswith(ref)]
        if not matches:
            raise NotFoundError(
                f"no snapshot '{ref}' in '{self.url}'", hint="list them with 'recoverctl snapshots'"
            )
        if len(matches) > 1:
            raise UsageError(f"snapshot id prefix '{ref}' is ambiguous", hint="give more characters")
        return self.load_snapshot(matches[0])

    def delete_snapshot(self, sid: str) -> None:
        self.storage.delete(f"snapshots/{sid}")

    # --- single encrypted objects (WAL and the like) ---------------------------------------------

    def _check_object_key(self, key: str) -> None:
        if not key or key.startswith("/") or key.startswith(RESERVED_PREFIXES) or ".." in key.split("/"):
            raise UsageError(f"object key {key!r} is reserved or invalid in the repository layout")

    def put_object(self, key: str, data: bytes) -> int:
        """Store `data` compressed and encrypted under `key` (e.g. 'wal/...'); return stored bytes."""
        self._check_object_key(key)
        sealed = self.cipher.seal(data, b"object:" + key.encode())
        self.storage.put(key, sealed)
        return len(sealed)

    def get_object(self, key: str) -> bytes:
        """Return the plaintext of an object; raise ObjectNotFound or DecryptError."""
        self._check_object_key(key)
        return self.cipher.open(self.storage.get(key), b"object:" + key.encode(), f"object '{key}'")

    def get_object_to(self, key: str, out: BinaryIO) -> None:
        """Write the plaintext of an object to `out`, inflated as it is written (a WAL segment is
        16 MiB); raise ObjectNotFound or DecryptError (then nothing is written)."""
        self._check_object_key(key)
        self.cipher.open_to(self.storage.get(key), b"object:" + key.encode(), out, f"object '{key}'")

    def list_objects(self, prefix: str) -> Iterator[str]:
        """Yield the keys of objects under `prefix`."""
        self._check_object_key(prefix)
        for o in self.storage.list(prefix):
            yield o.key

    def delete_object(self, key: str) -> None:
        self._check_object_key(key)
        self.storage.delete(key)

    # --- locks ------------------------------------------------------------------------------------

    def lock(
        self, exclusive: bool = False, operation: str = "", *, reader: bool = False
    ) -> AbstractContextManager[Any]:
        """Return a context manager holding a shared (or exclusive) repository lock; raise LockedError.

        `reader=True` (commands that never write the repository) goes on lock-free when the storage
        refuses the lock write, e.g. a read-only mount or read-only credentials.
        """
        from recoverctl.repo.locks import RepositoryLock

        return RepositoryLock(self.storage, exclusive=exclusive, operation=operation, reader=reader)
