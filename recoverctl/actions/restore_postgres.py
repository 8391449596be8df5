"""`restore postgres`: physical point-in-time restore, and logical restores into pg_restore.

Physical: choose the newest snapshot that ends before the target → restore its files → write
backup_label, recovery.signal, restore_command (`recoverctl wal fetch`) and the target →
optionally start the server and wait until recovery ends, reporting the recovered LSN and
commit time. A gap in the archive fails naming the missing segment: recovery that stopped
early is never reported as success.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo

from recoverctl.actions.repository import open_repository
from recoverctl.catalog import Catalog
from recoverctl.catalog.wal import restore_points
from recoverctl.config import ENV_PASSWORD_FILE, Config, PostgresSource
from recoverctl.errors import NotFoundError, RecoverctlError, UsageError, VerificationError, cleanup_after
from recoverctl.progress import Progress
from recoverctl.recorder import record_failed_run
from recoverctl.repo import Repository, Snapshot, open_file, restore_snapshot
from recoverctl.repo.confined import remove, write_file
from recoverctl.sources.postgres.archiving import restore_command
from recoverctl.sources.postgres.backup import KIND, find_logical
from recoverctl.sources.postgres.connection import connect_env, find_bin_dir
from recoverctl.sources.postgres.isolation import isolation_settings
from recoverctl.sources.postgres.recovery import (
    RecoveryTarget,
    normalize_target,
    parse_target_time,
    recovery_settings,
    write_recovery_config,
)
from recoverctl.sources.postgres.server import (
    chown_tree,
    default_os_user,
    postmaster_pid,
    postmaster_status,
    remove_secrets,
    server_failure,
    start_server,
    stop_server,
    wait_for,
    write_passphrase_file,
)
from recoverctl.sources.postgres.wal_fetcher import start_fetcher, stop_fetchers
from recoverctl.sources.postgres.walarchive import archived_segments, first_missing
from recoverctl.sources.postgres.walnames import (
    parse_lsn,
    segment_from_number,
    segment_name,
    segment_number,
)

__all__ = ["RecoveryTarget", "restore_postgres", "restore_postgres_logical", "stop_restored_server"]

# Settings for a server restored next to others (drills, scratch restores): its own port, no
# socket clash, no archiving into the source's archive, logs where pg_ctl -l puts them.
_SCRATCH_SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "unix_socket_directories": "/tmp",
    "archive_mode": "off",
    "logging_collector": "off",
}
_RECOVERY_TIMEOUT = 6 * 3600.0
# Directories a server needs even when empty (their contents are excluded from backups).
_EMPTY_DIRS = (
    "pg_wal/archive_status", "pg_replslot", "pg_dynshmem", "pg_notify", "pg_serial", "pg_snapshots",
    "pg_stat_tmp", "pg_subtrans", "pg_tblspc", "pg_twophase", "pg_logical",
)  # fmt: skip


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


def _check_archive(repo: Repository, source: str, snap: Snapshot, target: RecoveryTarget) -> list[str]:
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


def _prepare_dir(target_dir: Path, delta: bool) -> None:
    if target_dir.exists() and any(target_dir.iterdir()):
        if not delta:
            raise UsageError(
                f"target directory '{target_dir}' is not empty",
                hint="choose an empty directory, or pass --delta to reuse files that already match",
            )
        if postmaster_pid(target_dir) is not None:
            raise UsageError(
                f"a server is running on '{target_dir}'", hint="stop it before restoring into it"
            )
    target_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(target_dir, 0o700)


def _parse_tablespace_map(text: str) -> list[tuple[str, str]]:
    """Given tablespace_map content ("OID PATH" lines; a backslash escapes the next character of
    PATH, as PostgreSQL writes \\, CR and LF), return (oid, path) pairs."""
    out: list[tuple[str, str]] = []
    buf: list[str] = []
    escaped = False
    for ch in text + "\n":
        if escaped:
            buf.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == "\n":
            oid, _, path = "".join(buf).partition(" ")
            buf = []
            if oid:
                out.append((oid, path))
        else:
            buf.append(ch)
    return out


def _escape_map_path(path: str) -> str:
    return re.sub(r"([\\\n\r])", r"\\\1", path)


def tablespace_plan(snap: Snapshot, mapping: dict[str, str] | None) -> list[dict[str, Any]]:
    """Given a snapshot and OID_OR_NAME → DIR remappings, return where each tablespace goes:
    [{oid, name, location, original}]. Raise UsageError for a key naming no tablespace of the
    backup, a relative DIR, or two tablespaces sent to one directory."""
    md = snap.metadata
    names = {str(t["oid"]): str(t.get("name") or t["oid"]) for t in md.get("tablespaces") or []}
    entries = _parse_tablespace_map(md.get("tablespace_map") or "")
    if not entries:
        entries = [(str(t["oid"]), str(t["location"])) for t in md.get("tablespaces") or []]
    by_key = {oid: oid for oid, _ in entries} | {names[oid]: oid for oid, _ in entries if oid in names}
    moved: dict[str, str] = {}
    for key, new in (mapping or {}).items():
        if key not in by_key:
            known = ", ".join(f"{names.get(o, o)} (oid {o})" for o, _ in entries) or "none"
            raise UsageError(
                f"--tablespace-map names '{key}', which is not a tablespace of backup {snap.id[:8]}",
                hint=f"tablespaces in this backup: {known}",
            )
        if not os.path.isabs(new):
            raise UsageError(
                f"--tablespace-map {key}={new}: the directory must be an absolute path",
                hint="give the full path of the new tablespace directory",
            )
        moved[by_key[key]] = os.path.normpath(new)
    plan: list[dict[str, Any]] = [
        {"oid": int(oid), "name": names.get(oid, oid), "location": moved.get(oid, path), "original": path}
        for oid, path in entries
        if os.path.isabs(path)  # in-place tablespaces are plain directories under pg_tblspc
    ]
    seen: dict[str, str] = {}
    for t in plan:
        if t["location"] in seen:
            raise UsageError(
                f"tablespaces {seen[t['location']]} and {t['name']} would both be restored to "
                f"'{t['location']}'",
                hint="give each tablespace its own directory with --tablespace-map",
            )
        seen[t["location"]] = t["name"]
    return plan


def _check_tablespace_dirs(plan: list[dict[str, Any]], target_dir: Path, delta: bool) -> None:
    """Refuse (before anything is written) tablespace directories that are in use or not empty."""
    for t in plan:
        loc = Path(t["location"])
        if loc == target_dir or target_dir in loc.parents or loc in target_dir.parents:
            raise UsageError(
                f"tablespace {t['name']} directory '{loc}' overlaps the target directory '{target_dir}'",
                hint="restore the tablespace elsewhere with --tablespace-map OID_OR_NAME=DIR",
            )
        if loc.exists() and not loc.is_dir():
            raise UsageError(f"tablespace {t['name']} directory '{loc}' is not a directory")
        if loc.is_dir() and any(loc.iterdir()) and not delta:
            raise UsageError(
                f"tablespace {t['name']} directory '{loc}' is not empty",
                hint="restore it elsewhere with --tablespace-map OID_OR_NAME=DIR, or pass --delta "
                "to reuse files that already match",
            )


def _link_tablespaces(plan: list[dict[str, Any]], target_dir: Path) -> None:
    """Create each tablespace directory and point pg_tblspc/<oid> at it, so the restore writes the
    tablespace's files there."""
    (target_dir / "pg_tblspc").mkdir(parents=True, exist_ok=True)
    for t in plan:
        loc = Path(t["location"])
        loc.mkdir(parents=True, exist_ok=True)
        os.chmod(loc, 0o700)
        link = target_dir / "pg_tblspc" / str(t["oid"])
        if link.is_symlink():
            link.unlink()
        elif link.is_dir():
            shutil.rmtree(link)  # left by a restore without links; its files are restored anew
        os.symlink(loc, link)


