"""pg_receivewal, supervised: the process that streams a source's WAL into a private spool.

It runs from the server's own bin dir (the same major version speaks the same replication
protocol and writes the same segment files), on a physical replication slot created when missing
(again after each reconnect: a promoted standby has no slot yet), with `--synchronous` so every
message is fsynced before it is acknowledged: the slot then never releases WAL the spool does not
durably hold. It is restarted with exponential backoff (tenacity) when it exits: a primary restart,
a failover, a network cut. The password reaches it through a passfile in a private temporary
directory (PGPASSFILE), never on its command line or in a log.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from psycopg.conninfo import make_conninfo
from tenacity import RetryError, Retrying, retry_if_exception_type, wait_exponential

from recoverctl.config import PostgresSource
from recoverctl.errors import ObjectNotFound
from recoverctl.sources.postgres.connection import connect_env
from recoverctl.sources.postgres.walnames import (
    DEFAULT_SEGMENT_SIZE,
    PARTIAL_RE,
    SEGMENT_RE,
    parse_lsn,
    segment_from_number,
    segment_number,
    timeline_of,
)
from recoverctl.units import human_duration

log = logging.getLogger(__name__)

# A receiver that streamed this long before exiting starts again with the shortest backoff.
STEADY_S = 60.0
BACKOFF_MAX_S = 30.0
_PR_SET_PDEATHSIG = 1


class ReceiverExited(Exception):
    """pg_receivewal exited (or could not start) while it should have been streaming."""


def slot_name(name: str, src: PostgresSource) -> str:
    """Return the replication slot the receiver of source `name` streams from."""
    return src.wal.slot or f"recoverctl_{''.join(c if c.isalnum() else '_' for c in name.lower())}"[:63]


def receiver_conninfo(name: str, src: PostgresSource) -> str:
    """Return the receiver's connection string (no password: see `passfile`); its
    application_name shows it in pg_stat_replication."""
    return make_conninfo(
        host=src.host,
        port=str(src.port),
        user=src.user,
        application_name=f"recoverctl_stream_{name}"[:63],
        connect_timeout="10",
    )


def _passfile_field(value: str) -> str:
    return value.replace("\\", "\\\\").replace(":", "\\:")


@contextlib.contextmanager
def passfile(src: PostgresSource) -> Iterator[dict[str, str]]:
    """Yield the environment pg_receivewal needs for its password: PGPASSFILE naming a 0600 file
    in a fresh 0700 temporary directory, removed on exit; {} when the source has no password
    (libpq then uses ~/.pgpass or trust)."""
    password = connect_env(src).get("PGPASSWORD")
    if password is None:
        yield {}
        return
    folder = tempfile.mkdtemp(prefix="recoverctl-receiver-")  # 0700
    try:
        path = os.path.join(folder, "pgpass")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"*:*:*:*:{_passfile_field(password)}\n")
        yield {"PGPASSFILE": path}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _child_env(extra: dict[str, str]) -> dict[str, str]:
    """Our environment without libpq's password variables, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if k not in ("PGPASSWORD", "PGPASSFILE")}
    return env | extra


def create_slot(bin_dir: Path, conninfo: str, slot: str, env: dict[str, str]) -> None:
    """Create physical replication slot `slot` unless it exists; raise ReceiverExited naming
    pg_receivewal's error when the server refuses."""
    r = subprocess.run(
        [
            str(bin_dir / "pg_receivewal"),
            "--create-slot",
            "--if-not-exists",
            "-S",
            slot,
            "-d",
            conninfo,
            "-w",
        ],
        capture_output=True,
        text=True,
        env=_child_env(env),
        timeout=60,
    )
    if r.returncode != 0:
        raise ReceiverExited(f"cannot create replication slot '{slot}': {r.stderr.strip()}")


def receiver_argv(bin_dir: Path, spool: Path, conninfo: str, slot: str) -> list[str]:
    """Return pg_receivewal's command line: no password, no looping of its own (we supervise)."""
    return [
        str(bin_dir / "pg_receivewal"),
        "-D",
        str(spool),
        "-S",
        slot,
        "-d",
        conninfo,
        "--synchronous",
        "--no-loop",
        "-w",
        "-v",
    ]


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the supervisor dies (even by SIGKILL), so a restarted
    supervisor never finds its slot held by an orphaned receiver."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


_FORK_RE = re.compile(r"forked from timeline (\d+) at ([0-9A-F]+/[0-9A-F]+)")


