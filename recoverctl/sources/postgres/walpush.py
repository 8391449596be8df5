"""Pushing WAL into the repository: the mechanics of PostgreSQL's archive_command.

It runs once per WAL file, inside the server, so start-up cost matters: this module imports
only what the push path needs, and the catalog (SQLAlchemy + alembic) is touched only after the
WAL file is safely stored, best-effort. Ready siblings are pushed ahead in the same call, or by a
detached pusher that lingers for the next calls.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from recoverctl.config import Config, redact_url
from recoverctl.errors import ObjectNotFound, UsageError, VerificationError
from recoverctl.sources.postgres import fetchspool, walspool
from recoverctl.sources.postgres.walnames import is_wal_file_name, wal_key
from recoverctl.sources.postgres.walresults import WalPush

if TYPE_CHECKING:
    from recoverctl.repo import Repository


def check_name(name: str) -> None:
    if not is_wal_file_name(name):
        raise UsageError(
            f"'{name}' is not a WAL file name",
            hint="archive_command passes %p (a path under pg_wal/), restore_command passes %f",
        )


def push_file(repo: Repository, source: str, path: Path, data: bytes | None = None) -> WalPush:
    """Store one WAL file; idempotent. Return what happened (status 'stored' or 'already-archived').

    Raise VerificationError when different content already exists under the name: that means
    two clusters archive into one place, or the archive was tampered with; never overwrite.
    """
    name = path.name
    check_name(name)
    data = path.read_bytes() if data is None else data
    key = wal_key(source, name)
    try:
        existing = repo.get_object(key)
    except ObjectNotFound:
        existing = None
    if existing is not None:
        if existing == data:
            return WalPush(name, source, "already-archived", len(data), key=key)
        raise VerificationError(
            f"WAL file '{name}' is already in the repository with different content "
            f"(sha256 {hashlib.sha256(existing).hexdigest()[:16]} there, "
            f"{hashlib.sha256(data).hexdigest()[:16]} here); not overwritten",
            hint="another cluster may archive into this source name, or the archive was restored "
            "from elsewhere: give each cluster its own source name",
        )
    stored = repo.put_object(key, data)
    return WalPush(name, source, "stored", len(data), key=key, stored_bytes=stored)


def _record(cfg: Config, source: str, name: str, ok: bool, count: int = 1, error: str | None = None) -> None:
    """Update the catalog's WAL status for RPO tracking; never fails the push (the repository is
    the truth)."""
    try:
        from recoverctl.catalog import Catalog
        from recoverctl.catalog import wal as catalog_wal

        # No migration check here (it parses every alembic revision): any other command migrates.
        catalog = Catalog.from_config(cfg, migrate=False)
        try:
            if ok:
                catalog_wal.record_archived(catalog, source, name, time.time(), count)
            else:
                catalog_wal.record_failed(catalog, source, name, time.time(), error)
        finally:
            catalog.close()
    except Exception as e:  # the catalog may be unwritable for the server's OS user
        # stderr goes to the server log: never a catalog URL's password
        print(f"warning: WAL status not recorded in the catalog: {redact_url(str(e))}", file=sys.stderr)


# Ready WAL files pushed in the same call: one process (interpreter, config, key derivation,
# catalog) then archives a batch, and PostgreSQL's next calls only compare a local hash.
PUSH_AHEAD = 64
# The catalog is written at most this often by pushes (opening it costs more than a push).
RECORD_INTERVAL = 10.0


def _ready(path: Path, markers: Path) -> list[str]:
    """Return the other WAL files PostgreSQL has marked ready and no earlier call pushed ahead."""
    status = path.parent / "archive_status"
    try:
        entries = os.listdir(status)
    except OSError:
        return []
    names = []
    for entry in entries:
        if entry.endswith(".ready"):
            name = entry[: -len(".ready")]
            if name != path.name and is_wal_file_name(name) and not (markers / name).exists():
                names.append(name)
    return sorted(names)[:PUSH_AHEAD]


def push_marked(repo: Repository, source: str, path: Path, markers: Path) -> None:
    """Push one WAL file and leave its marker, so PostgreSQL's own call for it reads nothing."""
    before = os.stat(path)
    data = path.read_bytes()
    push_file(repo, source, path, data)
    walspool.write_marker(markers / path.name, walspool.pushed_record(path, data, before))


