"""The restore_command side of the WAL fetch-ahead: a spool directory served by one background fetcher.

PostgreSQL runs restore_command once per WAL file, and a cold `recoverctl-wal fetch` pays for the
interpreter, the config, the passphrase's key derivation and the repository open each time (~1-2 s
of CPU), also for the many "is there a newer timeline?" probes that must simply answer missing.
So one long-lived fetcher (`recoverctl.sources.postgres.wal_fetcher`, run as a process by
`recoverctl.cli.wal_fetcher_entry`) opens the repository once per restore,
keeps the next segments decrypted in the spool, and answers each request by a file:

- `<name>`          the complete file (written as a hidden temp file, then renamed);
- `<name>.missing`  the archive does not have it (answer to a request, consumed by it);
- `<name>.error`    the fetcher could not tell: the caller fetches directly and reports the error.

A request is an empty `<name>.want`. A `.missing` answer is never trusted unless it answers the
request just made, so a stale one cannot end recovery early. The fetcher holds an exclusive
flock on `fetcher.lock` while it lives. Only the smallest stdlib modules (no pathlib, re, typing):
this is most of what a served restore_command call imports.
"""

from __future__ import annotations

import fcntl
import os
import struct
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    import subprocess

    StrPath = str | os.PathLike[str]

SPOOL_DIR = ".recoverctl-prefetch"
LOCK_FILE = "fetcher.lock"
PID_FILE = "fetcher.pid"
LOG_FILE = "fetcher.log"
# A fresh fetcher needs the interpreter, config and key derivation before it takes its lock.
SPAWN_GRACE_S = 20.0
# One request may need a slow object store; past this the caller fetches by itself.
ANSWER_TIMEOUT_S = 120.0
_POLL_S = 0.005
# XLogLongPageHeaderData: magic, info, tli, pageaddr, rem_len, (pad), sysid, seg_size, blcksz.
_LONG_HEADER = struct.Struct("<HHIQI4xQII")
_XLP_LONG_HEADER = 0x0002
_HEX = frozenset("0123456789ABCDEF")

MISSING = -1


def private_dirs(path: StrPath) -> None:
    """Create directory `path` and its missing parents as 0700 (spools hold decrypted WAL, lock
    and marker files); existing directories keep their mode. No umask change: threads run."""
    path = os.path.abspath(path)
    missing = []
    while not os.path.isdir(path):
        missing.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    for d in reversed(missing):
        try:
            os.mkdir(d, 0o700)
        except FileExistsError:
            if not os.path.isdir(d):
                raise


def is_fetchable(name: str) -> bool:
    """Return True for the names the fetcher serves: segments and timeline history files."""
    if len(name) == 24:
        return _HEX.issuperset(name)
    return len(name) == 16 and name.endswith(".history") and _HEX.issuperset(name[:8])


def spool_dir(dest: StrPath, source: str) -> str:
    """Where segments for restore_command destination `dest` are read ahead (next to it in pg_wal)."""
    return os.path.join(os.path.dirname(os.path.abspath(dest)), SPOOL_DIR, source)


def segment_ok(path: StrPath, name: str) -> bool:
    """Return True when `path` is a whole WAL segment named `name`: its long page header gives the
    segment size equal to the file size and the page address of segment `name`."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(_LONG_HEADER.size)
    except OSError:
        return False
    if len(head) < _LONG_HEADER.size:
        return False
    _magic, info, _tli, pageaddr, _rem, _sysid, seg_size, _blcksz = _LONG_HEADER.unpack(head)
    if not info & _XLP_LONG_HEADER or seg_size != size or seg_size < 1 << 20 or seg_size & (seg_size - 1):
        return False
    per_xlogid = 0x100000000 // seg_size
    segno = int(name[8:16], 16) * per_xlogid + int(name[16:24], 16)
    return bool(pageaddr == segno * seg_size)


def take(spool: StrPath, name: str, dest: StrPath) -> int | None:
    """Move a spooled file `name` to `dest` and return its size; None when absent or not a whole
    segment (a file that fails the check is removed: the caller then fetches it directly)."""
    cached = os.path.join(spool, name)
    try:
        size = os.stat(cached).st_size
    except FileNotFoundError:
        return None
    if len(name) == 24 and not segment_ok(cached, name):
        _unlink(cached)
        return None
    try:
        os.replace(cached, dest)
    except FileNotFoundError:
        return None
    return size


def _unlink(path: StrPath) -> None:
    try:  # noqa: SIM105 - contextlib would be one more import on every call
        os.unlink(path)
    except FileNotFoundError:
        pass


def fetcher_alive(spool: StrPath) -> bool:
    """Return True while a fetcher holds the spool's lock."""
    try:
        fd = os.open(os.path.join(spool, LOCK_FILE), os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


# The fetcher's entry point, named by module path (sources/ never imports cli/).
FETCHER_MODULE = "recoverctl.cli.wal_fetcher_entry"


def fetcher_argv(source: str, spool: StrPath, config: str | None) -> list[str]:
    """Return the command line of a fetcher for `spool` run by this interpreter."""
    import sys

    argv = [
        sys.executable,
        "-m",
        FETCHER_MODULE,
        "--source",
        source,
        "--spool",
        str(spool),
    ]
    return argv + (["--config", config] if config else [])


def spawn(
    spool: StrPath, argv: list[str], env: dict[str, str] | None = None, uid_gid: tuple[int, int] | None = None
) -> subprocess.Popen[bytes] | None:
    """Start a fetcher (stderr to the spool's fetcher.log) in this process group; None on failure.

    Staying in the caller's group matters: PostgreSQL signals its startup process's whole group
    on shutdown, and a drill's Ctrl-C reaches the drill's group, so the fetcher goes with them.
    """
    import subprocess

    log_path = os.path.join(spool, LOG_FILE)
    try:
        private_dirs(spool)
        if uid_gid is not None:
            for d in (spool, os.path.dirname(os.path.abspath(spool))):
                os.chown(d, *uid_gid)
        log = open(os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), "ab")  # noqa: SIM115 - handed to the child
        if uid_gid is not None:
            os.chown(log_path, *uid_gid)
    except OSError:
        return None
    user, group = uid_gid if uid_gid else (None, None)
    try:
        return subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log, env=env,
            user=user, group=group, extra_groups=[] if uid_gid else None,
        )  # fmt: skip
    except OSError:
        return None
    finally:
        log.close()


