"""The WAL archive in the repository: fetching (restore_command), what it holds, waiting for
segments to arrive, and expiring what no kept backup needs."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from recoverctl.config import Config
from recoverctl.errors import NotFoundError, ObjectNotFound, VerificationError
from recoverctl.sources.postgres import fetchspool, walspool
from recoverctl.sources.postgres.receiver_partial import PARTIAL_PREFIX, read_wal
from recoverctl.sources.postgres.walnames import (
    BACKUP_RE,
    DEFAULT_SEGMENT_SIZE,
    PARTIAL_RE,
    SEGMENT_RE,
    segment_from_number,
    segment_number,
    timeline_of,
    wal_key,
    wal_prefix,
)
from recoverctl.sources.postgres.walpush import check_name, push_marked
from recoverctl.sources.postgres.walresults import WalExpiry, WalFetch
from recoverctl.units import human_duration

if TYPE_CHECKING:
    from recoverctl.repo import Repository


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


def fetch_wal(cfg: Config, password: str, src_name: str, name: str, dest: Path) -> WalFetch:
    """restore_command: write WAL file `name` to `dest`; raise NotFoundError (and write nothing)
    when the archive does not have it, which PostgreSQL reads as "end of archive".

    Segments are read ahead into pg_wal/.recoverctl-prefetch/<source>/ (next to `dest`) so the
    following calls need not open the repository.
    """
    check_name(name)
    spool = Path(fetchspool.spool_dir(dest, src_name))
    size = fetchspool.take(spool, name, dest) if SEGMENT_RE.match(name) else None
    if size is not None:
        _clean_spool(spool, name)
        return WalFetch(name, src_name, size, prefetched=True, dest=str(dest))
    from recoverctl.repo.configured import open_repository

    with open_repository(cfg, password) as repo:
        try:
            # for the last segment, the streaming receiver's partial copy when it is not whole yet
            data = read_wal(repo, src_name, name)
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
    return WalFetch(name, src_name, len(data), prefetched=False, dest=str(dest), read_ahead=ahead)


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
                f"within {human_duration(timeout)}",
                hint="check archive_command ('recoverctl postgres setup') and the server log "
                "for archiver errors",
                details={"segment": missing[0]},
            )
        if not (push_here and pg_wal is not None and _push_ready(repo, source, pg_wal, missing)):
            time.sleep(interval)


def _push_ready(repo: Repository, source: str, pg_wal: Path, names: list[str]) -> bool:
    """Push those of `names` PostgreSQL has marked ready, one at a time and with markers; return
    whether any was pushed."""
    ready = [n for n in names if (pg_wal / "archive_status" / f"{n}.ready").exists()]
    if not ready:
        return False
    markers = walspool.pushed_marker(pg_wal / ready[0], source).parent
    fetchspool.private_dirs(markers)
    pushed = False
    # One at a time: a backup waits here with its pipeline's buffers still held, and each push
    # holds a whole segment and its sealed copy (~30 MiB); pushing is where a PostgreSQL
    # backup's memory peaks (docs/memory.md). The archiver is usually caught up by the stop, so
    # this rarely has more than one to push.
    for n in ready:
        try:
            push_marked(repo, source, pg_wal / n, markers)
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


def expire_wal_locked(repo: Repository, names: list[str], *, dry_run: bool = False) -> list[WalExpiry]:
    """Given a repository the caller holds a lock on, delete (or list, with dry_run) the WAL of
    each named source older than its oldest kept physical backup's start segment.

    A source without physical backups keeps all its WAL. Restore points need no extra rule: any
    backup that can reach one is kept, and so is the WAL after its start. History files are
    always kept (they are tiny and describe every timeline).
    """
    out: list[WalExpiry] = []
    snaps = repo.find_snapshots(kind="postgres")
    for name in names:
        kept = [s for s in snaps if s.source == name and s.metadata.get("start_segment")]
        if not kept:
            out.append(WalExpiry(name, None, [], reason="no backups"))
            continue
        oldest = min(kept, key=lambda s: segment_number(s.metadata["start_segment"]))
        floor = segment_number(oldest.metadata["start_segment"])
        doomed = []
        for key in repo.list_objects(wal_prefix(name)):
            base = key.rsplit("/", 1)[-1]
            base = base.removeprefix(PARTIAL_PREFIX)  # the streaming receiver's partial copies
            if (SEGMENT_RE.match(base) or PARTIAL_RE.match(base) or BACKUP_RE.match(base)) and (
                segment_number(base[:24]) < floor
            ):
                doomed.append(key)
        if not dry_run:
            for key in doomed:
                repo.delete_object(key)
        removed = sorted(k.rsplit("/", 1)[-1] for k in doomed)
        out.append(WalExpiry(name, oldest.metadata["start_segment"], removed, oldest_backup=oldest.id))
    return out
