"""`wal push` / `wal fetch`: PostgreSQL's archive_command and restore_command.

Both run once per WAL file, inside the server, so start-up cost matters: this module imports
only what the push/fetch path needs, and the catalog (SQLAlchemy + alembic) is touched only
after the WAL file is safely stored, best-effort.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recoverctl.config import Config, redact_url
from recoverctl.errors import NotFoundError, ObjectNotFound, UsageError, VerificationError
from recoverctl.sources.postgres import fetchspool, walspool
from recoverctl.sources.postgres.walnames import (
    DEFAULT_SEGMENT_SIZE,
    SEGMENT_RE,
    is_wal_file_name,
    segment_from_number,
    segment_number,
    timeline_of,
    wal_key,
    wal_prefix,
)

if TYPE_CHECKING:
    from recoverctl.repo import Repository


def _check_name(name: str) -> None:
    if not is_wal_file_name(name):
        raise UsageError(
            f"'{name}' is not a WAL file name",
            hint="archive_command passes %p (a path under pg_wal/), restore_command passes %f",
        )


def push_file(repo: Repository, source: str, path: Path, data: bytes | None = None) -> dict[str, Any]:
    """Store one WAL file; idempotent. Return what happened ('stored' or 'already-archived').

    Raise VerificationError when different content already exists under the name: that means
    two clusters archive into one place, or the archive was tampered with; never overwrite.
    """
    name = path.name
    _check_name(name)
    data = path.read_bytes() if data is None else data
    key = wal_key(source, name)
    try:
        existing = repo.get_object(key)
    except ObjectNotFound:
        existing = None
    if existing is not None:
        if existing == data:
            return {"name": name, "key": key, "status": "already-archived", "bytes": len(data)}
        raise VerificationError(
            f"WAL file '{name}' is already in the repository with different content "
            f"(sha256 {hashlib.sha256(existing).hexdigest()[:16]} there, "
            f"{hashlib.sha256(data).hexdigest()[:16]} here); not overwritten",
            hint="another cluster may archive into this source name, or the archive was restored "
            "from elsewhere: give each cluster its own source name",
        )
    stored = repo.put_object(key, data)
    return {"name": name, "key": key, "status": "stored", "bytes": len(data), "stored_bytes": stored}


def _record(cfg: Config, source: str, name: str, ok: bool, count: int = 1) -> None:
    """Update wal_status for RPO tracking; never fails the push (the repository is the truth)."""
    try:
        import sqlalchemy as sa

        from recoverctl.catalog import Catalog
        from recoverctl.catalog import tables as t

        # No migration check here (it parses every alembic revision): any other command migrates.
        catalog = Catalog.from_config(cfg, migrate=False)
        try:
            now = time.time()
            with catalog.begin() as db:
                row = db.execute(sa.select(t.wal_status).where(t.wal_status.c.source == source)).first()
                if ok:
                    values: dict[str, Any] = {"last_segment": name, "last_archived_at": now}
                    # keep the highest segment: a retried older one must not move RPO backwards
                    if (
                        row is not None
                        and SEGMENT_RE.match(name)
                        and SEGMENT_RE.match(row.last_segment or "")
                        and row.last_segment > name
                    ):
                        values = {"last_archived_at": max(now, row.last_archived_at or 0)}
                    values["segments_total"] = (row.segments_total if row else 0) + count
                else:
                    values = {"last_failed_segment": name, "last_failed_at": now}
                if row is None:
                    db.execute(t.wal_status.insert().values(source=source, **{"segments_total": 0, **values}))
                else:
                    db.execute(t.wal_status.update().where(t.wal_status.c.source == source).values(**values))
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


def _push_marked(repo: Repository, source: str, path: Path, markers: Path) -> None:
    """Push one WAL file and leave its marker, so PostgreSQL's own call for it reads nothing."""
    before = os.stat(path)
    data = path.read_bytes()
    push_file(repo, source, path, data)
    walspool.write_marker(markers / path.name, walspool.pushed_record(path, data, before))


