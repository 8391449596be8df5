"""The WAL fetcher: one background process per restore that keeps the next segments decrypted in the
spool and answers restore_command's requests (see `recoverctl.sources.postgres.fetchspool`).

It opens the repository once, so the calls PostgreSQL makes per WAL file cost a rename or a
round trip through the spool instead of a key derivation and repository open each. It exits when
the spool directory disappears (the restored data directory was removed), after IDLE_S without
requests, or on SIGTERM/SIGINT/SIGQUIT; on exit it removes what it spooled.

Its process is `python -m recoverctl.cli.wal_fetcher_entry` (`fetchspool.fetcher_argv`); a
restore without a process of its own runs one in a thread (`start_fetcher`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from recoverctl.sources.postgres import fetchspool
from recoverctl.sources.postgres.walnames import wal_prefix

if TYPE_CHECKING:
    from recoverctl.config import Config
    from recoverctl.repo import Repository

# Segments kept decrypted ahead of the one PostgreSQL asked for (16 MiB each by default).
AHEAD = 8
IDLE_S = 30.0
_POLL_S = 0.005
_RELIST_S = 1.0


def _write_atomic(spool: Path, name: str, data: bytes, owner: tuple[int, int] | None = None) -> None:
    """Write `data` as spool/name so that a reader sees all of it or nothing, owned by `owner`
    (the server's OS user: PostgreSQL later renames and recycles the files it restored)."""
    tmp = spool / f".{name}.tmp-{os.getpid()}-{threading.get_ident()}"
    with open(tmp, "wb") as f:
        if owner is not None:
            os.fchown(f.fileno(), *owner)
        f.write(data)
    os.replace(tmp, spool / name)


class Fetcher:
    """Serves one spool from an open repository; `run()` until idle or the spool is gone."""

    def __init__(
        self,
        repo: Repository,
        source: str,
        spool: Path,
        *,
        ahead: int = AHEAD,
        idle: float = IDLE_S,
        owner: tuple[int, int] | None = None,
        stop: threading.Event | None = None,
    ):
        self.repo = repo
        self.owner = owner
        self.stop = stop or threading.Event()
        self.source = source
        self.spool = spool
        self.ahead = ahead
        self.idle = idle
        self.pool = ThreadPoolExecutor(2, thread_name_prefix="wal-fetch-ahead")
        self.inflight: dict[str, Future[None]] = {}
        self.available: dict[int, set[str]] = {}
        self.listed_at: dict[int, float] = {}
        # read-ahead files written and not yet seen taken: PostgreSQL takes most segments by a
        # rename, without a request, and the window must move on with those too
        self.spooled: set[str] = set()

    def _archived(self, timeline: int, name: str) -> bool:
        """Return whether segment `name` is listed in the archive (re-listing at most every second)."""
        have = self.available.get(timeline)
        if have is not None and (name in have or time.monotonic() - self.listed_at[timeline] < _RELIST_S):
            return name in have
        keys = self.repo.list_objects(wal_prefix(self.source, timeline))
        self.available[timeline] = {k.rsplit("/", 1)[-1] for k in keys}
        self.listed_at[timeline] = time.monotonic()
        return name in self.available[timeline]

    def _fetch(self, name: str) -> None:
        from recoverctl.sources.postgres.receiver_partial import read_wal

        # the streaming receiver's partial copy stands in for the last segment
        _write_atomic(self.spool, name, read_wal(self.repo, self.source, name), self.owner)

    def answer(self, name: str) -> bool:
        """Answer one request: the file, `.missing` when the archive lacks it, or `.error`;
        return True when the file was served."""
        from recoverctl.errors import ObjectNotFound

        pending = self.inflight.pop(name, None)
        if pending is not None:
            with contextlib.suppress(Exception):  # a failed read-ahead is retried just below
                pending.result()
        try:
            if not (self.spool / name).exists():
                self._fetch(name)
            return True
        except ObjectNotFound:
            _write_atomic(self.spool, name + ".missing", b"", self.owner)
        except Exception as e:
            with contextlib.suppress(OSError):
                _write_atomic(self.spool, name + ".error", str(e).encode(), self.owner)
            print(f"warning: fetching WAL file {name} failed: {e}", file=sys.stderr)
        finally:
            (self.spool / (name + ".want")).unlink(missing_ok=True)
        return False

    def read_ahead(self, name: str) -> None:
        """Queue the segments after `name` that the archive has; drop spooled ones before it."""
        from recoverctl.sources.postgres.walnames import SEGMENT_RE, segment_from_number, segment_number

        for entry in os.listdir(self.spool):
            if SEGMENT_RE.match(entry) and entry < name and entry not in self.inflight:
                (self.spool / entry).unlink(missing_ok=True)
                self.spooled.discard(entry)
        timeline, first = int(name[:8], 16), segment_number(name)
        for n in range(first + 1, first + 1 + self.ahead):
            seg = segment_from_number(timeline, n)
            if seg in self.inflight or (self.spool / seg).exists():
                continue
            if not self._archived(timeline, seg):
                break
            self.inflight[seg] = self.pool.submit(self._fetch, seg)

    def _reap(self) -> None:
        for name, f in list(self.inflight.items()):
            if f.done():
                del self.inflight[name]
                if f.exception() is not None:
                    print(f"warning: reading WAL file {name} ahead failed: {f.exception()}", file=sys.stderr)
                else:
                    self.spooled.add(name)

    def run(self) -> None:
        from recoverctl.sources.postgres.walnames import SEGMENT_RE

        last = time.monotonic()
        while self.spool.is_dir() and not self.stop.is_set():
            entries = set(os.listdir(self.spool))
            wants = sorted(e[: -len(".want")] for e in entries if e.endswith(".want"))
            for name in wants:
                # past the end of the archive (a standby polling for the next segment) there
                # is nothing to read ahead, and listing the archive each time would cost
                if self.answer(name) and SEGMENT_RE.match(name):
                    self.read_ahead(name)
            # `spooled` holds only files finished before this listing: absent now means taken
            taken = {n for n in self.spooled if n not in entries}
            if taken:
                self.spooled -= taken
                self.read_ahead(max(taken))
            self._reap()
            now = time.monotonic()
            if wants or taken:
                last = now
            elif now - last > self.idle and not self.inflight:
                return
            # PostgreSQL asks in bursts: poll tightly while it does, gently when it has stopped.
            time.sleep(_POLL_S if now - last < 1.0 else 0.05)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        with contextlib.suppress(OSError):
            for entry in os.listdir(self.spool):
                if entry not in (fetchspool.LOCK_FILE, fetchspool.LOG_FILE):
                    (self.spool / entry).unlink(missing_ok=True)


# Fetchers running as threads of this process, by spool: stopped before their data dir goes.
_THREADS: dict[Path, tuple[threading.Thread, threading.Event]] = {}


def start_fetcher(cfg: Config, password: str, source: str, data_dir: Path, os_user: str | None) -> bool:
    """Serve restore_command for a restored data directory from a thread of this process.

    For restores whose server starts right away (drills, `restore postgres --start`): the
    repository opens while the files are restored, with no new interpreter or config load, so
    recovery's first restore_command finds the fetcher ready. Files are owned by `os_user` when
    we are root. Return False when another fetcher already serves the spool.
    """
    import pwd

    spool = Path(data_dir) / "pg_wal" / fetchspool.SPOOL_DIR / source
    owner = None
    if os.geteuid() == 0 and os_user:
        pw = pwd.getpwnam(os_user)
        owner = (pw.pw_uid, pw.pw_gid)
    try:
        fetchspool.private_dirs(spool)
        lock = os.open(spool / fetchspool.LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as e:
        print(f"warning: no WAL fetcher for '{data_dir}': {e}", file=sys.stderr)
        return False
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if owner is not None:
            for path in (spool, spool.parent, spool / fetchspool.LOCK_FILE):
                os.chown(path, *owner)
        (spool / fetchspool.PID_FILE).write_text(str(os.getpid()))
    except OSError:
        os.close(lock)
        return False
    stop = threading.Event()

    def serve() -> None:
        from recoverctl.repo.configured import open_repository

        try:
            repo = open_repository(cfg, password)
            try:
                fetcher = Fetcher(repo, source, spool, owner=owner, stop=stop)
                try:
                    fetcher.run()
                finally:
                    fetcher.close()
            finally:
                repo.close()
        except Exception as e:  # an optimisation: restore_command then fetches by itself
            print(f"warning: WAL fetcher for '{data_dir}' stopped: {e}", file=sys.stderr)
        finally:
            (spool / fetchspool.PID_FILE).unlink(missing_ok=True)
            os.close(lock)

    thread = threading.Thread(target=serve, name="wal-fetcher", daemon=True)
    _THREADS[spool] = (thread, stop)
    thread.start()
    return True


def stop_fetchers(data_dir: Path, *, remove_spools: bool = False) -> None:
    """Stop every fetcher (thread of this process or background process) serving `data_dir`;
    with `remove_spools` (recovery has ended), also remove their spools, segments and logs."""
    root = Path(data_dir) / "pg_wal" / fetchspool.SPOOL_DIR
    for spool, (thread, stop) in list(_THREADS.items()):
        if spool.parent == root:
            stop.set()
            thread.join(10)
            del _THREADS[spool]
    fetchspool.stop_fetchers(Path(data_dir))
    if remove_spools:
        shutil.rmtree(root, ignore_errors=True)
