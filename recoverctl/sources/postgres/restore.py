"""Restoring PostgreSQL backups: choose the snapshot for a recovery target, restore its files with
the tablespace and pg_wal layout, write the recovery configuration, and stream logical dumps into
pg_restore.

Physical: choose the newest snapshot that ends before the target → restore its files → write
backup_label, recovery.signal, restore_command (`recoverctl wal fetch`) and the target. Starting
the server and waiting for recovery is sources/postgres/replay.py. A gap in the archive fails
naming the missing segment.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from recoverctl.catalog import Catalog
from recoverctl.catalog.wal import restore_points
from recoverctl.config import Config, PostgresSource, passphrase_file
from recoverctl.errors import NotFoundError, RecoverctlError, VerificationError, cleanup_after
from recoverctl.progress import Progress
from recoverctl.repo import Repository, RestoreResult, Snapshot, open_file, restore_snapshot
from recoverctl.sources.postgres.archiving import restore_command
from recoverctl.sources.postgres.backup import KIND
from recoverctl.sources.postgres.connection import connect, connect_env, find_bin_dir, server_major
from recoverctl.sources.postgres.layout import (
    check_tablespace_dirs,
    check_wal_dir,
    finish_layout,
    link_tablespaces,
    place_pg_wal,
    prepare_dir,
    tablespace_plan,
)
from recoverctl.sources.postgres.recovery import (
    RecoveryTarget,
    parse_target_time,
    recovery_settings,
    write_recovery_config,
)
from recoverctl.sources.postgres.replay import run_recovery
from recoverctl.sources.postgres.server import (
    chown_tree,
    default_os_user,
    remove_secrets,
    write_passphrase_file,
)
from recoverctl.sources.postgres.wal_fetcher import start_fetcher, stop_fetchers
from recoverctl.sources.postgres.walarchive import archived_segments, first_missing
from recoverctl.sources.postgres.walnames import parse_lsn

# Settings for a server restored next to others (drills, scratch restores): its own port, no
# socket clash, no archiving into the source's archive, logs where pg_ctl -l puts them.
SCRATCH_SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "unix_socket_directories": "/tmp",
    "archive_mode": "off",
    "logging_collector": "off",
}


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts).astimezone().isoformat(timespec="seconds")


def _describe(snaps: list[Snapshot]) -> str:
    if not snaps:
        return "no physical backups of this source exist"
    first, last = snaps[0], snaps[-1]
    return (
        f"{len(snaps)} backup(s) exist, oldest {first.id[:8]} consistent at "
        f"{_iso(first.metadata['stop_time'])} (LSN {first.metadata['stop_lsn']}), newest {last.id[:8]} at "
        f"{_iso(last.metadata['stop_time'])} (LSN {last.metadata['stop_lsn']})"
    )


def choose_snapshot(
    repo: Repository, catalog: Catalog, source: str, target: RecoveryTarget, snapshot: str | None
) -> tuple[Snapshot, RecoveryTarget]:
    """Return the snapshot to restore for `target` and the target with names resolved.

    Without `snapshot`: the newest backup whose consistent point (stop) precedes the target.
    Raise NotFoundError (exit 10) naming what exists when none fits or the name is unknown.
    """
    snaps = [s for s in repo.find_snapshots(kind=KIND, source=source) if s.metadata.get("stop_lsn")]
    if snapshot is not None:
        chosen = repo.resolve_snapshot(snapshot)
        if chosen.kind != KIND or chosen.source != source:
            raise NotFoundError(
                f"snapshot {chosen.id[:8]} is not a physical backup of source '{source}'",
                hint=_describe(snaps),
            )
        candidates = [chosen]
    else:
        candidates = snaps
    if not candidates:
        raise NotFoundError(
            f"no physical backups of source '{source}' in '{repo.url}'",
            hint="run 'recoverctl backup postgres' first",
        )
    fits = candidates
    if target.kind == "time":
        assert target.value is not None
        when = parse_target_time(target.value).timestamp()
        fits = [s for s in candidates if float(s.metadata["stop_time"]) <= when]
    elif target.kind == "lsn":
        assert target.value is not None
        lsn = parse_lsn(target.value)
        fits = [s for s in candidates if parse_lsn(s.metadata["stop_lsn"]) <= lsn]
    elif target.kind == "name":
        points = restore_points(catalog, source)
        match = [p for p in points if p.name == target.value]
        if not match:
            names = ", ".join(f"{p.name} ({p.lsn})" for p in points[-20:]) or "(none recorded)"
            raise NotFoundError(
                f"unknown restore point '{target.value}' for source '{source}'",
                hint=f"known restore points: {names}",
            )
        lsn = parse_lsn(match[-1].lsn or "")
        fits = [s for s in candidates if parse_lsn(s.metadata["stop_lsn"]) <= lsn]
    elif target.kind == "xid":
        assert target.value is not None
        xid = int(target.value)
        fits = [s for s in candidates if (s.metadata.get("next_xid") or 0) <= xid]
    if not fits:
        raise NotFoundError(
            f"no backup of source '{source}' is consistent before the target {target.describe()}",
            hint=_describe(snaps) + "; choose a later target",
        )
    return fits[-1], target


def check_archive(repo: Repository, source: str, snap: Snapshot, target: RecoveryTarget) -> list[str]:
    """Fail naming the first missing segment the restore is sure to need; return warnings."""
    have = archived_segments(repo, source)
    timeline = int(snap.metadata["timeline"])
    start, stop = snap.metadata["start_segment"], snap.metadata["stop_segment"]
    missing = first_missing(
        have.get(timeline, set()), start, stop, int(snap.metadata.get("segment_size") or 16 << 20)
    )
    if missing:
        raise VerificationError(
            f"WAL segment {missing} is missing from the archive of source '{source}': backup "
            f"{snap.id[:8]} cannot be made consistent without it",
            hint="choose an older snapshot with --snapshot, or find the segment in pg_wal of the source",
            details={"missing_segment": missing},
        )
    if target.kind == "latest":
        newest = max(have.get(timeline, {stop}))
        missing = first_missing(have.get(timeline, set()), stop, newest)
        if missing:
            raise VerificationError(
                f"WAL segment {missing} is missing from the archive of source '{source}' although newer "
                f"segments (up to {newest}) exist: recovery to the latest point would stop early",
                hint="recover to a target before the gap (--to-time/--to-lsn), or find the segment",
                details={"missing_segment": missing},
            )
    return []


@dataclass
class PhysicalRestoreRequest:
    """Where and how to restore a physical backup: the options of `restore postgres`."""

    target_dir: Path
    target: RecoveryTarget
    snapshot: str | None = None
    target_action: str = "promote"
    delta: bool = False
    start_port: int | None = None
    os_user: str | None = None
    fetch_ahead: bool = False
    tablespace_map: dict[str, str] | None = None
    wal_dir: Path | None = None
    server_starts: bool = False

    @property
    def warm(self) -> bool:
        """True when the server starts right after: the WAL fetcher is started with the restore."""
        return self.fetch_ahead or self.start_port is not None


@dataclass
class RestoredFiles:
    """What restoring a physical backup's files wrote."""

    snapshot: Snapshot
    target: RecoveryTarget  # with a restore point's name resolved
    tablespaces: list[dict[str, Any]]
    result: RestoreResult
    links_skipped: list[dict[str, str]]