def _push_batch(
    repo: Repository, source: str, path: Path, ahead: list[str], markers: Path
) -> tuple[WalPush, int]:
    """Push `path` and the `ahead` files (siblings in pg_wal) in parallel; return the outcome for
    `path` and how many others were stored. A failure on `path` raises; one on another file only
    warns: PostgreSQL will ask for that file itself.

    Each file pushed ahead gets a marker holding its digest, so when PostgreSQL asks for it the
    call only compares digests instead of opening the repository.
    """
    from concurrent.futures import ThreadPoolExecutor

    def one(name: str) -> None:
        push_marked(repo, source, path.parent / name, markers)

    if ahead:
        fetchspool.private_dirs(markers)
    # Compression and encryption release the GIL: one thread per core keeps both busy, and each
    # thread holds about three copies of a segment, so no more threads than that.
    workers = max(1, min(repo.parallelism, os.cpu_count() or 1, 1 + len(ahead)))
    with ThreadPoolExecutor(workers, thread_name_prefix="wal-push") as pool:
        mine = pool.submit(push_file, repo, source, path)
        others = [(name, pool.submit(one, name)) for name in ahead]
        try:
            result = mine.result()
        except BaseException:
            for _, f in others:
                f.cancel()
            raise
        pushed = 0
        for name, f in others:
            try:
                f.result()
                pushed += 1
            except Exception as e:  # an optimisation: PostgreSQL will ask for each file anyway
                print(f"warning: pushing ready WAL file {name} ahead failed: {e}", file=sys.stderr)
    return result, pushed


def _warm_catalog() -> None:
    """Import the catalog (SQLAlchemy) on a thread while segments compress on the others: the
    import is most of the cost of recording, and it overlaps with work that releases the GIL."""
    import threading

    def load() -> None:
        with contextlib.suppress(Exception):
            import recoverctl.catalog  # noqa: F401

    threading.Thread(target=load, name="catalog-import", daemon=True).start()


def _push_ahead(repo: Repository, source: str, wal_dir: Path, names: list[str], markers: Path) -> int:
    """Push `names` (ready files in `wal_dir`) in parallel with markers; return how many were
    stored. A failure only leaves that file unmarked (and `.error-<name>`, so a call waiting
    for it stops waiting): PostgreSQL's own call for it pushes it and reports the error."""
    from concurrent.futures import ThreadPoolExecutor

    workers = max(1, min(repo.parallelism, os.cpu_count() or 1, len(names)))
    pushed = 0
    with ThreadPoolExecutor(workers, thread_name_prefix="wal-push") as pool:
        for name, f in [(n, pool.submit(push_marked, repo, source, wal_dir / n, markers)) for n in names]:
            try:
                f.result()
                pushed += 1
            except Exception as e:
                with contextlib.suppress(OSError):
                    walspool.write_marker(markers / f"{walspool.FAILED}{name}", str(e))
    return pushed


# How long a detached pusher stays for requests after its last push. While it runs, archive_command
# calls hand their file to it instead of deriving the repository key again (~0.5 s of scrypt).
PUSHER_LINGER_S = 60.0


def _serve(cfg: Config, repo: Repository, source: str, wal_dir: Path, markers: Path) -> None:
    """Push the files archive_command calls hand over (names written into the walspool FIFO)
    until PUSHER_LINGER_S pass without one, the server stops (postmaster.pid is gone) or the
    marker directory is removed. A failed push leaves `.error-<name>`: that call then pushes
    the file itself and reports the error."""
    import select

    fifo_path = markers / walspool.PUSHER_FIFO
    try:
        fifo_path.unlink(missing_ok=True)
        os.mkfifo(fifo_path, 0o600)
        # Read-write: the FIFO never reports end-of-file between two writers.
        fifo = os.open(fifo_path, os.O_RDWR | os.O_NONBLOCK)
    except OSError:  # no FIFOs on this file system: every call pushes for itself, as before
        return
    idle_until = time.monotonic() + PUSHER_LINGER_S
    last, count, recorded, pending = "", 0, time.monotonic(), b""
    try:
        while time.monotonic() < idle_until and (wal_dir.parent / "postmaster.pid").exists():
            if not select.select([fifo], [], [], 1.0)[0]:
                if not markers.is_dir():
                    return
                continue
            *lines, pending = (pending + os.read(fifo, 65536)).split(b"\n")
            names = list(dict.fromkeys(x.decode(errors="replace") for x in lines if x))
            for name in names:
                try:
                    check_name(name)
                    push_marked(repo, source, wal_dir / name, markers)
                    last, count = max(last, name), count + 1
                except Exception as e:
                    with contextlib.suppress(OSError):
                        walspool.write_marker(markers / f"{walspool.FAILED}{name}", str(e))
                    recorded = -RECORD_INTERVAL  # a success after it ends an outage: record that at once
            if names:  # a busy server: take what else is ready, as the first call did
                count += _push_ahead(repo, source, wal_dir, _ready(wal_dir / names[0], markers), markers)
            idle_until = time.monotonic() + PUSHER_LINGER_S
            if count and time.monotonic() - recorded > RECORD_INTERVAL:
                _record(cfg, source, last, ok=True, count=count)
                count, recorded = 0, time.monotonic()
    finally:
        fifo_path.unlink(missing_ok=True)
        os.close(fifo)
        if count:
            _record(cfg, source, last, ok=True, count=count)