def _check_wal_dir(
    wal_dir: Path | None, target_dir: Path, tablespaces: list[dict[str, Any]], delta: bool
) -> None:
    """Refuse (before anything is written) a --wal-dir that overlaps the target or a tablespace,
    is not a directory, or holds files (another server's WAL) without `delta`."""
    if wal_dir is None:
        return
    if not wal_dir.is_absolute():
        raise UsageError(f"--wal-dir '{wal_dir}' must be an absolute path", hint="give the full path")
    for other, what in [
        (target_dir, "the target directory"),
        *((Path(t["location"]), f"tablespace {t['name']}") for t in tablespaces),
    ]:
        if wal_dir == other or other in wal_dir.parents or wal_dir in other.parents:
            raise UsageError(
                f"--wal-dir '{wal_dir}' overlaps {what} '{other}'",
                hint="give the WAL its own directory, or leave out --wal-dir to keep pg_wal in the target",
            )
    if wal_dir.is_symlink() or (wal_dir.exists() and not wal_dir.is_dir()):
        raise UsageError(f"--wal-dir '{wal_dir}' is not a directory")
    if wal_dir.is_dir() and any(wal_dir.iterdir()) and not delta:
        raise UsageError(
            f"--wal-dir '{wal_dir}' is not empty (another server's WAL?)",
            hint="give an empty or new directory, or pass --delta to reuse it",
        )