def restore_files(
    repo: Repository,
    cfg: Config,
    catalog: Catalog,
    password: str,
    name: str,
    req: PhysicalRestoreRequest,
    user: str | None,
    progress: Progress,
) -> RestoredFiles:
    """Choose the snapshot for `req.target` and restore its files into `req.target_dir` (the caller
    holds the repository lock); return what was written. Raise UsageError (non-empty or
    overlapping directories, unknown tablespace), NotFoundError (no backup before the target),
    VerificationError (a WAL gap, files not restored)."""
    target_dir, wal_dir, delta = req.target_dir, req.wal_dir, req.delta
    snap, target = choose_snapshot(repo, catalog, name, req.target, req.snapshot)
    check_archive(repo, name, snap, target)
    tablespaces = tablespace_plan(snap, req.tablespace_map)
    check_tablespace_dirs(tablespaces, target_dir, delta)
    check_wal_dir(wal_dir, target_dir, tablespaces, delta)
    prepare_dir(target_dir, delta)
    link_tablespaces(tablespaces, target_dir)
    place_pg_wal(target_dir, wal_dir)
    if req.warm and not delta:  # a delta restore removes what the snapshot lacks
        start_fetcher(cfg, password, name, target_dir, user)
    # force: the directory was found empty (or delta allowed) before pg_tblspc was made.
    # Tablespace contents go straight to their directories, not through the links.
    # The snapshot's own links out of the data directory (pg_wal on another disk, a
    # linked config file) are never recreated: the copy must not reach the original's files.
    mounts = {f"/pg_tblspc/{t['oid']}": str(t["location"]) for t in tablespaces}
    if wal_dir is not None:
        mounts["/pg_wal"] = str(wal_dir)
    result = restore_snapshot(
        repo, snap.id, str(target_dir), delta=delta, progress=progress, force=True, mounts=mounts,
        inner_links_only=True,
    )  # fmt: skip
    skipped = [link for link in result.links_skipped if link["path"] != "/pg_wal"]
    for link in skipped:
        progress.warn(
            f"symlink {link['path'].lstrip('/')} -> {link['target']} not restored: it points "
            "outside the data directory (its target was not part of the backup)"
        )
    if req.warm and delta:
        start_fetcher(cfg, password, name, target_dir, user)
    if result.errors:
        raise VerificationError(
            f"restore of backup {snap.id[:8]} into '{target_dir}': {len(result.errors)} file(s) "
            f"not restored: {', '.join(e['path'] for e in result.errors[:5])}",
            hint="run 'recoverctl verify --read-data'; try an older snapshot with --snapshot",
        )
    finish_layout(target_dir, snap, tablespaces)
    return RestoredFiles(snap, target, tablespaces, result, skipped)