def _clear(spool: StrPath, name: str) -> None:
    for suffix in (".missing", ".error"):
        _unlink(os.path.join(spool, name + suffix))


def fetch(dest: StrPath, source: str, name: str, config: str | None) -> int | None:
    """Serve restore_command for `name` from the spool; start the fetcher when none runs.

    Return the size written to `dest`, MISSING when the fetcher found no such file in the archive
    (nothing is written), or None when the caller must fetch directly (fetcher failed or gone).
    """
    spool = spool_dir(dest, source)
    size = take(spool, name, dest)
    if size is not None:
        return size
    child = None
    if not fetcher_alive(spool):
        child = spawn(spool, fetcher_argv(source, spool, config))
        if child is None:
            return None
    want = os.path.join(spool, name + ".want")
    try:
        _clear(spool, name)
        os.close(os.open(want, os.O_WRONLY | os.O_CREAT, 0o644))
    except OSError:
        return None
    try:
        return _await(spool, name, dest, child)
    finally:
        _unlink(want)


def _await(spool: str, name: str, dest: StrPath, child: subprocess.Popen[bytes] | None) -> int | None:
    started = time.monotonic()
    checked = started
    missing = os.path.join(spool, name + ".missing")
    error = os.path.join(spool, name + ".error")
    while True:
        size = take(spool, name, dest)
        if size is not None:
            return size
        if os.path.exists(missing):
            _clear(spool, name)
            # the file may have landed between the two checks (a read-ahead racing the answer)
            size = take(spool, name, dest)
            return MISSING if size is None else size
        if os.path.exists(error):
            _clear(spool, name)
            return None
        now = time.monotonic()
        if now - started > ANSWER_TIMEOUT_S:
            return None
        if now - checked > 0.1:
            checked = now
            if child is not None and child.poll() is not None:
                return None
            starting = child is not None and now - started < SPAWN_GRACE_S
            if not starting and not fetcher_alive(spool):
                return None
        time.sleep(_POLL_S)


def stop_fetchers(data_dir: StrPath, timeout: float = 3.0) -> None:
    """Stop the fetchers serving a data directory and wait until they are gone (SIGTERM, then
    SIGKILL after `timeout`); never raises."""
    import signal

    root = os.path.join(data_dir, "pg_wal", SPOOL_DIR)
    try:
        sources = os.listdir(root)
    except OSError:
        return
    for source in sources:
        spool = os.path.join(root, source)
        try:
            with open(os.path.join(spool, PID_FILE)) as f:
                pid = int(f.read().strip())
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read()
        except (OSError, ValueError):
            continue
        # the pid must still be a fetcher of this spool (never signal a reused pid)
        ours = pid != os.getpid() and b"wal_fetcher" in cmdline and spool.encode() in cmdline
        if not ours or not fetcher_alive(spool):
            continue
        try:
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            killed = False
            while fetcher_alive(spool) and time.monotonic() < deadline + timeout:
                if time.monotonic() > deadline and not killed:
                    os.kill(pid, signal.SIGKILL)
                    killed = True
                time.sleep(0.01)
        except ProcessLookupError:
            continue
