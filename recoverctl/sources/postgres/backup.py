"""Backing up PostgreSQL: physical full/incremental backups of a running cluster, logical dumps.

Physical: pg_backup_start on a held connection → the repository archiver copies the data
directory (PostgreSQL's exclusions; unchanged files reused from the parent for incrementals)
while page checksums are validated alongside → pg_backup_stop → wait until the stop segment is
in the WAL archive → only then is the snapshot written. Any failure before that writes no
snapshot, and closing the connection makes the server abort the backup.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from recoverctl.config import Config, PostgresSource
from recoverctl.errors import (
    NotFoundError,
    RecoverctlError,
    UsageError,
    VerificationError,
)
from recoverctl.progress import Progress
from recoverctl.repo import BackupResult, Repository, Snapshot, backup_stream
from recoverctl.repo.archiver import backup_tree
from recoverctl.repo.page_patch import PATCH_FORMAT_VERSION
from recoverctl.sources.postgres.archive_wait import archive_stall_error, archiver_state
from recoverctl.sources.postgres.checksum import PageBatch, PageValidator, recheck
from recoverctl.sources.postgres.connection import connect, find_bin_dir, server_major
from recoverctl.sources.postgres.files import Exclusions, walk_data_dir
from recoverctl.sources.postgres.pageincr import (
    BLOCK_SIZE,
    WAL_DECODE_SHARE,
    RelationReads,
    relation_bytes_since,
)
from recoverctl.sources.postgres.pagemap import WalUnavailable, changed_blocks
from recoverctl.sources.postgres.session import BackupSession
from recoverctl.sources.postgres.settings import archiving_plan, archiving_refusal
from recoverctl.sources.postgres.standby import StandbyCopy
from recoverctl.sources.postgres.walarchive import wait_for_wal
from recoverctl.sources.postgres.walnames import parse_lsn
from recoverctl.units import human_size

KIND = "postgres"
LOGICAL_KIND = "postgres-logical"
# Archiver warnings that are normal for a running cluster: WAL replay repairs both.
_EXPECTED_WARNINGS = ("changed while it was read", "vanished before it could be read")
# File timestamps are coarse: a change within this window of the parent's start may not move mtime.
_MTIME_SLACK_NS = 2_000_000_000


# Relation files up to this size are validated together with other small files (PageBatch).
_SMALL_FILE = 1024 * 1024


def _checksum_pass(
    data_dir: Path, start_lsn: int, since_ns: int | None, stop: threading.Event
) -> tuple[dict[str, list[int]], int]:
    """Validate the pages of relation files (modified since `since_ns` when given); return the bad
    blocks per file and the number of pages checked."""
    suspects: dict[str, tuple[int, list[int]]] = {}
    pages = 0
    batch = PageBatch(start_lsn)
    firsts: dict[str, int] = {}

    def flush() -> None:
        for rel, blocks in batch.flush().items():
            suspects[rel] = (firsts[rel], blocks)
        firsts.clear()

    for f in walk_data_dir(data_dir):
        if stop.is_set():
            break
        if not f.is_relation or f.size == 0 or (since_ns is not None and f.mtime_ns < since_ns):
            continue
        path = data_dir / f.path
        try:
            with open(path, "rb", buffering=0) as fh:
                if f.size <= _SMALL_FILE:
                    firsts[f.path] = f.first_block
                    if batch.add(f.path, f.first_block, fh.read(_SMALL_FILE)):
                        flush()
                    continue
                v = PageValidator(f.first_block, start_lsn)
                while chunk := fh.read(4 * 1024 * 1024):
                    v.feed(chunk)
        except FileNotFoundError:
            continue
        pages += v.offset_blocks
        if v.suspects:
            suspects[f.path] = (f.first_block, v.suspects)
    flush()
    pages += batch.pages_checked
    bad: dict[str, list[int]] = {}
    for rel, (first, blocks) in suspects.items():
        still = recheck(str(data_dir / rel), first, blocks, start_lsn)
        if still:
            bad[rel] = still
    return bad, pages


def _archiver_failing(state: dict[str, Any]) -> bool:
    """True when archive_command's last failure is newer than its last success."""
    return bool(state.get("last_failed_wal")) and (state.get("last_failed_at") or 0) >= (
        state.get("last_archived_at") or 0
    )