def _push_detached(
    cfg: Config, password: str, source: str, path: Path, ready: list[str], markers: Path, lock: int
) -> WalPush:
    """Push `path`, then fork a detached pusher for `ready` (claimed under `lock`) and return
    without waiting for it: PostgreSQL's calls for those files wait for their markers
    (walspool.wait_pushed) while this call's answer lets the archiver move on."""
    from recoverctl.repo.configured import open_repository  # on use: keeps wal push start-up small

    try:
        repo = open_repository(cfg, password)
        try:
            result = push_file(repo, source, path)
        except BaseException:
            repo.close()
            raise
    except Exception as e:
        os.close(lock)  # frees the claim: waiting calls push their files themselves
        _record(cfg, source, path.name, ok=False, error=str(e))
        raise
    sys.stdout.flush()
    sys.stderr.flush()
    if os.fork() == 0:
        # The pusher. Its own session and no inherited stdout/stderr: the caller (the archiver's
        # shell, or anything reading our output) must not wait for it.
        try:
            os.setsid()
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            try:
                ahead = _push_ahead(repo, source, path.parent, ready, markers) if ready else 0
                _record(cfg, source, path.name, ok=True, count=1 + ahead)
                # What it claimed is done (marked or failed): later calls hand their file over.
                walspool.write_marker(markers / walspool.PUSHER_CLAIM, "")
                _serve(cfg, repo, source, path.absolute().parent, markers)
            finally:
                repo.close()
        finally:
            os._exit(0)
    os.close(lock)  # the pusher holds the lock (same open file) until it exits
    return replace(result, pushing_ahead=len(ready))


def push_wal(cfg: Config, password: str, name: str, path: Path, *, detach: bool = False) -> WalPush:
    """archive_command: store WAL file `path` for the postgres source `name`; return the outcome.

    Relative paths are taken from the server's data directory (PostgreSQL runs archive_command
    there). Other ready WAL files (up to PUSH_AHEAD) are pushed in the same call, or with
    `detach` (the archive_command entry point) by a detached pusher process after this call
    returns. Raise UsageError for a non-WAL name, VerificationError for a conflicting copy.
    """
    start = time.perf_counter()
    markers = walspool.pushed_marker(path, name).parent
    size = walspool.wait_pushed(path, name)
    if size is not None:
        seconds = round(time.perf_counter() - start, 4)
        return WalPush(path.name, name, "already-archived", size, handed_off=True, seconds=seconds)
    check_name(path.name)
    ready = _ready(path, markers)
    if detach and hasattr(os, "fork"):
        lock = walspool.claim_pusher(markers, ready)
        if lock is not None:
            result = _push_detached(cfg, password, name, path, ready, markers, lock)
            return replace(result, seconds=round(time.perf_counter() - start, 4))
        # a pusher runs: leave it the files it claimed
        with contextlib.suppress(OSError):
            claimed = set((markers / walspool.PUSHER_CLAIM).read_text().split())
            ready = [n for n in ready if n not in claimed]
    stamp = markers.parent / f".recorded-{name}"
    try:
        record = bool(ready) or time.time() - stamp.stat().st_mtime > RECORD_INTERVAL
    except OSError:
        record = True
    if record:
        _warm_catalog()
    from recoverctl.repo.configured import open_repository

    try:
        repo = open_repository(cfg, password)
        try:
            result, ahead = _push_batch(repo, name, path, ready, markers)
        finally:
            repo.close()
    except Exception as e:
        _record(cfg, name, path.name, ok=False, error=str(e))
        with contextlib.suppress(OSError):
            stamp.unlink(missing_ok=True)  # the next success ends the outage: record it at once
        raise
    if record:
        _record(cfg, name, path.name, ok=True, count=1 + ahead)
        try:
            fetchspool.private_dirs(stamp.parent)
            stamp.touch()
        except OSError:
            pass
    return replace(result, pushed_ahead=ahead, seconds=round(time.perf_counter() - start, 4))