def _push_batch(
    repo: Repository, source: str, path: Path, ahead: list[str], markers: Path
) -> tuple[dict[str, Any], int]:
    """Push `path` and the `ahead` files (siblings in pg_wal) in parallel; return the outcome for
    `path` and how many others were stored. A failure on `path` raises; one on another file only
    warns: PostgreSQL will ask for that file itself.

    Each file pushed ahead gets a marker holding its digest, so when PostgreSQL asks for it the
    call only compares digests instead of opening the repository.
    """
    from concurrent.futures import ThreadPoolExecutor

    def one(name: str) -> None:
        _push_marked(repo, source, path.parent / name, markers)

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
        for name, f in [(n, pool.submit(_push_marked, repo, source, wal_dir / n, markers)) for n in names]:
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
                    _check_name(name)
                    _push_marked(repo, source, wal_dir / name, markers)
                    last, count = max(last, name), count + 1
                except Exception as e:
                    with contextlib.suppress(OSError):
                        walspool.write_marker(markers / f"{walspool.FAILED}{name}", str(e))
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
) -> dict[str, Any]:
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
    except Exception:
        os.close(lock)  # frees the claim: waiting calls push their files themselves
        _record(cfg, source, path.name, ok=False)
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
    return {**result, "pushing_ahead": len(ready)}


def wal_push(
    cfg: Config, password: str, *, source: str | None, path: Path, detach: bool = False
) -> dict[str, Any]:
    """archive_command: store WAL file `path` for `source`; return the outcome.

    Relative paths are taken from the server's data directory (PostgreSQL runs archive_command
    there). Other ready WAL files (up to PUSH_AHEAD) are pushed in the same call, or with
    `detach` (the archive_command entry point) by a detached pusher process after this call
    returns. Raise UsageError for a non-WAL name, VerificationError for a conflicting copy.
    """
    name, _src = cfg.source(source, "postgres")
    start = time.perf_counter()
    markers = walspool.pushed_marker(path, name).parent
    size = walspool.wait_pushed(path, name)
    if size is not None:
        return {"name": path.name, "source": name, "status": "already-archived", "pushed_ahead": True,
                "bytes": size, "seconds": round(time.perf_counter() - start, 4)}  # fmt: skip
    _check_name(path.name)
    ready = _ready(path, markers)
    if detach and hasattr(os, "fork"):
        lock = walspool.claim_pusher(markers, ready)
        if lock is not None:
            result = _push_detached(cfg, password, name, path, ready, markers, lock)
            result["source"] = name
            result["seconds"] = round(time.perf_counter() - start, 4)
            return result
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
    except Exception:
        _record(cfg, name, path.name, ok=False)
        raise
    if record:
        _record(cfg, name, path.name, ok=True, count=1 + ahead)
        try:
            fetchspool.private_dirs(stamp.parent)
            stamp.touch()
        except OSError:
            pass
    result["source"] = name
    result["pushed_ahead"] = ahead
    result["seconds"] = round(time.perf_counter() - start, 4)
    return result


PREFETCH = 8


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".recoverctl-tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _prefetch(repo: Repository, source: str, name: str, spool: Path) -> int:
    """Fetch the segments after `name` into `spool` in parallel; return how many were fetched.

    Recovery asks for segments one by one, each a new process that would open the repository
    again; reading ahead turns most of those calls into a rename.
    """
    from concurrent.futures import ThreadPoolExecutor

    tl = timeline_of(name)
    first = segment_number(name)
    wanted = [segment_from_number(tl, n) for n in range(first + 1, first + 1 + PREFETCH)]
    available = {k.rsplit("/", 1)[-1] for k in repo.list_objects(wal_prefix(source, tl))}
    todo = [n for n in wanted if n in available and not (spool / n).exists()]
    if not todo:
        return 0
    fetchspool.private_dirs(spool)

    def one(n: str) -> None:
        _write_atomic(spool / n, repo.get_object(wal_key(source, n)))

    with ThreadPoolExecutor(min(4, len(todo))) as pool:
        list(pool.map(one, todo))
    return len(todo)


def _clean_spool(spool: Path, name: str) -> None:
    """Drop read-ahead segments older than `name`: recovery has moved past them."""
    if not spool.is_dir():
        return
    for old in spool.iterdir():
        if (SEGMENT_RE.match(old.name) and old.name < name) or old.name.endswith(".recoverctl-tmp"):
            old.unlink(missing_ok=True)