def _row_counts(conn: psycopg.Connection, tables: list[str]) -> tuple[dict[str, int], dict[str, float]]:
    exact: dict[str, int] = {}
    for table in tables:
        ident = sql.Identifier(*table.split(".", 1))
        try:
            row = conn.execute(sql.SQL("select count(*) from {}").format(ident)).fetchone()
        except psycopg.errors.UndefinedTable:
            raise UsageError(
                f"count_tables names '{table}', which does not exist in the source database",
                hint="fix 'count_tables' in the postgres source config",
            ) from None
        assert row is not None
        exact[table] = int(row[0])
    estimates = {
        str(name): float(n)
        for name, n in conn.execute(
            "select n.nspname || '.' || c.relname, c.reltuples from pg_class c "
            "join pg_namespace n on n.oid = c.relnamespace where c.relkind in ('r', 'p', 'm') "
            "and n.nspname not in ('pg_catalog', 'information_schema') and n.nspname not like 'pg_toast%%'"
        ).fetchall()
    }
    return exact, estimates


def latest_physical(repo: Repository, source: str, system_identifier: str | None = None) -> Snapshot | None:
    """Return the newest complete physical snapshot of `source` (same cluster when given), or None."""
    snaps = [
        s
        for s in repo.find_snapshots(kind=KIND, source=source)
        if s.metadata.get("stop_lsn")
        and (system_identifier is None or s.metadata.get("system_identifier") == system_identifier)
    ]
    return snaps[-1] if snaps else None


def _is_tablespace_link(relpath: str) -> bool:
    """True for pg_tblspc/<oid>: a tablespace's contents are stored in place of its link."""
    head, _, oid = relpath.partition("/")
    return head == "pg_tblspc" and oid.isdigit()


def _data_dir(src: PostgresSource, name: str, server_dir: str) -> Path:
    data_dir = Path(src.data_dir or server_dir)
    if not (data_dir / "PG_VERSION").is_file():
        raise UsageError(
            f"data directory '{data_dir}' of source '{name}' is not readable here",
            hint="run recoverctl on the database host as the server's OS user, and set 'data_dir'",
        )
    return data_dir


def tablespace_names(conn: psycopg.Connection) -> dict[str, str]:
    """Given a connection to the source, return its user tablespaces' names by OID."""
    return {
        str(oid): str(spcname)
        for oid, spcname in conn.execute(
            "select oid, spcname from pg_tablespace where spcname not in ('pg_default', 'pg_global')"
        ).fetchall()
    }


def backup_data_dir(
    cfg: Config, name: str, src: PostgresSource, conn: psycopg.Connection, standby: StandbyCopy | None = None
) -> Path:
    """Given a connection to the source, return its data directory as readable here (the
    standby's when the backup reads from `standby`).

    Raise ConfigError (exit 2) when WAL archiving is not configured, UsageError when the data
    directory cannot be read from this host.
    """
    refusal = archiving_refusal(name, archiving_plan(cfg, name, conn))
    if refusal is not None:
        raise refusal
    if standby is not None:
        return standby.data_dir
    server_dir = str(conn.execute("show data_directory").fetchone()[0])  # type: ignore[index]
    return _data_dir(src, name, server_dir)


@dataclass
class PhysicalBackup:
    """What a physical backup wrote: the snapshot, its metadata and what was checked on the way."""

    result: BackupResult
    metadata: dict[str, Any]
    parent: Snapshot | None
    type: str  # full or incremental (an incremental without a parent becomes full)
    pages_checked: int
    checksum_errors: list[dict[str, Any]]
    wal_wait_s: float


