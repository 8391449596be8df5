"""Local hand-off files that let most WAL commands finish without opening the repository.

Kept free of heavy imports: PostgreSQL runs a process per WAL file, and these checks happen
before the configuration or the repository is loaded.
"""

from __future__ import annotations

import os
from pathlib import Path

from recoverctl.sources.postgres.fetchspool import private_dirs

PUSHED_DIR = ".recoverctl-pushed"
SPOOL_DIR = ".recoverctl-prefetch"


def digest(data: bytes) -> str:
    import hashlib  # not needed when a marker's stat identity matches (the common case)

    return hashlib.sha256(data).hexdigest()


def pushed_marker(path: Path, source: str) -> Path:
    """Where a push-ahead leaves the sha256 and stat identity of a WAL file it already stored."""
    return path.absolute().parent / PUSHED_DIR / source / path.name


def prefetched(dest: Path, source: str, name: str) -> Path:
    """Where a fetch read-ahead leaves a WAL segment (next to the destination in pg_wal)."""
    return dest.absolute().parent / SPOOL_DIR / source / name


def _identity(st: os.stat_result) -> list[str]:
    return [str(st.st_size), str(st.st_ino), str(st.st_mtime_ns), str(st.st_ctime_ns)]


# In place of the digest when the stat identity alone acknowledges the file: hashing 16 MiB
# costs ~12 ms per segment, and a file whose identity moved is pushed again (idempotent) anyway.
NO_DIGEST = "-"


def pushed_record(path: Path, data: bytes, before: os.stat_result) -> str:
    """The marker text for a WAL file pushed ahead: its stat identity when it did not change while
    read (`before` was taken before reading), else the digest of `data` that was pushed."""
    identity = _identity(before)
    if _identity(os.stat(path)) != identity:
        return digest(data)
    return " ".join([NO_DIGEST, *identity])


def take_pushed(path: Path, source: str) -> int | None:
    """If `path` was pushed ahead with identical content, consume the marker and return its size.

    A file whose size, inode, mtime and ctime are those recorded is the file that was pushed
    (any write or rename moves ctime), so it is not read again; otherwise the recorded digest
    decides, and a marker without one acknowledges nothing. Return None (and drop a stale
    marker) otherwise: the caller then pushes normally, which compares with the repository.
    """
    marker = pushed_marker(path, source)
    try:
        expected, *identity = marker.read_text().split()
        st = os.stat(path)
    except FileNotFoundError:
        return None
    except ValueError:  # an empty marker: a push-ahead died while writing it
        marker.unlink(missing_ok=True)
        return None
    if identity == _identity(st):
        marker.unlink(missing_ok=True)
        return st.st_size
    if expected == NO_DIGEST:
        marker.unlink(missing_ok=True)
        return None
    data = path.read_bytes()
    marker.unlink(missing_ok=True)
    return len(data) if expected == digest(data) else None


def take_prefetched(dest: Path, source: str, name: str) -> int | None:
    """If segment `name` was read ahead, move it to `dest` and return its size, else None."""
    cached = prefetched(dest, source, name)
    try:
        size = cached.stat().st_size
        os.replace(cached, dest)
    except FileNotFoundError:
        return None
    return size


# A detached pusher (started by the call that finds other segments ready) holds this lock for
# its lifetime and lists the segments it took in the claim file: PostgreSQL's calls for those
# wait for their marker instead of pushing them a second time.
PUSHER_LOCK = ".pusher.lock"
PUSHER_CLAIM = ".pusher.claim"


def write_marker(marker: Path, text: str) -> None:
    """Write a marker atomically: a reader never sees it half-written."""
    tmp = marker.with_name(f".{marker.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, marker)


def claim_pusher(markers: Path, names: list[str]) -> int | None:
    """Take the pusher lock of `markers` (a source's marker directory) and claim `names`; return
    the locked descriptor (inherited by the pusher process), or None when a pusher runs."""
    import fcntl

    private_dirs(markers)
    fd = os.open(markers / PUSHER_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    write_marker(markers / PUSHER_CLAIM, "\n".join(names))
    return fd


# A pusher that has pushed what it claimed stays for a while and serves requests: a call for an
# unclaimed file writes its name into the pusher's FIFO and waits for the marker (or for
# `.error-<name>`), so the repository key is derived once per pusher, not once per
# archive_command process. Opening the FIFO fails (ENXIO) when no pusher reads it.
PUSHER_FIFO = ".pusher.requests"
FAILED = ".error-"


def _pusher_runs(fd: int) -> bool:
    """Return whether the pusher holding the lock open on `fd` still runs."""
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    fcntl.flock(fd, fcntl.LOCK_UN)
    return False


def _hand_off(path: Path, markers: Path, timeout: float) -> bool:
    """Ask the serving pusher of `markers` to push `path`; return True once its marker is there,
    False when no pusher serves, it failed on the file, it ended, or `timeout` passed (the
    caller then pushes the file itself and reports any error the usual way)."""
    try:
        lock = os.open(markers / PUSHER_LOCK, os.O_RDONLY)
    except FileNotFoundError:
        return False
    failed = markers / f"{FAILED}{path.name}"
    try:
        try:
            fifo = os.open(markers / PUSHER_FIFO, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:  # no FIFO, or nobody reading it
            return False
        try:
            os.write(fifo, path.name.encode() + b"\n")
        except OSError:
            return False
        finally:
            os.close(fifo)
        return _await_marker(markers / path.name, failed, lock, timeout, 0.002)
    finally:
        os.close(lock)
        failed.unlink(missing_ok=True)


def _await_marker(marker: Path, failed: Path, lock: int, timeout: float, interval: float) -> bool:
    """Poll until `marker` exists (True), or the pusher holding `lock` flagged the file as failed,
    ended, or `timeout` passed (then whether the marker appeared meanwhile)."""
    import time

    deadline = time.monotonic() + timeout
    while not marker.exists():
        if failed.exists() or not _pusher_runs(lock) or time.monotonic() >= deadline:
            return marker.exists()
        time.sleep(interval)
    return True


def wait_pushed(path: Path, source: str, timeout: float = 300.0) -> int | None:
    """Like take_pushed, but when a running pusher claimed `path`, first wait (polling) until
    its marker appears, it reports failing on it, or it ends; when a serving pusher runs, hand
    `path` to it. Return the size when acknowledged, else None."""
    markers = pushed_marker(path, source).parent
    if not (markers / path.name).exists():
        try:
            claimed = (markers / PUSHER_CLAIM).read_text().split()
        except FileNotFoundError:
            return None
        if path.name not in claimed:
            return take_pushed(path, source) if _hand_off(path, markers, timeout) else None
        try:
            fd = os.open(markers / PUSHER_LOCK, os.O_RDONLY)
        except FileNotFoundError:
            return None
        failed = markers / f"{FAILED}{path.name}"
        try:
            _await_marker(markers / path.name, failed, fd, timeout, 0.005)
        finally:
            os.close(fd)
            failed.unlink(missing_ok=True)
    return take_pushed(path, source)