def wal_fetch(cfg: Config, password: str, *, source: str | None, name: str, dest: Path) -> dict[str, Any]:
    """restore_command: write WAL file `name` to `dest`; raise NotFoundError (and write nothing)
    when the archive does not have it, which PostgreSQL reads as "end of archive".

    Segments are read ahead into pg_wal/.recoverctl-prefetch/<source>/ (next to `dest`) so the
    following calls need not open the repository.
    """
    src_name, _src = cfg.source(source, "postgres")
    _check_name(name)
    spool = Path(fetchspool.spool_dir(dest, src_name))
    size = fetchspool.take(spool, name, dest) if SEGMENT_RE.match(name) else None
    if size is not None:
        _clean_spool(spool, name)
        return {"name": name, "source": src_name, "bytes": size, "dest": str(dest), "prefetched": True}
    from recoverctl.repo.configured import open_repository

    repo = open_repository(cfg, password)
    try:
        try:
            data = repo.get_object(wal_key(src_name, name))
        except ObjectNotFound:
            raise NotFoundError(
                f"WAL file '{name}' is not in the archive of source '{src_name}'",
                hint="expected at the end of the archive; otherwise the archive has a gap",
            ) from None
        _write_atomic(dest, data)
        ahead = 0
        if SEGMENT_RE.match(name):
            _clean_spool(spool, name)
            try:
                ahead = _prefetch(repo, src_name, name, spool)
            except Exception as e:  # read-ahead is an optimisation: the next call fetches directly
                print(f"warning: WAL read-ahead failed: {e}", file=sys.stderr)
    finally:
        repo.close()
    return {"name": name, "source": src_name, "bytes": len(data), "dest": str(dest), "prefetched": False,
            "read_ahead": ahead}  # fmt: skip


def archived_segments(repo: Repository, source: str) -> dict[int, set[str]]:
    """Return the archived segment names of `source` per timeline (history/partial files excluded)."""
    out: dict[int, set[str]] = {}
    for key in repo.list_objects(wal_prefix(source)):
        name = key.rsplit("/", 1)[-1]
        if SEGMENT_RE.match(name):
            out.setdefault(timeline_of(name), set()).add(name)
    return out


def first_missing(
    have: set[str], first: str, last: str, segment_size: int = DEFAULT_SEGMENT_SIZE
) -> str | None:
    """Return the first segment from `first` to `last` (inclusive) that is not in `have`."""
    tl = timeline_of(first)
    for n in range(segment_number(first, segment_size), segment_number(last, segment_size) + 1):
        seg = segment_from_number(tl, n, segment_size)
        if seg not in have:
            return seg
    return None


def wait_for_wal(
    repo: Repository,
    source: str,
    first: str,
    last: str,
    timeout: float,
    pg_wal: Path | None = None,
    segment_size: int = DEFAULT_SEGMENT_SIZE,
    interval: float = 0.1,
) -> float:
    """Wait until every segment from `first` to `last` is in the archive; return seconds waited;
    raise VerificationError after `timeout`.

    With `pg_wal` (the server's WAL directory, owned by this OS user), segments PostgreSQL has
    marked ready are pushed from here (with markers, so the archiver's own calls for them read
    nothing) instead of waiting for the archiver to reach them one process at a time.
    """
    tl = timeline_of(last)
    wanted = [last]
    if timeline_of(first) == tl:  # (a promotion during the backup: the stop segment says enough)
        numbers = range(segment_number(first, segment_size), segment_number(last, segment_size) + 1)
        wanted = [segment_from_number(tl, n, segment_size) for n in numbers]
    push_here = pg_wal is not None and _owned(pg_wal)
    start = time.monotonic()
    while True:
        missing = [seg for seg in wanted if not any(True for _ in repo.list_objects(wal_key(source, seg)))]
        if not missing:
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise VerificationError(
                f"WAL segment {missing[0]} of source '{source}' did not reach the repository "
                f"within {timeout:.0f}s",
                hint="check archive_command ('recoverctl postgres setup') and the server log "
                "for archiver errors",
                details={"segment": missing[0]},
            )
        if not (push_here and pg_wal is not None and _push_ready(repo, source, pg_wal, missing)):
            time.sleep(interval)