@dataclass
class _Copy:
    """One physical backup in progress: the server's backup session and the repository."""

    repo: Repository
    conn: psycopg.Connection
    session: BackupSession
    name: str
    src: PostgresSource
    data_dir: Path
    start: Any
    metadata: dict[str, Any]
    check: Callable[[], tuple[dict[str, list[int]], int]] | None
    relations: RelationReads | None = None
    standby: StandbyCopy | None = None
    stats: dict[str, Any] = field(default_factory=dict)

    def before_snapshot(self, warnings: list[str]) -> bool:
        """Stop the backup, complete the metadata, wait for its WAL; return whether the snapshot
        is partial (warnings other than the expected ones of a running cluster)."""
        conn, start = self.conn, self.start
        # Counting rows reads the tables: on the standby when the backup reads from it.
        counts, estimates = _row_counts(self.standby.conn if self.standby else conn, self.src.count_tables)
        stop = self.session.stop()
        xmax = conn.execute("select pg_snapshot_xmax(pg_current_snapshot())::text").fetchone()
        self.metadata.update(
            stop_lsn=stop.lsn,
            stop_segment=stop.segment,
            stop_time=stop.time,
            timeline=start.timeline,
            start_segment=start.segment,
            backup_label=stop.backup_label,
            tablespace_map=stop.tablespace_map,
            next_xid=int(xmax[0]) if xmax else None,
            row_counts=counts,
            reltuples=estimates,
            wal_range=[start.segment, stop.segment],
        )
        if self.relations is not None:
            self.metadata["page_incremental"] = self.relations.summary()
        if self.check is not None:
            bad, pages = self.check()
            self.stats["checksum_errors"] = [
                {"file": f, "block": b} for f, blocks in sorted(bad.items()) for b in blocks
            ]
            self.stats["pages_checked"] = pages
        self.metadata["checksum_errors"] = self.stats.get("checksum_errors", [])
        # A failing archive_command must still fail the backup (it breaks every restore
        # past it), so the backup only helps an archiver that works.
        helping = not _archiver_failing(archiver_state(conn))
        try:
            self.stats["wal_wait_s"] = wait_for_wal(
                self.repo,
                self.name,
                start.segment,
                stop.segment,
                self.src.wal_wait,
                pg_wal=self.data_dir / "pg_wal" if helping else None,
                segment_size=start.segment_size,
            )
        except VerificationError as e:
            missing = str(e.details.get("segment") or stop.segment)
            raise archive_stall_error(conn, self.name, missing, self.src.wal_wait) from None
        unexpected = [
            w
            for w in warnings
            if not w.endswith(_EXPECTED_WARNINGS) and not any(e in w for e in _EXPECTED_WARNINGS)
        ]
        return bool(unexpected)


def _start_metadata(
    start: Any, effective: str, data_dir: Path, annotations: dict[str, str], names: dict[str, str]
) -> dict[str, Any]:
    return {
        "backup": "physical",
        "type": effective,
        "data_dir": str(data_dir),
        "start_lsn": start.lsn,
        "start_segment": start.segment,
        "start_time": start.time,
        "timeline": start.timeline,
        "system_identifier": start.system_identifier,
        "server_version": start.server_version,
        "segment_size": start.segment_size,
        "data_checksums": start.data_checksums,
        "annotations": dict(annotations),
        "tablespaces": [
            {"oid": int(oid), "name": names.get(oid, oid), "location": location}
            for oid, location in sorted(start.tablespaces.items(), key=lambda t: int(t[0]))
        ],
    }


def copy_physical(
    repo: Repository,
    conn: psycopg.Connection,
    name: str,
    src: PostgresSource,
    data_dir: Path,
    *,
    backup_type: str,
    annotations: dict[str, str],
    progress: Progress,
    standby: StandbyCopy | None = None,
) -> PhysicalBackup:
    """Back up the running cluster behind `conn` into `repo` (the caller holds its lock).

    With `standby`, `data_dir` is the standby's: the backup starts and stops on `conn` (the
    primary) and waits for the standby to catch up with the start before reading its files.

    pg_backup_start → copy the data directory (unchanged files reused from the parent for an
    incremental) while page checksums are validated alongside → pg_backup_stop → wait until the
    stop segment is archived → write the snapshot. Raise VerificationError when the stop segment
    does not reach the archive (no snapshot then).
    """
    names = tablespace_names(conn)
    with BackupSession(conn) as session:
        repo.index_orphan_packs()
        sysid = str(conn.execute("select system_identifier::text from pg_control_system()").fetchone()[0])  # type: ignore[index]
        parent = latest_physical(repo, name, sysid) if backup_type == "incremental" else None
        effective = "incremental" if parent is not None else "full"
        start = session.start(f"recoverctl {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}")
        if standby is not None:
            standby.catch_up(start.lsn, start.timeline)
        start_lsn = parse_lsn(start.lsn)
        since_ns = int(float(parent.metadata["start_time"]) * 1e9) - _MTIME_SLACK_NS if parent else None
        relations = relation_reads(repo, conn, name, src, data_dir, parent, start, start_lsn)
        stop_flag = threading.Event()
        pool = ThreadPoolExecutor(1, thread_name_prefix="pagecheck")
        check: Callable[[], tuple[dict[str, list[int]], int]] | None = None
        if relations.validate:
            check = relations.checked  # pages are validated as the chunks are read
        elif start.data_checksums:
            check = pool.submit(_checksum_pass, data_dir, start_lsn, since_ns, stop_flag).result
        metadata = _start_metadata(start, effective, data_dir, annotations, names)
        metadata.update(standby.metadata() if standby else {"backup_from": "primary"})
        copy = _Copy(repo, conn, session, name, src, data_dir, start, metadata, check, relations, standby)
        try:
            result: BackupResult = backup_tree(
                repo,
                data_dir,
                exclude=standby.exclusions(Exclusions(data_dir)) if standby else Exclusions(data_dir),
                extra_files=standby.primary_files() if standby else None,
                follow_symlinks=_is_tablespace_link,
                force_reread=_modified_since(since_ns),
                read_plan=relations,
                progress=progress,
                before_snapshot=copy.before_snapshot,
                kind=KIND,
                paths=[str(data_dir)],
                source=name,
                tags={"type": effective, **{f"annotation.{k}": v for k, v in annotations.items()}},
                metadata=metadata,
                parent=parent,
            )
        finally:
            stop_flag.set()
            pool.shutdown(wait=True)
    return PhysicalBackup(
        result=result,
        metadata=metadata,
        parent=parent,
        type=effective,
        pages_checked=copy.stats.get("pages_checked", 0),
        checksum_errors=copy.stats.get("checksum_errors", []),
        wal_wait_s=copy.stats["wal_wait_s"],
    )


