"""Streaming mode for a postgres source: pg_receivewal supervised into a private spool
(`receiver.py`), its segments and partial segment uploaded every flush interval
(`receiver_upload.py`), and the lag measured against the primary.

The lag is what the repository misses, not what the receiver does: bytes between the primary's
current WAL position and the end of the WAL the repository holds, and seconds since the primary
was last at a position the repository holds (the data-loss window if the primary died now).
"""

from __future__ import annotations

import collections
import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from recoverctl.config import PostgresSource
from recoverctl.errors import LockedError, RecoverctlError
from recoverctl.sources.postgres.connection import connect, find_bin_dir, server_major
from recoverctl.sources.postgres.fetchspool import private_dirs
from recoverctl.sources.postgres.receiver import Supervisor, passfile, receiver_conninfo, slot_name
from recoverctl.sources.postgres.receiver_upload import SpoolUploader
from recoverctl.sources.postgres.walnames import format_lsn, parse_lsn, wal_key

if TYPE_CHECKING:
    import psycopg

    from recoverctl.repo import Repository

log = logging.getLogger(__name__)

LOCK_FILE = ".recoverctl-stream.lock"


def default_spool(name: str, src: PostgresSource, env: dict[str, str] | None = None) -> Path:
    """Return the receiver's spool directory: `wal.spool_dir`, else
    <XDG data home>/recoverctl/wal-stream/<source>."""
    if src.wal.spool_dir:
        return Path(src.wal.spool_dir)
    env = dict(os.environ) if env is None else env
    base = Path(env.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "recoverctl" / "wal-stream" / name


@contextmanager
def spool_lock(spool: Path) -> Iterator[None]:
    """Hold the spool for this process; raise LockedError when another receiver streams into it."""
    private_dirs(spool)
    fd = os.open(spool / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LockedError(
                f"another 'wal stream' already streams into '{spool}'",
                hint="run one receiver per source (see its systemd unit or Kubernetes manifest)",
            ) from None
        yield
    finally:
        os.close(fd)


@dataclass
class PrimaryState:
    """What the primary said on one poll."""

    at: float
    lsn: int
    slot_retained_bytes: int | None  # WAL the slot holds back (current LSN - restart_lsn)
    slot_wal_status: str | None  # reserved / extended / unreserved / lost
    max_slot_wal_keep_bytes: int | None  # None: unlimited (-1)


_PRIMARY_SQL = """
select pg_current_wal_lsn()::text,
       pg_wal_lsn_diff(pg_current_wal_lsn(), s.restart_lsn)::bigint,
       s.wal_status,
       (select setting::bigint from pg_settings where name = 'max_slot_wal_keep_size')
from (select 1) one left join pg_replication_slots s on s.slot_name = %s
"""


def poll_primary(conn: psycopg.Connection, slot: str) -> PrimaryState:
    """Return the primary's current WAL position and what our slot retains."""
    row = conn.execute(_PRIMARY_SQL, (slot,)).fetchone()
    assert row is not None
    keep_mb = int(row[3]) if row[3] is not None else -1
    return PrimaryState(
        at=time.time(),
        lsn=parse_lsn(row[0]),
        slot_retained_bytes=int(row[1]) if row[1] is not None else None,
        slot_wal_status=row[2],
        max_slot_wal_keep_bytes=keep_mb * 1024 * 1024 if keep_mb >= 0 else None,
    )


class LagMeter:
    """Remembers (time, primary LSN) samples to say since when the repository is behind."""

    def __init__(self) -> None:
        self.samples: collections.deque[tuple[float, int]] = collections.deque(maxlen=100_000)

    def add(self, at: float, lsn: int) -> None:
        self.samples.append((at, lsn))

    def lag(self, uploaded_lsn: int | None, now: float) -> tuple[int | None, float | None]:
        """Return (bytes, seconds) the repository is behind the newest sample; (None, None)
        before the first sample. Seconds: since the newest sample the repository fully holds."""
        if not self.samples or uploaded_lsn is None:
            return None, None
        newest_lsn = self.samples[-1][1]
        held = [at for at, lsn in self.samples if lsn <= uploaded_lsn]
        while len(self.samples) > 1 and self.samples[1][1] <= uploaded_lsn:
            self.samples.popleft()  # older than the newest held sample: never needed again
        behind = max(0, newest_lsn - uploaded_lsn)
        if behind == 0:
            return 0, 0.0
        since = held[-1] if held else self.samples[0][0]
        return behind, max(0.0, now - since)


@dataclass
class StreamStatus:
    """The receiver's state after one pass: heartbeat details, status output and metrics."""

    source: str
    slot: str
    spool: str
    receiver_pid: int | None = None
    restarts: int = 0
    last_error: str | None = None
    primary_lsn: str | None = None
    uploaded_lsn: str | None = None
    lag_bytes: int | None = None
    lag_seconds: float | None = None
    partial_segment: str | None = None
    last_stored: str | None = None
    stored_total: int = 0
    last_upload_at: float | None = None
    # the newest time at which the primary's WAL is entirely in the repository
    safe_until: float | None = None
    slot_retained_bytes: int | None = None
    slot_wal_status: str | None = None
    max_slot_wal_keep_bytes: int | None = None
    stored_now: list[str] = field(default_factory=list)


def resolve_bin_dir(name: str, src: PostgresSource) -> Path:
    """Return the bin dir of the server's major version (asked from the server when it answers)."""
    try:
        with connect(src, name) as conn:
            return find_bin_dir(src, server_major(conn))
    except RecoverctlError:
        return find_bin_dir(src, None)


class Streamer:
    """One source's receiver, uploader and lag meter; `step()` is one flush interval's work."""

    def __init__(self, repo: Repository, name: str, src: PostgresSource, spool: Path):
        self.repo, self.name, self.src, self.spool = repo, name, src, spool
        self.uploader = SpoolUploader(repo, name, spool)
        self.meter = LagMeter()
        self.status = StreamStatus(source=name, slot=slot_name(name, src), spool=str(spool))
        self.conn: psycopg.Connection | None = None

    def _poll(self) -> PrimaryState | None:
        try:
            if self.conn is None or self.conn.closed:
                self.conn = connect(self.src, self.name)
            return poll_primary(self.conn, self.status.slot)
        except Exception as e:  # the primary restarting or failing over: the receiver reconnects too
            log.debug("cannot poll the primary of '%s': %s", self.name, e)
            if self.conn is not None:
                self.conn.close()
            self.conn = None
            return None

    def step(self, supervisor: Supervisor | None) -> StreamStatus:
        """Poll the primary, upload what the spool has, and return the updated status.

        The primary is polled before the upload, so an upload that reaches its position proves
        the repository held everything up to the poll's time. Raise what the repository raises.
        """
        state = self._poll()
        tick = self.uploader.tick()
        now = time.time()
        st = self.status
        if state is not None:
            self.meter.add(state.at, state.lsn)
            st.primary_lsn = format_lsn(state.lsn)
            st.slot_retained_bytes = state.slot_retained_bytes
            st.slot_wal_status = state.slot_wal_status
            st.max_slot_wal_keep_bytes = state.max_slot_wal_keep_bytes
        if tick.uploaded_lsn is not None:
            st.uploaded_lsn = format_lsn(tick.uploaded_lsn)
        if tick.stored or tick.partial_uploaded:
            st.last_upload_at = now
        st.stored_now = tick.stored
        st.stored_total += len(tick.stored)
        segments = [s for s in tick.stored if len(s) == 24]
        st.last_stored = max(segments) if segments else st.last_stored
        st.partial_segment = tick.partial
        lag_bytes, lag_seconds = self.meter.lag(tick.uploaded_lsn, now)
        st.lag_bytes, st.lag_seconds = lag_bytes, None if lag_seconds is None else round(lag_seconds, 3)
        if lag_seconds is not None:
            st.safe_until = now - lag_seconds
        if supervisor is not None:
            st.receiver_pid, st.restarts = supervisor.pid, supervisor.restarts
            st.last_error = supervisor.last_error
        return st

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


def stream(
    repo: Repository,
    name: str,
    src: PostgresSource,
    stop: threading.Event,
    on_status: Callable[[StreamStatus], None],
    on_event: Callable[[str], None],
    spool: Path | None = None,
    on_upload_failed: Callable[[StreamStatus, RecoverctlError], None] | None = None,
) -> StreamStatus:
    """Stream source `name`'s WAL into `repo` until `stop` is set; call `on_status` after every
    flush interval, `on_event` on receiver starts, exits and upload failures, and
    `on_upload_failed` with the status so far and the error on each failed upload. Return the last
    status (after a final upload of what pg_receivewal wrote before it stopped). Raise LockedError
    when another receiver holds the spool, ConfigError when no pg_receivewal is found."""
    spool = spool or default_spool(name, src)
    with spool_lock(spool), passfile(src) as env:
        bin_dir = resolve_bin_dir(name, src)
        conninfo = receiver_conninfo(name, src)
        streamer = Streamer(repo, name, src, spool)
        slot = streamer.status.slot
        supervisor = Supervisor(
            bin_dir,
            spool,
            conninfo,
            slot,
            env,
            threading.Event(),
            on_event,
            lambda n: repo.get_object(wal_key(name, n)),
        )
        try:
            # before streaming more: upload what an earlier receiver left in the spool, and
            # report what the slot retains from the time no receiver ran
            on_status(streamer.step(None))
        except RecoverctlError as e:
            on_event(f"upload failed, retrying next interval: {e}")
            if on_upload_failed is not None:
                on_upload_failed(streamer.status, e)
        supervisor.start()
        try:
            while not stop.wait(src.wal.flush_interval):
                try:
                    on_status(streamer.step(supervisor))
                except RecoverctlError as e:  # the repository unreachable: the spool keeps the WAL
                    on_event(f"upload failed, retrying next interval: {e}")
                    if on_upload_failed is not None:
                        on_upload_failed(streamer.status, e)
        finally:
            supervisor.terminate()
            try:
                status = streamer.step(supervisor)
            finally:
                streamer.close()
    return status
