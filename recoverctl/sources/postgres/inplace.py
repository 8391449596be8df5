"""Replacing a cluster's data directory in place with a restored one: make sure the WAL holding
the restore point is archived, stop the old server, move its directory aside (kept, never
deleted), move the restored one in, start it and wait until it has replayed to the point and
promoted. Each step checks what an earlier run left, so a resumed rollback continues."""

from __future__ import annotations

import time
from pathlib import Path

from recoverctl.config import PostgresSource
from recoverctl.errors import RecoverctlError, VerificationError
from recoverctl.sources.postgres.connection import connect, find_bin_dir, server_major
from recoverctl.sources.postgres.server import (
    log_path,
    postmaster_pid,
    remove_secrets,
    server_failure,
    start_server,
    stop_server,
    wait_for,
)
from recoverctl.units import human_duration

_ARCHIVE_TIMEOUT = 120.0
_RECOVERY_TIMEOUT = 3600.0


def archive_restore_point(src: PostgresSource, name: str, restore_point: str, restore_lsn: str) -> Path:
    """Switch WAL and wait until the segment holding `restore_lsn` is archived; return the server's
    bin dir. Raise RecoverctlError (nothing stopped) when it is not archived in time."""
    with connect(src, name) as conn:
        bin_dir = find_bin_dir(src, server_major(conn))
        row = conn.execute("select pg_walfile_name(%s::pg_lsn)", (restore_lsn,)).fetchone()
        assert row is not None
        segment = str(row[0])
        # The restore point's record must be in the archive before the server stops.
        conn.execute("select pg_switch_wal()")

        def archived() -> bool:
            r = conn.execute("select coalesce(last_archived_wal, '') from pg_stat_archiver").fetchone()
            return r is not None and str(r[0]) >= segment

        if not wait_for(archived, _ARCHIVE_TIMEOUT, 0.2):
            raise RecoverctlError(
                f"WAL segment {segment} holding restore point '{restore_point}' was not archived "
                f"within {human_duration(_ARCHIVE_TIMEOUT)}",
                hint="check archive_command / 'recoverctl status'; nothing was stopped",
            )
    return bin_dir


def move_aside(data_dir: Path, aside: Path, bin_dir: Path, user: str | None) -> None:
    """Stop the server on `data_dir` and rename the directory to `aside`; raise RecoverctlError
    when the server does not stop."""
    stop_server(data_dir, bin_dir, user)
    if postmaster_pid(data_dir) is not None:
        raise RecoverctlError(f"PostgreSQL on '{data_dir}' did not stop", hint="stop it, then --resume")
    data_dir.rename(aside)


def bin_dir_of(src: PostgresSource, data_dir: Path) -> Path:
    """Return the bin dir of the PostgreSQL version that wrote `data_dir`."""
    return find_bin_dir(src, int((data_dir / "PG_VERSION").read_text().split(".")[0]))


def start_restored(
    src: PostgresSource,
    name: str,
    data_dir: Path,
    fresh: Path,
    aside: Path,
    bin_dir: Path,
    user: str | None,
    restore_point: str,
) -> float:
    """Start the server on the restored `data_dir` (unless it runs) and wait until it has promoted
    at `restore_point`; return the seconds it took. Raise RecoverctlError when recovery does not
    finish, VerificationError when it ended without reaching the restore point."""
    began = time.monotonic()
    log = log_path(data_dir)
    if postmaster_pid(data_dir) is None:
        start_server(data_dir, bin_dir, src.port, user)
        # pg_ctl -W returns before the postmaster has written its pid file.
        wait_for(lambda: postmaster_pid(data_dir) is not None, 30.0, 0.05)

    def promoted() -> bool:
        if postmaster_pid(data_dir) is None:
            return True  # the server exited: reported below
        try:
            with connect(src, name, connect_timeout=5) as conn:
                r = conn.execute("select pg_is_in_recovery()").fetchone()
            return r is not None and not r[0]
        except RecoverctlError:
            return False

    recovered = wait_for(promoted, _RECOVERY_TIMEOUT, 0.2)
    remove_secrets(fresh)  # the passphrase file restore_command read, if the restore wrote one
    if not recovered or postmaster_pid(data_dir) is None:
        raise RecoverctlError(
            f"PostgreSQL on '{data_dir}' did not finish recovery: {server_failure(log) or 'timed out'}",
            hint=f"server log: {log}; the previous data directory is kept in '{aside}'",
        )
    text = log.read_text(errors="replace") if log.exists() else ""
    if "recovery stopping" not in text:
        raise VerificationError(
            f"recovery of '{data_dir}' ended without reaching restore point '{restore_point}'",
            hint=f"server log: {log}; the previous data directory is kept in '{aside}'",
        )
    return time.monotonic() - began