def _modified_since(since_ns: int | None) -> Callable[[str, os.stat_result], bool] | None:
    """Return an incremental's re-read test (modified since `since_ns`); None for a full backup."""
    if since_ns is None:
        return None
    limit: int = since_ns
    return lambda _rel, st: st.st_mtime_ns >= limit


def relation_reads(
    repo: Repository,
    conn: psycopg.Connection,
    name: str,
    src: PostgresSource,
    data_dir: Path,
    parent: Snapshot | None,
    start: Any,
    start_lsn: int,
) -> RelationReads:
    """Return how this backup reads relation files: whole for a full backup; for an incremental,
    only the chunks the WAL since `parent`'s start names — or whole, with the reason, when the WAL
    cannot vouch for that (see pageincr)."""

    generated = _wal_generated(conn)
    hints_logged = bool(start.data_checksums) or _setting(conn, "wal_log_hints") == "on"

    def whole(reason: str | None, detail: str | None = None) -> RelationReads:
        return RelationReads(
            data_dir,
            None,
            reason,
            start_lsn=start_lsn,
            validate=False,
            detail=detail,
            wal_generated=generated,
            hints_logged=hints_logged,
        )

    if parent is None:
        return whole(None)
    md = parent.metadata
    if (md.get("page_incremental") or {}).get("block_size") != BLOCK_SIZE:
        return whole("parent_not_page_aligned")
    if int(md.get("timeline") or 0) != start.timeline:
        return whole("timeline_switch", f"parent on timeline {md.get('timeline')}, now {start.timeline}")
    if not hints_logged:
        return whole("hint_bits_not_logged")
    # Turning wal_log_hints on leaves a PARAMETER_CHANGE "on" in the WAL, which does not say the
    # range began with it off: the parent's own record does (older snapshots lack it: assume off).
    if not md.get("data_checksums") and not (md.get("page_incremental") or {}).get("hints_logged"):
        return whole("hint_bits_not_logged", "wal_log_hints was off when the parent backup started")
    if src.page_incremental == "off":
        return whole("configured_off", f"sources.{name}.page_incremental is off")
    parent_lsn = parse_lsn(str(md["start_lsn"]))
    wal = start_lsn - parent_lsn  # an upper bound: it counts the empty tails of switched segments
    before = (md.get("page_incremental") or {}).get("wal_generated_bytes")
    if isinstance(before, int) and generated is not None and generated >= before:
        wal = min(wal, generated - before)
    modified = relation_bytes_since(data_dir, int(float(md["start_time"]) * 1e9) - _MTIME_SLACK_NS)
    if src.page_incremental == "auto" and wal >= WAL_DECODE_SHARE * modified:
        return whole(
            "wal_not_smaller",
            f"{human_size(wal)} of WAL to decode against {human_size(modified)} of "
            "relation files modified since the parent: reading those whole is cheaper",
        )
    try:
        changes = changed_blocks(
            repo, name, find_bin_dir(src, server_major(conn)), data_dir / "pg_wal",
            timeline=start.timeline, start_lsn=parent_lsn, end_lsn=start_lsn,
            segment_size=start.segment_size,
        )  # fmt: skip
    except WalUnavailable as e:
        return whole("wal_unavailable", str(e))
    if changes.hint_bits_unlogged and not start.data_checksums:
        return whole("hint_bits_not_logged", "wal_log_hints was off during part of the range")
    return RelationReads(
        data_dir, changes, None, start_lsn=start_lsn, validate=start.data_checksums, wal_generated=generated,
        hints_logged=hints_logged, patches=int(repo.config["version"]) >= PATCH_FORMAT_VERSION,
    )  # fmt: skip