def configure_recovery(
    cfg: Config, password: str, name: str, req: PhysicalRestoreRequest, user: str | None, files: RestoredFiles
) -> Path | None:
    """Write the recovery configuration (restore_command, target) into the restored directory and
    give it to `user`; return the passphrase file written for restore_command, if any."""
    target_dir = req.target_dir
    password_file = None
    file_backed = passphrase_file(cfg)
    if (req.warm or req.server_starts) and not file_backed:
        # The server gets no variable of ours (`server_env`): a passphrase from a variable
        # or a prompt reaches restore_command as a file, removed once recovery has ended.
        password_file = write_passphrase_file(target_dir, password, user)
    settings = recovery_settings(restore_command(cfg, name, password_file), files.target, req.target_action)
    if req.start_port is not None:
        settings.update(SCRATCH_SETTINGS)
        settings["port"] = str(req.start_port)
    write_recovery_config(target_dir, settings)
    os.chmod(target_dir, 0o700)
    chown_tree(target_dir, user)
    for t in files.tablespaces:
        chown_tree(Path(t["location"]), user)
    if req.wal_dir is not None:
        chown_tree(req.wal_dir, user)
    return password_file


def abandon_restore(target_dir: Path, error: BaseException) -> None:
    """After a failed restore, stop its WAL fetchers and remove the passphrase file: no server
    recovers from `target_dir` now."""
    with cleanup_after(error, "stopping the WAL fetchers"):
        stop_fetchers(target_dir)
    remove_secrets(target_dir)


@dataclass
class PhysicalRestoreResult:
    """A physical restore: what was restored where, and (with a started server) what it recovered."""

    source: str
    snapshot_id: str
    snapshot_time: float
    backup_stop_lsn: str
    backup_stop_time: float
    target: dict[str, str | None]
    target_action: str
    target_dir: str
    bytes_restored: int
    files_restored: int
    files_skipped_unchanged: int
    row_counts: dict[str, int]
    tablespaces: list[dict[str, Any]]
    wal_dir: str
    links_skipped: list[dict[str, str]]
    recovered_lsn: str | None = None
    recovered_commit_ts: float | None = None
    phases: dict[str, float] = field(default_factory=dict)
    # Only when the server was started (`start_port`): {port, data_dir, pid, log} or None.
    server: dict[str, Any] | None = None
    bin_dir: str | None = None
    passphrase_file: str | None = None
    started: bool = False

    def audit_details(self) -> dict[str, Any]:
        """What the audit log records of this restore."""
        return {"snapshot": self.snapshot_id, "target_dir": self.target_dir, "target": self.target}

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        if not out.pop("started"):
            del out["server"], out["bin_dir"]
        return out