def _push_ready(repo: Repository, source: str, pg_wal: Path, names: list[str]) -> bool:
    """Push those of `names` PostgreSQL has marked ready, in parallel and with markers; return
    whether any was pushed."""
    from concurrent.futures import ThreadPoolExecutor

    ready = [n for n in names if (pg_wal / "archive_status" / f"{n}.ready").exists()]
    if not ready:
        return False
    markers = walspool.pushed_marker(pg_wal / ready[0], source).parent
    fetchspool.private_dirs(markers)
    pushed = False
    workers = max(1, min(repo.parallelism, os.cpu_count() or 1, len(ready)))
    with ThreadPoolExecutor(workers, thread_name_prefix="wal-push") as pool:
        for f in [pool.submit(_push_marked, repo, source, pg_wal / n, markers) for n in ready]:
            try:
                f.result()
                pushed = True
            except FileNotFoundError:
                continue  # archived and recycled meanwhile: the next listing decides
    for n in ready:
        if not (pg_wal / "archive_status" / f"{n}.ready").exists():
            (markers / n).unlink(missing_ok=True)  # the archiver got there first: nothing to hand off
    return pushed


def _owned(path: Path) -> bool:
    """True when `path` belongs to this OS user: files written there (markers) must stay
    writable by the server, which runs the archiver as that user."""
    try:
        return path.stat().st_uid == os.geteuid()
    except OSError:
        return False


def expire_wal(
    cfg: Config, password: str, *, source: str | None = None, dry_run: bool = False
) -> dict[str, Any]:
    """Delete archived WAL older than what the oldest kept physical backup needs; return per source
    what was (or would be) removed. `prune` runs the same step under its exclusive lock.
    """
    names = [cfg.source(source, "postgres")[0]] if source else postgres_sources(cfg)
    from recoverctl.repo.configured import open_repository

    repo = open_repository(cfg, password)
    try:
        with repo.lock(operation="wal expire"):
            out = expire_wal_locked(repo, names, dry_run=dry_run)
    finally:
        repo.close()
    return {"dry_run": dry_run, "sources": out}


def postgres_sources(cfg: Config) -> list[str]:
    """Given the config, return the names of its postgres sources."""
    return [n for n, s in cfg.sources.items() if s.type == "postgres"]


def expire_wal_locked(repo: Repository, names: list[str], *, dry_run: bool = False) -> list[dict[str, Any]]:
    """Given a repository the caller holds a lock on, delete (or list, with dry_run) the WAL of
    each named source older than its oldest kept physical backup's start segment.

    A source without physical backups keeps all its WAL. Restore points need no extra rule: any
    backup that can reach one is kept, and so is the WAL after its start. History files are
    always kept (they are tiny and describe every timeline).
    """
    from recoverctl.sources.postgres.walnames import BACKUP_RE, PARTIAL_RE

    out: list[dict[str, Any]] = []
    snaps = repo.find_snapshots(kind="postgres")
    for name in names:
        kept = [s for s in snaps if s.source == name and s.metadata.get("start_segment")]
        if not kept:
            out.append({"source": name, "oldest_needed": None, "removed": [], "reason": "no backups"})
            continue
        oldest = min(kept, key=lambda s: segment_number(s.metadata["start_segment"]))
        floor = segment_number(oldest.metadata["start_segment"])
        doomed = []
        for key in repo.list_objects(wal_prefix(name)):
            base = key.rsplit("/", 1)[-1]
            if (SEGMENT_RE.match(base) or PARTIAL_RE.match(base) or BACKUP_RE.match(base)) and (
                segment_number(base[:24]) < floor
            ):
                doomed.append(key)
        if not dry_run:
            for key in doomed:
                repo.delete_object(key)
        out.append(
            {
                "source": name,
                "oldest_backup": oldest.id,
                "oldest_needed": oldest.metadata["start_segment"],
                "removed": sorted(k.rsplit("/", 1)[-1] for k in doomed),
            }
        )
    return out