def _wal_generated(conn: psycopg.Connection) -> int | None:
    """Return the WAL bytes the server has written since its statistics began (pg_stat_wal, 14+);
    unlike an LSN distance it leaves out the empty tails of switched segments. None before 14."""
    if server_major(conn) < 14:
        return None
    row = conn.execute("select wal_bytes::bigint from pg_stat_wal").fetchone()
    return int(row[0]) if row and row[0] is not None else None


def _setting(conn: psycopg.Connection, setting: str) -> str:
    row = conn.execute("select current_setting(%s)", (setting,)).fetchone()
    return str(row[0]) if row else ""


class _CheckedDump:
    """The pg_dump stream; at EOF it checks pg_dump's exit status, so a failed dump raises before
    the snapshot is written."""

    def __init__(self, proc: subprocess.Popen[bytes], what: str) -> None:
        assert proc.stdout is not None and proc.stderr is not None
        self.proc = proc
        self.raw = proc.stdout
        self.what = what
        self.rc: int | None = None
        self.err_chunks: list[bytes] = []
        stderr = proc.stderr
        self.reader = threading.Thread(target=lambda: self.err_chunks.append(stderr.read()), daemon=True)
        self.reader.start()

    def readinto(self, b: Any) -> int:
        n = self.raw.readinto(b)  # type: ignore[attr-defined]
        if not n:
            self._finish()
        return n or 0

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        if not data:
            self._finish()
        return data

    def _finish(self) -> None:
        if self.rc is not None:
            return
        self.rc = self.proc.wait()
        self.reader.join()
        if self.rc != 0:
            msg = b"".join(self.err_chunks).decode(errors="replace").strip()
            raise RecoverctlError(
                f"pg_dump of {self.what} failed: {msg[-500:]}",
                hint="check the database name and the source's connection settings",
            )


def dump_tools(name: str, src: PostgresSource) -> tuple[Path, int]:
    """Return the directory of the client programs matching the source's server, and its version
    number; raise RecoverctlError when the server cannot be reached."""
    with connect(src, name) as conn:
        return find_bin_dir(src, server_major(conn)), int(conn.info.server_version)


def dump_logical(
    repo: Repository,
    name: str,
    src: PostgresSource,
    dbname: str,
    tools: tuple[Path, int],
    *,
    annotations: dict[str, str],
    progress: Progress | None,
) -> BackupResult:
    """Stream `pg_dump -Fc` of database `dbname` into a snapshot in `repo` (no temporary file; the
    caller holds the lock) with the `dump_tools`; return the result.

    Raise RecoverctlError with pg_dump's message when it fails (no snapshot is written then).
    """
    bin_dir, version = tools
    env = {**os.environ, **_pg_env(src)}
    argv = [str(bin_dir / "pg_dump"), "-Fc", "-Z", "0", "-h", src.host, "-p", str(src.port), "-U", src.user,
            "-d", dbname]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        return backup_stream(
            repo,
            _CheckedDump(proc, f"database '{dbname}' on source '{name}'"),  # type: ignore[arg-type]
            filename=f"{dbname}.dump",
            kind=LOGICAL_KIND,
            source=name,
            tags={"type": "logical", "database": dbname},
            metadata={
                "backup": "logical",
                "database": dbname,
                "format": "custom",
                "server_version": version,
                "annotations": dict(annotations),
            },
            progress=progress,
        )
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _pg_env(src: PostgresSource) -> dict[str, str]:
    from recoverctl.sources.postgres.connection import connect_env

    return connect_env(src)


def find_logical(repo: Repository, source: str, ref: str) -> Snapshot:
    """Resolve a logical snapshot of `source` by id prefix or 'latest'; raise NotFoundError."""
    snap = repo.resolve_snapshot(ref, kind=LOGICAL_KIND, source=source)
    if snap.kind != LOGICAL_KIND:
        raise NotFoundError(
            f"snapshot {snap.short_id} is a {snap.kind} snapshot, not a logical dump",
            hint="list logical dumps with 'recoverctl snapshots --json' (kind postgres-logical)",
        )
    return snap