def restore_physical(
    repo: Repository,
    cfg: Config,
    catalog: Catalog,
    password: str,
    name: str,
    req: PhysicalRestoreRequest,
    progress: Progress,
) -> PhysicalRestoreResult:
    """Restore a physical backup of source `name` as `req` says (see `actions.restore_postgres`);
    with `req.start_port`, start the server and wait until recovery ends. On failure, stop the WAL
    fetchers and remove the passphrase file before raising."""
    src = cfg.sources[name]
    assert isinstance(src, PostgresSource)
    user = default_os_user(req.os_user or src.os_user)
    started = time.monotonic()
    try:
        with repo.lock(operation="restore postgres", reader=True):
            files = restore_files(repo, cfg, catalog, password, name, req, user, progress)
        fetch_s = time.monotonic() - started
        password_file = configure_recovery(cfg, password, name, req, user, files)
        out = _result(name, req, files, fetch_s)
        if req.start_port is not None:
            recovered = run_recovery(
                repo, name, src, files.snapshot, req.target_dir, req.start_port, user, files.target,
                req.target_action,
            )  # fmt: skip
            # Recovery has ended: the spool is leftovers (a resumed recovery starts its own).
            stop_fetchers(req.target_dir, remove_spools=True)
            if req.target_action != "pause":  # a paused recovery still fetches once resumed
                remove_secrets(req.target_dir)
            out.phases.update(recovered["phases"])
            out.recovered_lsn = recovered["recovered_lsn"]
            out.recovered_commit_ts = recovered["recovered_commit_ts"]
            out.server, out.bin_dir, out.started = recovered["server"], recovered["bin_dir"], True
        # Still there for a paused recovery (or a server the caller starts): say where.
        out.passphrase_file = str(password_file) if password_file and password_file.exists() else None
        out.phases["total"] = round(time.monotonic() - started, 3)
    except BaseException as e:
        abandon_restore(req.target_dir, e)
        raise
    return out


def _result(
    name: str, req: PhysicalRestoreRequest, files: RestoredFiles, fetch_s: float
) -> PhysicalRestoreResult:
    snap, result = files.snapshot, files.result
    return PhysicalRestoreResult(
        source=name,
        snapshot_id=snap.id,
        snapshot_time=snap.time,
        backup_stop_lsn=snap.metadata["stop_lsn"],
        backup_stop_time=snap.metadata["stop_time"],
        target={"kind": files.target.kind, "value": files.target.value},
        target_action=req.target_action,
        target_dir=str(req.target_dir),
        bytes_restored=result.bytes,
        files_restored=result.files,
        files_skipped_unchanged=result.skipped,
        row_counts=snap.metadata.get("row_counts", {}),
        tablespaces=files.tablespaces,
        wal_dir=str(req.wal_dir or req.target_dir / "pg_wal"),
        links_skipped=files.links_skipped,
        phases={"fetch": round(fetch_s, 3)},
    )


def pg_restore_argv(
    name: str, src: PostgresSource, database: str, tables: list[str], clean: bool
) -> list[str]:
    """Return the pg_restore command line restoring into `database` of the source's server."""
    with connect(src, name) as conn:
        bin_dir = find_bin_dir(src, server_major(conn))
    argv = [str(bin_dir / "pg_restore"), "-h", src.host, "-p", str(src.port), "-U", src.user,
            "-d", database, "--no-owner", "--exit-on-error"]  # fmt: skip
    if clean:
        argv += ["--clean", "--if-exists"]
    for t in tables:
        argv += ["-t", t]
    return argv


def stream_into_pg_restore(repo: Repository, snap: Snapshot, src: PostgresSource, argv: list[str]) -> int:
    """Stream the dump in logical snapshot `snap` into pg_restore (`argv`); return the bytes sent.

    Raise RecoverctlError with pg_restore's message when it fails.
    """
    env = {**os.environ, **connect_env(src)}
    proc = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env
    )
    assert proc.stdin is not None and proc.stderr is not None
    total = 0
    try:
        for chunk in open_file(repo, snap, snap.metadata.get("database", "") + ".dump"):
            proc.stdin.write(chunk)
            total += len(chunk)
        proc.stdin.close()
    except BrokenPipeError:
        pass
    err = proc.stderr.read().decode(errors="replace")
    rc = proc.wait()
    if rc != 0:
        database = argv[argv.index("-d") + 1]
        raise RecoverctlError(
            f"pg_restore of snapshot {snap.id[:8]} into database '{database}' failed: {err.strip()[-800:]}",
            hint="create the database first (createdb), or add --clean to replace existing objects",
        )
    return total
