"""`restore postgres`: physical point-in-time restore and logical restore, recorded as runs.

The mechanics are in sources/postgres/ (restore.py: snapshot choice, files, recovery config;
layout.py: tablespaces and pg_wal; replay.py: starting the server and waiting for recovery).
Recovery that stopped early is never reported as success.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recoverctl.actions.operation import operation
from recoverctl.catalog import Catalog
from recoverctl.config import Config
from recoverctl.progress import Progress
from recoverctl.repo.configured import open_repository
from recoverctl.sources.postgres.backup import find_logical
from recoverctl.sources.postgres.layout import tablespace_plan
from recoverctl.sources.postgres.recovery import RecoveryTarget, normalize_target, recovery_settings
from recoverctl.sources.postgres.restore import (
    PhysicalRestoreResult,
    check_archive,
    choose_snapshot,
    pg_restore_argv,
    stream_into_pg_restore,
)
from recoverctl.sources.registry import source_for

__all__ = ["PhysicalRestoreResult", "RecoveryTarget", "restore_postgres", "restore_postgres_logical"]


@dataclass
class PhysicalRestorePlan:
    """Which backup a restore would use, and where its tablespaces and pg_wal would go."""

    source: str
    snapshot_id: str
    snapshot_time: float
    backup_stop_lsn: str
    target: str
    tablespaces: list[dict[str, Any]]
    wal_dir: str | None  # None: a directory inside the target
    dry_run: bool = True


@dataclass
class LogicalRestoreResult:
    source: str
    snapshot_id: str
    database: str
    tables: list[str]
    bytes: int
    duration_s: float


def restore_postgres(
    cfg: Config,
    catalog: Catalog,
    password: str,
    *,
    source: str | None,
    target_dir: Path,
    snapshot: str | None = None,
    target: RecoveryTarget | None = None,
    target_action: str = "promote",
    delta: bool = False,
    start_port: int | None = None,
    os_user: str | None = None,
    progress: object | None = None,
    fetch_ahead: bool = False,
    tablespace_map: dict[str, str] | None = None,
    wal_dir: Path | None = None,
    server_starts: bool = False,
) -> PhysicalRestoreResult:
    """Restore a physical backup of `source` into `target_dir`, set up recovery to `target`.

    Tablespaces go to their original directories, or to those `tablespace_map` gives
    ({oid or name: dir}); pg_tblspc/<oid> links and the tablespace_map file name them.
    pg_wal is a directory inside `target_dir`, or a link to `wal_dir` (like initdb --waldir),
    even when the backup's pg_wal was a link. No other symlink that could point outside
    `target_dir` is restored: they are listed in 'links_skipped' ({path, target}).

    With `fetch_ahead` or `start_port` (the server starts right after), the WAL fetcher starts
    while the files are restored, so recovery's first restore_command finds it ready.
    With either, or `server_starts` (the caller starts the server right after), a passphrase
    that comes from no file is written to `server.secrets_dir(target_dir)` for restore_command:
    the caller removes it with `server.remove_secrets` once recovery has ended (here: when
    `start_port` recovery ends, except for a paused one, which `replay.stop_restored_server`
    cleans); the result's 'passphrase_file' names it while it is still there.
    With `start_port`, start the server there (as `os_user`; 'postgres' when root) and wait
    until recovery ends; the result then has 'server' {port, data_dir, pid} (stop it with
    `replay.stop_restored_server`), 'recovered_lsn' and 'recovered_commit_ts' (epoch or None).
    Raise UsageError (bad target, non-empty dir or tablespace dir without delta, unknown
    tablespace), NotFoundError (exit 10: no backup before the target, unknown restore point),
    VerificationError (a WAL gap, naming the segment; recovery ended before the target).
    """
    name, _src = cfg.source(source, "postgres")
    recovery_target = normalize_target(target or RecoveryTarget("latest"))
    recovery_settings("", recovery_target, target_action)  # validates the action before any work
    prog = progress if isinstance(progress, Progress) else Progress()
    cluster = source_for(cfg, name, catalog, password)
    with operation(cfg, password, "restore-postgres", recorder=catalog, source=name) as op:
        out: PhysicalRestoreResult = cluster.restore(
            op.repo, snapshot, Path(target_dir), prog, target=recovery_target, target_action=target_action,
            delta=delta, start_port=start_port, os_user=os_user, fetch_ahead=fetch_ahead,
            tablespace_map=tablespace_map, wal_dir=wal_dir, server_starts=server_starts,
        )  # fmt: skip
        op.finish(
            "succeeded", bytes_read=out.bytes_restored, snapshot_id=out.snapshot_id, details=out.to_json()
        )
    catalog.audit("restore.postgres", name, "succeeded", out.audit_details())
    return out


def restore_postgres_logical(
    cfg: Config,
    catalog: Catalog,
    password: str,
    *,
    source: str | None,
    snapshot: str,
    database: str,
    tables: list[str] | None = None,
    clean: bool = False,
) -> LogicalRestoreResult:
    """Stream a logical dump into `pg_restore -d DATABASE` (optionally only `tables`); return counts.

    Raise NotFoundError for an unknown snapshot, RecoverctlError with pg_restore's message.
    """
    name, src = cfg.source(source, "postgres")
    with operation(
        cfg, password, "restore-postgres-logical", recorder=catalog, source=name,
        lock="reader", lock_name="restore postgres --logical",
    ) as op:  # fmt: skip
        started = time.monotonic()
        snap = find_logical(op.repo, name, snapshot)
        total = stream_into_pg_restore(
            op.repo, snap, src, pg_restore_argv(name, src, database, tables or [], clean)
        )
        out = LogicalRestoreResult(
            name, snap.id, database, tables or [], total, round(time.monotonic() - started, 3)
        )
        op.finish("succeeded", bytes_read=total, snapshot_id=snap.id, details=dataclasses.asdict(out))
    catalog.audit("restore.postgres.logical", name, "succeeded", dataclasses.asdict(out))
    return out


def plan_restore(
    cfg: Config,
    catalog: Catalog,
    password: str,
    *,
    source: str | None,
    snapshot: str | None = None,
    target: RecoveryTarget | None = None,
    tablespace_map: dict[str, str] | None = None,
    wal_dir: Path | None = None,
) -> PhysicalRestorePlan:
    """Return which backup a restore to `target` would use (and where its tablespaces and pg_wal
    would go), after checking its WAL is archived."""
    name, _src = cfg.source(source, "postgres")
    target = normalize_target(target or RecoveryTarget("latest"))
    with open_repository(cfg, password) as repo:
        snap, target = choose_snapshot(repo, catalog, name, target, snapshot)
        check_archive(repo, name, snap, target)
        tablespaces = tablespace_plan(snap, tablespace_map)
    return PhysicalRestorePlan(
        source=name,
        snapshot_id=snap.id,
        snapshot_time=snap.time,
        backup_stop_lsn=snap.metadata["stop_lsn"],
        target=target.describe(),
        tablespaces=tablespaces,
        wal_dir=str(wal_dir) if wal_dir else None,
    )