def _place_pg_wal(target_dir: Path, wal_dir: Path | None) -> None:
    """Make pg_wal a real directory inside the target, or (with `wal_dir`) a link recoverctl
    creates to that directory. Never the snapshot's link: a server started on the copy would
    write its WAL into the original server's WAL directory (or wherever a tampered snapshot
    points). A link left by an earlier restore (`--delta`) is removed, not followed."""
    dfd = os.open(target_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        try:
            st = os.stat("pg_wal", dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            st = None
        if st is not None and (wal_dir is not None or not stat.S_ISDIR(st.st_mode)):
            remove(dfd, "pg_wal", stat.S_ISDIR(st.st_mode))
            st = None
        if wal_dir is not None:
            wal_dir.mkdir(parents=True, exist_ok=True)
            os.chmod(wal_dir, 0o700)
            os.symlink(str(wal_dir), "pg_wal", dir_fd=dfd)
        elif st is None:
            os.mkdir("pg_wal", 0o700, dir_fd=dfd)
    finally:
        os.close(dfd)


def _finish_layout(target_dir: Path, snap: Snapshot, tablespaces: list[dict[str, Any]]) -> None:
    md = snap.metadata
    # Not through a symlink the snapshot may have put at these names.
    write_file(target_dir, "backup_label", md["backup_label"].encode())
    if md.get("tablespace_map"):
        # PostgreSQL recreates pg_tblspc/<oid> from this file at start-up: it names the new places.
        lines = "".join(f"{t['oid']} {_escape_map_path(t['location'])}\n" for t in tablespaces)
        write_file(target_dir, "tablespace_map", lines.encode())
    for d in _EMPTY_DIRS:
        (target_dir / d).mkdir(parents=True, exist_ok=True)
    for stale in ("postmaster.pid", "postmaster.opts", "recovery.signal", "standby.signal"):
        (target_dir / stale).unlink(missing_ok=True)


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
) -> dict[str, Any]:
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
    `start_port` recovery ends, except for a paused one, which `stop_restored_server` cleans);
    the result's 'passphrase_file' names it while it is still there.
    With `start_port`, start the server there (as `os_user`; 'postgres' when root) and wait
    until recovery ends; the result then has 'server' {port, data_dir, pid} (stop it with
    `stop_restored_server`), 'recovered_lsn' and 'recovered_commit_ts' (epoch or None).
    Raise UsageError (bad target, non-empty dir or tablespace dir without delta, unknown
    tablespace), NotFoundError (exit 10: no
    backup before the target, unknown restore point), VerificationError (a WAL gap, naming the
    segment; recovery ended before the target).
    """
    name, src = cfg.source(source, "postgres")
    target = normalize_target(target or RecoveryTarget("latest"))
    recovery_settings("", target, target_action)  # validates the action before any work
    target_dir = Path(target_dir).absolute()
    user = default_os_user(os_user or src.os_user)
    prog = progress if isinstance(progress, Progress) else Progress()
    started = time.monotonic()
    repo = open_repository(cfg, password)
    run_id = catalog.start_run("restore-postgres", name, repo.url)
    try:
        with repo.lock(operation="restore postgres", reader=True):
            snap, target = choose_snapshot(repo, catalog, name, target, snapshot)
            _check_archive(repo, name, snap, target)
            tablespaces = tablespace_plan(snap, tablespace_map)
            _check_tablespace_dirs(tablespaces, target_dir, delta)
            _check_wal_dir(wal_dir, target_dir, tablespaces, delta)
            _prepare_dir(target_dir, delta)
            _link_tablespaces(tablespaces, target_dir)
            _place_pg_wal(target_dir, wal_dir)
            warm = fetch_ahead or start_port is not None
            if warm and not delta:  # a delta restore removes what the snapshot lacks
                start_fetcher(cfg, password, name, target_dir, user)
            # force: the directory was found empty (or delta allowed) before pg_tblspc was made.
            # Tablespace contents go straight to their directories, not through the links.
            # The snapshot's own links out of the data directory (pg_wal on another disk, a
            # linked config file) are never recreated: the copy must not reach the original's files.
            mounts = {f"/pg_tblspc/{t['oid']}": str(t["location"]) for t in tablespaces}
            if wal_dir is not None:
                mounts["/pg_wal"] = str(wal_dir)
            result = restore_snapshot(
                repo, snap.id, str(target_dir), delta=delta, progress=prog, force=True, mounts=mounts,
                inner_links_only=True,
            )  # fmt: skip
            skipped = [link for link in result.links_skipped if link["path"] != "/pg_wal"]
            for link in skipped:
                prog.warn(
                    f"symlink {link['path'].lstrip('/')} -> {link['target']} not restored: it points "
                    "outside the data directory (its target was not part of the backup)"
                )
            if warm and delta:
                start_fetcher(cfg, password, name, target_dir, user)
            if result.errors:
                raise VerificationError(
                    f"restore of backup {snap.id[:8]} into '{target_dir}': {len(result.errors)} file(s) "
                    f"not restored: {', '.join(e['path'] for e in result.errors[:5])}",
                    hint="run 'recoverctl verify --read-data'; try an older snapshot with --snapshot",
                )
            _finish_layout(target_dir, snap, tablespaces)
        fetch_s = time.monotonic() - started
        password_file = None
        file_backed = os.environ.get(ENV_PASSWORD_FILE) or (cfg.repository and cfg.repository.password_file)
        if (warm or server_starts) and not file_backed:
            # The server gets no variable of ours (`server_env`): a passphrase from a variable
            # or a prompt reaches restore_command as a file, removed once recovery has ended.
            password_file = write_passphrase_file(target_dir, password, user)
        settings = recovery_settings(restore_command(cfg, name, password_file), target, target_action)
        if start_port is not None:
            settings.update(_SCRATCH_SETTINGS)
            settings["port"] = str(start_port)
        write_recovery_config(target_dir, settings)
        os.chmod(target_dir, 0o700)
        chown_tree(target_dir, user)
        for t in tablespaces:
            chown_tree(Path(t["location"]), user)
        if wal_dir is not None:
            chown_tree(wal_dir, user)
        out: dict[str, Any] = {
            "source": name,
            "snapshot_id": snap.id,
            "snapshot_time": snap.time,
            "backup_stop_lsn": snap.metadata["stop_lsn"],
            "backup_stop_time": snap.metadata["stop_time"],
            "target": {"kind": target.kind, "value": target.value},
            "target_action": target_action,
            "target_dir": str(target_dir),
            "bytes_restored": result.bytes,
            "files_restored": result.files,
            "files_skipped_unchanged": result.skipped,
            "row_counts": snap.metadata.get("row_counts", {}),
            "tablespaces": tablespaces,
            "wal_dir": str(wal_dir or target_dir / "pg_wal"),
            "links_skipped": skipped,
            "recovered_lsn": None,
            "recovered_commit_ts": None,
            "phases": {"fetch": round(fetch_s, 3)},
        }
        if start_port is not None:
            recovered = _run_recovery(
                repo, cfg, name, src, snap, target_dir, start_port, user, target, target_action
            )
            # Recovery has ended: the spool is leftovers (a resumed recovery starts its own).
            stop_fetchers(target_dir, remove_spools=True)
            if target_action != "pause":  # a paused recovery still fetches once resumed
                remove_secrets(target_dir)
            out["phases"].update(recovered.pop("phases"))
            out.update(recovered)
        # Still there for a paused recovery (or a server the caller starts): say where.
        out["passphrase_file"] = str(password_file) if password_file and password_file.exists() else None
        out["phases"]["total"] = round(time.monotonic() - started, 3)
    except BaseException as e:
        with cleanup_after(e, "stopping the WAL fetchers"):
            stop_fetchers(target_dir)
        remove_secrets(target_dir)  # no server recovers from this directory now
        record_failed_run(catalog, run_id, e)
        raise
    finally:
        repo.close()
    catalog.finish_run(
        run_id, "succeeded", bytes_read=out["bytes_restored"], snapshot_id=snap.id, details=out
    )
    catalog.audit("restore.postgres", name, "succeeded", {"snapshot": snap.id, "target_dir": str(target_dir),
                                                           "target": out["target"]})  # fmt: skip
    return out


def _run_recovery(
    repo: Repository,
    cfg: Config,
    name: str,
    src: PostgresSource,
    snap: Snapshot,
    target_dir: Path,
    port: int,
    user: str | None,
    target: RecoveryTarget,
    target_action: str,
) -> dict[str, Any]:
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
        pid = postmaster_pid(target_dir)
        if pid is None:
            if target_action == "shutdown" and not server_failure(log):
                lsn, commit = _point_from_log(log)
                break
            failure = server_failure(log) or "the server exited: " + _log_tail(log)
            timeline = int(snap.metadata["timeline"])
            seen_lsn, _ = _point_from_log(log)
            missing = _missing_after(repo, name, timeline, seen_lsn, log)
            raise VerificationError(
                f"recovery of '{target_dir}' to {target.describe()} failed: {failure}"
                + (f"; WAL segment {missing} is missing from the archive" if missing else ""),
                hint=f"server log: {log}",
                details={"missing_segment": missing, "log": str(log)},
            )
        if time.monotonic() > deadline:
            stop_server(target_dir, bin_dir, user, "immediate")
            raise VerificationError(
                f"recovery of '{target_dir}' did not finish within {_RECOVERY_TIMEOUT:.0f}s"
            )
        status = postmaster_status(target_dir)
        if status not in ("ready", "standby"):
            time.sleep(0.02)  # not accepting connections before it is consistent
            continue
        if status == "standby" and target_action == "promote":
            time.sleep(0.02)  # still replaying: 'ready' comes with the promotion
            continue
        try:
            lsn, commit, in_recovery = _recovered_point(src, port)
            if target_action == "pause" and in_recovery:
                with _connect_restored(src, port) as conn:
                    state = conn.execute("select pg_get_wal_replay_pause_state()").fetchone()
                if state and state[0] == "paused":
                    break
            elif not in_recovery:
                break
        except psycopg.OperationalError:
            pass  # between consistency and promotion connections may still be refused
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
) -> dict[str, Any]:
    """Stream a logical dump into `pg_restore -d DATABASE` (optionally only `tables`); return counts.

    Raise NotFoundError for an unknown snapshot, RecoverctlError with pg_restore's message.
    """
    name, src = cfg.source(source, "postgres")
    repo = open_repository(cfg, password)
    started = time.monotonic()
    run_id = catalog.start_run("restore-postgres-logical", name, repo.url)
    try:
        with repo.lock(operation="restore postgres --logical", reader=True):
            snap = find_logical(repo, name, snapshot)
            from recoverctl.sources.postgres.connection import connect, server_major

            with connect(src, name) as conn:
                bin_dir = find_bin_dir(src, server_major(conn))
            argv = [str(bin_dir / "pg_restore"), "-h", src.host, "-p", str(src.port), "-U", src.user,
                    "-d", database, "--no-owner", "--exit-on-error"]  # fmt: skip
            if clean:
                argv += ["--clean", "--if-exists"]
            for t in tables or []:
                argv += ["-t", t]
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
                raise RecoverctlError(
                    f"pg_restore of snapshot {snap.id[:8]} into database '{database}' failed: "
                    f"{err.strip()[-800:]}",
                    hint="create the database first (createdb), or add --clean to replace existing objects",
                )
    except BaseException as e:
        record_failed_run(catalog, run_id, e)
        raise
    finally:
        repo.close()
    out = {"source": name, "snapshot_id": snap.id, "database": database, "tables": tables or [],
           "bytes": total, "duration_s": round(time.monotonic() - started, 3)}  # fmt: skip
    catalog.finish_run(run_id, "succeeded", bytes_read=total, snapshot_id=snap.id, details=out)
    catalog.audit("restore.postgres.logical", name, "succeeded", out)
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
) -> dict[str, Any]:
    """Return which backup a restore to `target` would use (and where its tablespaces and pg_wal
    would go: 'wal_dir' None means a directory inside the target), after checking its WAL is
    archived."""
    name, _src = cfg.source(source, "postgres")
    target = normalize_target(target or RecoveryTarget("latest"))
    repo = open_repository(cfg, password)
    try:
        snap, target = choose_snapshot(repo, catalog, name, target, snapshot)
        _check_archive(repo, name, snap, target)
        tablespaces = tablespace_plan(snap, tablespace_map)
    finally:
        repo.close()
    return {
        "source": name,
        "snapshot_id": snap.id,
        "snapshot_time": snap.time,
        "backup_stop_lsn": snap.metadata["stop_lsn"],
        "target": target.describe(),
        "tablespaces": tablespaces,
        "wal_dir": str(wal_dir) if wal_dir else None,
        "dry_run": True,
    }
