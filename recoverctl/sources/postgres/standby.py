"""Backing up from a streaming standby (`backup_from: standby`), pgBackRest's backup-standby way.

pg_backup_start and pg_backup_stop run on the primary (so backup_label, tablespace_map and the WAL
switch are the primary's, and archive_mode=on on the primary is enough). Between them, the
backup waits until the standby has replayed past the start LSN and made a restartpoint there
(so every page older than the backup's redo point is on the standby's disk, as a checkpoint
guarantees on the primary), then reads the data files from the standby's data directory.

What is the standby's own and would make a restore follow the old primary is not copied from
it: standby.signal, recovery.signal and pg_replslot are excluded as for any backup, and every
top-level file (postgresql.auto.conf with the standby's primary_conninfo, PG_VERSION, config
files kept in the data directory) and global/pg_control come from the primary, read through
SQL (pg_read_binary_file: a few KiB). Top-level files only the standby has are left out.
"""

from __future__ import annotations

import stat
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from recoverctl.config import PostgresSource, PostgresStandby
from recoverctl.errors import ConfigError, RecoverctlError, UsageError
from recoverctl.sources.postgres.connection import connect
from recoverctl.sources.postgres.files import EXCLUDED_FILES
from recoverctl.sources.postgres.walnames import format_lsn, parse_lsn

ExcludeFn = Callable[[str, Any], bool]
# How often the replay and restartpoint positions are polled while waiting.
_POLL_S = 0.2
# Top-level files up to this size are taken from the primary (configuration, PG_VERSION...).
_TOP_FILE_MAX = 1024 * 1024


def standby_source(src: PostgresSource) -> PostgresSource:
    """Given a postgres source with a `standby:` section, return a source config that connects to
    the standby (keys the section leaves out are the source's own)."""
    sb = src.standby
    assert sb is not None
    # A password given for the standby replaces both of the source's (inline and file).
    own_password = sb.password is not None or sb.password_file is not None
    return src.model_copy(
        update={
            "host": sb.host,
            "port": sb.port,
            "user": sb.user or src.user,
            "dbname": sb.dbname or src.dbname,
            "password": sb.password if own_password else src.password,
            "password_file": sb.password_file if own_password else src.password_file,
            "data_dir": sb.data_dir,
            "standby": None,
            "backup_from": "primary",
        }
    )


@dataclass
class StandbyFacts:
    """What the standby says about itself (`verify_standby`)."""

    host: str
    port: int
    system_identifier: str
    timeline: int
    replay_lsn: str
    data_directory: str


def _sysid(conn: psycopg.Connection) -> str:
    row = conn.execute("select system_identifier::text from pg_control_system()").fetchone()
    assert row is not None
    return str(row[0])


def verify_standby(
    name: str, sb: PostgresStandby, primary: psycopg.Connection, conn: psycopg.Connection
) -> StandbyFacts:
    """Given connections to the primary and to the configured standby, return the standby's facts;
    raise ConfigError when it is not in recovery, belongs to another cluster (system identifier) or
    follows another timeline than the primary's."""
    where = f"standby {sb.host}:{sb.port} of source '{name}'"
    row = conn.execute(
        "select pg_is_in_recovery(), system_identifier::text, pg_last_wal_replay_lsn()::text, "
        "current_setting('data_directory'), (select timeline_id from pg_control_checkpoint()) "
        "from pg_control_system()"
    ).fetchone()
    assert row is not None
    in_recovery, sysid, replay, data_directory, standby_tli = row
    hint = "point 'standby:' at a streaming standby of this primary, or set backup_from: primary"
    if not in_recovery:
        raise ConfigError(f"{where} is not in recovery (pg_is_in_recovery() is false): it is a primary",
                         hint=hint)  # fmt: skip
    primary_sysid = _sysid(primary)
    if str(sysid) != primary_sysid:
        raise ConfigError(
            f"{where} is a standby of another cluster: system identifier {sysid}, "
            f"the primary's is {primary_sysid}",
            hint=hint,
        )
    tli_row = primary.execute("select timeline_id from pg_control_checkpoint()").fetchone()
    primary_tli = int(tli_row[0]) if tli_row else 1
    received = conn.execute("select received_tli from pg_stat_wal_receiver").fetchone()
    tli = int(received[0]) if received and received[0] else int(standby_tli or 1)
    if tli != primary_tli:
        raise ConfigError(f"{where} is on timeline {tli}, the primary on timeline {primary_tli}", hint=hint)
    return StandbyFacts(sb.host, sb.port, str(sysid), tli, str(replay or "0/0"), str(data_directory))


