"""Recovery of a restored data directory: start the server, wait until it reaches the target, and
read what it recovered to (from the server, or from its log when it shut down at the target).
A recovery that stops early fails naming the WAL segment the archive lacks."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo

from recoverctl.config import PostgresSource
from recoverctl.errors import UsageError, VerificationError
from recoverctl.repo import Repository, Snapshot
from recoverctl.sources.postgres.connection import connect_env, find_bin_dir
from recoverctl.sources.postgres.isolation import isolation_settings
from recoverctl.sources.postgres.recovery import RecoveryTarget, parse_target_time
from recoverctl.sources.postgres.server import (
    default_os_user,
    postmaster_pid,
    postmaster_status,
    remove_secrets,
    server_failure,
    start_server,
    stop_server,
    wait_for,
)
from recoverctl.sources.postgres.wal_fetcher import stop_fetchers
from recoverctl.sources.postgres.walarchive import archived_segments
from recoverctl.sources.postgres.walnames import parse_lsn, segment_from_number, segment_name, segment_number
from recoverctl.units import human_duration

_RECOVERY_TIMEOUT = 6 * 3600.0


def _connect_restored(src: PostgresSource, port: int) -> psycopg.Connection:
    password = connect_env(src).get("PGPASSWORD")
    extra = {"password": password} if password else {}
    info = make_conninfo(
        host="127.0.0.1", port=str(port), user=src.user, dbname="postgres", connect_timeout="5",
        application_name="recoverctl-restore", **extra,
    )  # fmt: skip
    return psycopg.connect(info, autocommit=True)


def _recovered_point(src: PostgresSource, port: int) -> tuple[str | None, float | None, bool]:
    with _connect_restored(src, port) as conn:
        row = conn.execute(
            "select pg_last_wal_replay_lsn()::text, "
            "extract(epoch from pg_last_xact_replay_timestamp())::float8, "
            "pg_is_in_recovery()"
        ).fetchone()
    assert row is not None
    return row[0], row[1], bool(row[2])


_REDO_DONE_RE = re.compile(r"redo done at ([0-9A-F]+/[0-9A-F]+)")
_LAST_TX_RE = re.compile(r"last completed transaction was at log time (.+)$", re.M)
_STOPPING_RE = re.compile(r"recovery stopping (?:before|after) .*?time ([0-9-]+ [0-9:.]+[+-][0-9:]+)")


def _point_from_log(log: Path) -> tuple[str | None, float | None]:
    text = log.read_text(errors="replace") if log.exists() else ""
    lsn = _REDO_DONE_RE.findall(text)
    ts = _LAST_TX_RE.findall(text) or _STOPPING_RE.findall(text)
    commit = None
    if ts:
        try:
            commit = parse_target_time(ts[-1].strip()).timestamp()
        except UsageError:
            commit = None
    return (lsn[-1] if lsn else None), commit


def _log_tail(log: Path, lines: int = 5) -> str:
    try:
        return " | ".join(log.read_text(errors="replace").strip().splitlines()[-lines:])
    except FileNotFoundError:
        return "(no server log)"


def _missing_after(repo: Repository, source: str, timeline: int, lsn: str | None, log: Path) -> str | None:
    """Name the segment recovery wanted but the archive lacks, from the log or the recovered LSN."""
    text = log.read_text(errors="replace") if log.exists() else ""
    fetched = re.findall(r"restored log file \"([0-9A-F]{24})\" from archive", text)
    have = archived_segments(repo, source).get(timeline, set())
    if fetched:
        last = max(fetched)
        nxt = segment_from_number(int(last[:8], 16), segment_number(last) + 1)
        if nxt not in have:
            return nxt
    if lsn:
        seg = segment_name(timeline, parse_lsn(lsn))
        if seg not in have:
            return seg
    return None


def _exited(
    repo: Repository, name: str, snap: Snapshot, target_dir: Path, target: RecoveryTarget, log: Path
) -> VerificationError:
    """Given a server that exited during recovery, return the error naming why (and the WAL segment
    the archive lacks, when that is it)."""
    failure = server_failure(log) or "the server exited: " + _log_tail(log)
    seen_lsn, _ = _point_from_log(log)
    missing = _missing_after(repo, name, int(snap.metadata["timeline"]), seen_lsn, log)
    return VerificationError(
        f"recovery of '{target_dir}' to {target.describe()} failed: {failure}"
        + (f"; WAL segment {missing} is missing from the archive" if missing else ""),
        hint=f"server log: {log}",
        details={"missing_segment": missing, "log": str(log)},
    )


def _recovery_ended(
    src: PostgresSource, port: int, target_action: str
) -> tuple[bool, str | None, float | None]:
    """Ask the server accepting connections on `port` where it is; return (recovery ended, replayed
    LSN, last commit time). With target action pause it ends when replay is paused."""
    try:
        lsn, commit, in_recovery = _recovered_point(src, port)
        if target_action == "pause" and in_recovery:
            with _connect_restored(src, port) as conn:
                state = conn.execute("select pg_get_wal_replay_pause_state()").fetchone()
            return bool(state and state[0] == "paused"), lsn, commit
        return not in_recovery, lsn, commit
    except psycopg.OperationalError:
        return False, None, None  # between consistency and promotion connections may still be refused


def run_recovery(
    repo: Repository,
    name: str,
    src: PostgresSource,
    snap: Snapshot,
    target_dir: Path,
    port: int,
    user: str | None,
    target: RecoveryTarget,
    target_action: str,
) -> dict[str, Any]:
    """Start the server restored in `target_dir` on `port` and wait until recovery ends; return
    {recovered_lsn, recovered_commit_ts, phases, server, bin_dir}. Raise VerificationError when
    the server fails (naming the WAL segment the archive lacks), recovery times out, or it ends
    before `target`."""
    bin_dir = find_bin_dir(src, int(snap.metadata["server_version"]) // 10000)
    began = time.monotonic()
    # A scratch copy: on the command line, so no file of production's can undo it (data_directory,
    # primary_conninfo, subscriptions' apply workers, archiving, production's commands).
    log = start_server(target_dir, bin_dir, port, user, settings=isolation_settings(target_dir))
    # pg_ctl returns before the postmaster has written its pid file
    wait_for(lambda: postmaster_pid(target_dir) is not None or server_failure(log) is not None, 30.0, 0.05)
    deadline = began + _RECOVERY_TIMEOUT
    lsn: str | None = None
    commit: float | None = None
    while True:
        if postmaster_pid(target_dir) is None:
            if target_action == "shutdown" and not server_failure(log):
                lsn, commit = _point_from_log(log)
                break
            raise _exited(repo, name, snap, target_dir, target, log)
        if time.monotonic() > deadline:
            stop_server(target_dir, bin_dir, user, "immediate")
            raise VerificationError(
                f"recovery of '{target_dir}' did not finish within {human_duration(_RECOVERY_TIMEOUT)}"
            )
        status = postmaster_status(target_dir)
        # Not accepting connections before it is consistent; a standby still replays when the
        # target action is promote ('ready' comes with the promotion).
        if status not in ("ready", "standby") or (status == "standby" and target_action == "promote"):
            time.sleep(0.02)
            continue
        ended, lsn, commit = _recovery_ended(src, port, target_action)
        if ended:
            break
        time.sleep(0.05)
    if target.kind != "latest":
        reached = "recovery stopping" in log.read_text(errors="replace") or target.kind == "immediate"
        if not reached:
            stop_server(target_dir, bin_dir, user, "immediate")
            raise VerificationError(
                f"recovery of '{target_dir}' ended before reaching {target.describe()}",
                hint=f"the archive may end before the target; server log: {log}",
            )
    return {
        "recovered_lsn": lsn,
        "recovered_commit_ts": commit,
        "phases": {"recovery": round(time.monotonic() - began, 3)},
        "server": None
        if target_action == "shutdown"
        else {"port": port, "data_dir": str(target_dir), "pid": postmaster_pid(target_dir), "log": str(log)},
        "bin_dir": str(bin_dir),
    }


def stop_restored_server(
    target_dir: Path, bin_dir: Path | str | None = None, os_user: str | None = None
) -> None:
    """Stop a server started by `restore_postgres(start_port=...)` and wait until it is down."""
    bin_path = Path(bin_dir) if bin_dir else find_bin_dir(PostgresSource(type="postgres"), _major(target_dir))
    stop_server(Path(target_dir), bin_path, default_os_user(os_user))
    remove_secrets(Path(target_dir))
    stop_fetchers(Path(target_dir), remove_spools=True)


def _major(data_dir: Path) -> int | None:
    try:
        return int((Path(data_dir) / "PG_VERSION").read_text().strip().split(".")[0])
    except (OSError, ValueError):
        return None