def set_aside_diverged(spool: Path, stderr: str, fetch: Callable[[str], bytes] | None) -> list[str]:
    """After a failover to a standby that had not received everything the receiver had: given
    pg_receivewal's error naming where the new primary's history forked, rename the spool's
    segments from the fork on to `<name>.diverged` and, when the segment before them is no longer
    in the spool, put it back from the repository (`fetch`), so pg_receivewal resumes at the fork
    and follows the new timeline without a gap. Return the names set aside ([] for other errors).
    The new timeline is taken to be the next one (a server that skipped timelines is streamed
    from its slot instead, and archive_command covers what that misses).

    The old primary's WAL after the fork stays in the repository under its timeline, as the old
    timeline's history (PITR to a point on it still works); the new timeline does not contain it.
    """
    m = _FORK_RE.search(stderr)
    if not m:
        return []
    timeline, fork = int(m.group(1)), parse_lsn(m.group(2))
    files = [e for e in sorted(os.listdir(spool)) if SEGMENT_RE.match(e) or PARTIAL_RE.match(e)]
    size = (spool / files[0]).stat().st_size if files else DEFAULT_SEGMENT_SIZE
    first = fork // size
    moved = []
    for name in files:
        if timeline_of(name) == timeline and segment_number(name[:24], size) >= first:
            os.replace(spool / name, spool / f"{name}.diverged")
            moved.append(name)
    if not moved:
        return moved
    if fork % size == 0:
        # The old timeline ends exactly at a segment boundary, where a walsender answers with the
        # next timeline instead of streaming, which pg_receivewal does not accept: an empty
        # `.partial` of the new timeline makes it start there (it fetches the history file).
        start = spool / f"{segment_from_number(timeline + 1, first, size)}.partial"
        _write_new(start, b"\0" * size)
        return moved
    before = segment_from_number(timeline, first - 1, size)
    if fetch is not None and not (spool / before).exists():
        # not stored: pg_receivewal then starts at the slot, and archive_command fills in
        with contextlib.suppress(ObjectNotFound):
            _write_new(spool / before, fetch(before))
    return moved


def _write_new(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


class Supervisor(threading.Thread):
    """Keeps pg_receivewal running into `spool` until `stop` is set; `on_event(message)` hears
    every start and exit. `pid` is the running receiver's, `restarts` counts its unplanned exits."""

    def __init__(
        self,
        bin_dir: Path,
        spool: Path,
        conninfo: str,
        slot: str,
        env: dict[str, str],
        stop: threading.Event,
        on_event: Callable[[str], None] | None = None,
        fetch: Callable[[str], bytes] | None = None,
    ):
        super().__init__(name="wal-receiver", daemon=True)
        self.bin_dir, self.spool, self.conninfo, self.slot, self.env = bin_dir, spool, conninfo, slot, env
        self.stop = stop
        self.on_event = on_event or (lambda message: log.info("%s", message))
        # a stored WAL segment by name (from the repository): see `set_aside_diverged`
        self.fetch = fetch
        self.proc: subprocess.Popen[str] | None = None
        self.restarts = 0
        self.last_error: str | None = None

    @property
    def pid(self) -> int | None:
        proc = self.proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def run_once(self) -> None:
        """Run pg_receivewal until it exits; return when it had been streaming for STEADY_S or
        we are stopping, raise ReceiverExited otherwise (the caller backs off)."""
        create_slot(self.bin_dir, self.conninfo, self.slot, self.env)
        began = time.monotonic()
        self.proc = subprocess.Popen(
            receiver_argv(self.bin_dir, self.spool, self.conninfo, self.slot),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=_child_env(self.env),
            preexec_fn=_die_with_parent,
        )
        self.on_event(f"pg_receivewal started (pid {self.proc.pid}, slot {self.slot})")
        assert self.proc.stderr is not None
        tail: list[str] = []
        for line in self.proc.stderr:  # ends when the process does
            line = line.rstrip()
            tail = [*tail, line][-20:]
            log.debug("pg_receivewal: %s", line)
        code = self.proc.wait()
        if self.stop.is_set():
            return
        self.restarts += 1
        self.last_error = f"pg_receivewal exited with code {code}: " + " / ".join(
            x.strip() for x in tail[-4:]
        )
        self.on_event(self.last_error)
        moved = set_aside_diverged(self.spool, "\n".join(tail), self.fetch)
        if moved:
            self.on_event(
                f"the new primary's history forked before the spool's end: set aside {', '.join(moved)} "
                "(suffix .diverged; what the old primary wrote after the fork) and resumed at the fork"
            )
        if time.monotonic() - began < STEADY_S:
            raise ReceiverExited(self.last_error)

    def _pause(self, seconds: float) -> None:
        self.stop.wait(seconds)

    def run(self) -> None:
        while not self.stop.is_set():
            retrying = Retrying(
                wait=wait_exponential(multiplier=0.5, max=BACKOFF_MAX_S),
                retry=retry_if_exception_type((ReceiverExited, OSError, subprocess.SubprocessError)),
                stop=lambda state: self.stop.is_set(),
                sleep=self._pause,
                before_sleep=lambda state: self.on_event(
                    f"reconnecting in {human_duration(state.upcoming_sleep)} "
                    f"after: {state.outcome.exception()}"
                    if state.outcome is not None
                    else "reconnecting"
                ),
            )
            try:
                for attempt in retrying:
                    with attempt:
                        self.run_once()
            except (RetryError, ReceiverExited, OSError, subprocess.SubprocessError):
                continue

    def terminate(self) -> None:
        """Stop streaming: set `stop`, end pg_receivewal (it closes its segment cleanly), wait."""
        self.stop.set()
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.join(15)