def _replay_lsn(conn: psycopg.Connection) -> int:
    row = conn.execute("select pg_last_wal_replay_lsn()::text").fetchone()
    if row is None or row[0] is None:
        raise RecoverctlError(
            "the standby no longer reports a replay position: it was promoted during the backup",
            hint="run the backup again (set backup_from: primary if the standby is now the primary)",
        )
    return parse_lsn(str(row[0]))


def _restartpoint(conn: psycopg.Connection) -> tuple[int, int]:
    row = conn.execute("select checkpoint_lsn::text, timeline_id from pg_control_checkpoint()").fetchone()
    assert row is not None
    return parse_lsn(str(row[0])), int(row[1])


class StandbyCopy:
    """A standby opened for one backup: its connection, its data directory as readable here, and
    what the backup takes from the primary instead of it."""

    def __init__(self, name: str, src: PostgresSource, primary: psycopg.Connection, conn: psycopg.Connection):
        assert src.standby is not None
        self.name = name
        self.config = src.standby
        self.primary = primary
        self.conn = conn
        self.facts = verify_standby(name, self.config, primary, conn)
        self.data_dir = Path(self.config.data_dir or self.facts.data_directory)
        if not (self.data_dir / "PG_VERSION").is_file():
            raise UsageError(
                f"data directory '{self.data_dir}' of the standby of source '{name}' is not readable here",
                hint="run recoverctl on the standby's host as its OS user, and set 'standby.data_dir'",
            )
        self.replay_wait_s = 0.0
        self._primary_top: dict[str, bytes] | None = None
        self._primary_names: list[tuple[str, int]] | None = None

    @property
    def host(self) -> str:
        return self.config.host

    @property
    def where(self) -> str:
        return f"standby {self.host}:{self.config.port} of source '{self.name}'"

    def catch_up(self, start_lsn: str, timeline: int) -> float:
        """Wait until the standby has replayed the backup's start checkpoint (`start_lsn` is its
        redo point) on `timeline` and made a restartpoint at or after `start_lsn` (a CHECKPOINT on
        a standby); return the seconds waited.

        Raise RecoverctlError when replay makes no progress for `replay_wait` seconds, when the
        standby is ahead of the primary (its restartpoint past the primary's latest checkpoint: it
        cannot be following this primary) or ends on another timeline.
        """
        target = parse_lsn(start_lsn)
        started = time.monotonic()
        # The primary's latest checkpoint record: the backup's start checkpoint or a later one.
        primary_checkpoint, _ = _restartpoint(self.primary)
        restart_lsn, _ = _restartpoint(self.conn)
        if restart_lsn > primary_checkpoint:
            raise RecoverctlError(
                f"{self.where} is ahead of the primary: its restartpoint {format_lsn(restart_lsn)} is past "
                f"the primary's checkpoint {format_lsn(primary_checkpoint)}",
                hint="the standby does not follow this primary; point 'standby:' at one that does",
            )
        # The replay position is the end of the last replayed record: past the checkpoint's start.
        self._wait(lambda: _replay_lsn(self.conn), max(target, primary_checkpoint + 1), "replayed")

        def restartpoint() -> int:
            # A no-op until the standby has a newer checkpoint record to make a restartpoint at.
            self.conn.execute("checkpoint")
            return _restartpoint(self.conn)[0]

        self._wait(restartpoint, target, "made a restartpoint at")
        _, standby_tli = _restartpoint(self.conn)
        if standby_tli != timeline:
            raise RecoverctlError(
                f"{self.where} is on timeline {standby_tli}, the backup started on timeline {timeline}",
                hint="the standby does not follow this primary; point 'standby:' at one that does",
            )
        self.replay_wait_s = time.monotonic() - started
        return self.replay_wait_s

    def _wait(self, position: Callable[[], int], target: int, what: str) -> None:
        """Poll `position()` until it reaches `target`; raise RecoverctlError after `replay_wait`
        seconds without progress (the timer restarts whenever the position moves)."""
        last = position()
        deadline = time.monotonic() + self.config.replay_wait
        while last < target:
            if time.monotonic() >= deadline:
                raise RecoverctlError(
                    f"timeout: {self.where} has not {what} {format_lsn(target)}, where the backup "
                    f"starts (it is at {format_lsn(last)}; no progress for {self.config.replay_wait:g}s)",
                    hint="check that the standby is streaming and replaying (pg_stat_wal_receiver, "
                    "pg_is_wal_replay_paused()), raise 'standby.replay_wait', or set backup_from: primary",
                    details={"standby": f"{self.host}:{self.config.port}", "target_lsn": format_lsn(target)},
                )
            time.sleep(_POLL_S)
            now = position()
            if now > last:
                deadline = time.monotonic() + self.config.replay_wait
            last = now

    def primary_files(self) -> dict[str, bytes]:
        """Return the top-level files (up to 1 MiB) and global/pg_control as the primary has them
        (read through SQL), keyed by their path in the data directory; raise UsageError when the
        role may not read server files."""
        if self._primary_top is None:
            self._primary_top = {}
            for name, size in self._primary_top_level():
                data = self._read(name) if size < _TOP_FILE_MAX else None
                if data is not None:
                    self._primary_top[name] = data
            control = self._read("global/pg_control")
            assert control is not None, "the primary has no global/pg_control"
            self._primary_top["global/pg_control"] = control
        return self._primary_top

    def _primary_top_level(self) -> list[tuple[str, int]]:
        """Return the primary's top-level regular files a backup keeps, with their sizes."""
        if self._primary_names is None:
            rows = self._sql(
                "select name, (pg_stat_file(name, true)).size from pg_ls_dir('.') as name "
                "where not coalesce((pg_stat_file(name, true)).isdir, true) order by name"
            )
            self._primary_names = [
                (str(n), int(size))
                for n, size in rows
                if n not in EXCLUDED_FILES and not str(n).startswith(("pgsql_tmp", "pg_internal.init"))
            ]
        return self._primary_names

    def _read(self, relpath: str) -> bytes | None:
        rows = self._sql("select pg_read_binary_file(%s, 0, %s, true)", (relpath, _TOP_FILE_MAX))
        return bytes(rows[0][0]) if rows and rows[0][0] is not None else None

    def _sql(self, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Run `query` on the primary; raise UsageError when the role may not read server files."""
        try:
            return self.primary.execute(query, params).fetchall()
        except psycopg.errors.InsufficientPrivilege as e:
            raise UsageError(
                f"source '{self.name}': the role '{self.primary.info.user}' may not read the primary's "
                f"control and configuration files: {str(e).strip()}",
                hint="backup_from: standby reads them with pg_ls_dir/pg_read_binary_file: "
                "GRANT pg_read_server_files TO the role (or use a superuser)",
            ) from None

    def exclusions(self, base: ExcludeFn) -> ExcludeFn:
        """Return `base` plus the standby's top-level files the primary does not have."""
        primary = {name for name, _ in self._primary_top_level()}

        def excluded(relpath: str, st: Any) -> bool:
            if "/" not in relpath and stat.S_ISREG(st.st_mode) and relpath not in primary:
                return True
            return base(relpath, st)

        return excluded

    def metadata(self) -> dict[str, Any]:
        """Return what the snapshot records about where its files were read."""
        return {
            "backup_from": "standby",
            "standby_host": f"{self.host}:{self.config.port}",
            "standby_data_dir": str(self.data_dir),
            "standby_replay_wait_s": round(self.replay_wait_s, 3),
        }


@contextmanager
def standby_for(name: str, src: PostgresSource, primary: psycopg.Connection) -> Iterator[StandbyCopy | None]:
    """Given a source and a connection to its primary, yield the verified StandbyCopy when the
    source backs up from a standby (None otherwise) and close its connection afterwards; raise
    RecoverctlError when the standby cannot be reached, ConfigError when it is not a standby of
    this primary, UsageError when its data directory is not readable here."""
    if src.backup_from != "standby":
        yield None
        return
    conn = connect(standby_source(src), f"{name} (standby)")
    try:
        yield StandbyCopy(name, src, primary, conn)
    finally:
        conn.close()
