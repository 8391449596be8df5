"""`backup postgres`: physical full/incremental backups of a running cluster, and logical dumps.

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
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from recoverctl.actions.archive_wait import archive_stall_error, archiver_state
from recoverctl.actions.postgres_setup import archiving_plan, archiving_refusal
from recoverctl.actions.repository import open_repository
from recoverctl.catalog import Catalog
from recoverctl.config import Config, PostgresSource
from recoverctl.errors import (
    NotFoundError,
    PartialError,
    RecoverctlError,
    UsageError,
    VerificationError,
)
from recoverctl.progress import Progress
from recoverctl.recorder import record_failed_run
from recoverctl.repo import BackupResult, Repository, Snapshot, backup_stream
from recoverctl.repo.archiver import backup_tree
from recoverctl.sources.postgres.checksum import PageBatch, PageValidator, recheck
from recoverctl.sources.postgres.connection import connect, find_bin_dir, server_major
from recoverctl.sources.postgres.files import Exclusions, walk_data_dir
from recoverctl.sources.postgres.session import BackupSession
from recoverctl.sources.postgres.walarchive import wait_for_wal

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


def backup_postgres(
    cfg: Config,
    catalog: Catalog,
    password: str,
    *,
    source: str | None,
    backup_type: str = "full",
    annotations: dict[str, str] | None = None,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Back up a running cluster physically; return the summary (snapshot id, LSNs, WAL range...).

    `incremental` reuses files unchanged since the newest snapshot of the same cluster (falls
    back to full when there is none) and still writes a standalone snapshot. Raise ConfigError
    (exit 2) when WAL archiving is not configured, PartialError (exit 3) after writing the
    snapshot when pages failed checksum validation, VerificationError when the stop segment
    does not reach the archive (no snapshot then).
    """
    if backup_type not in ("full", "incremental"):
        raise UsageError(f"unknown backup type '{backup_type}'", hint="use --type full or --type incremental")
    name, src = cfg.source(source, "postgres")
    progress = progress or Progress()
    conn = connect(src, name)
    try:
        refusal = archiving_refusal(name, archiving_plan(cfg, name, conn))
        if refusal is not None:
            raise refusal
        names = {
            str(oid): str(spcname)
            for oid, spcname in conn.execute(
                "select oid, spcname from pg_tablespace where spcname not in ('pg_default', 'pg_global')"
            ).fetchall()
        }
        server_dir = str(conn.execute("show data_directory").fetchone()[0])  # type: ignore[index]
        data_dir = _data_dir(src, name, server_dir)
        if dry_run:
            return {"source": name, "type": backup_type, "data_dir": str(data_dir), "dry_run": True}
        repo = open_repository(cfg, password)
    except BaseException:
        conn.close()
        raise
    run_id = catalog.start_run("backup-postgres", name, repo.url)
    started = time.monotonic()
    try:
        with repo.lock(operation="backup postgres"), BackupSession(conn) as session:
            repo.index_orphan_packs()
            sysid = str(conn.execute("select system_identifier::text from pg_control_system()").fetchone()[0])  # type: ignore[index]
            parent = latest_physical(repo, name, sysid) if backup_type == "incremental" else None
            effective = "incremental" if parent is not None else "full"
            start = session.start(f"recoverctl {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}")
            start_lsn = int(start.lsn.split("/")[0], 16) << 32 | int(start.lsn.split("/")[1], 16)
            since_ns = None
            reread = None
            if parent is not None:
                parent_start_ns = int(float(parent.metadata["start_time"]) * 1e9) - _MTIME_SLACK_NS
                since_ns = parent_start_ns

                def reread(_rel: str, st: os.stat_result) -> bool:
                    return st.st_mtime_ns >= parent_start_ns

            stop_flag = threading.Event()
            pool = ThreadPoolExecutor(1, thread_name_prefix="pagecheck")
            check: Future[tuple[dict[str, list[int]], int]] | None = None
            if start.data_checksums:
                check = pool.submit(_checksum_pass, data_dir, start_lsn, since_ns, stop_flag)
            metadata: dict[str, Any] = {
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
                "annotations": dict(annotations or {}),
                "tablespaces": [
                    {"oid": int(oid), "name": names.get(oid, oid), "location": location}
                    for oid, location in sorted(start.tablespaces.items(), key=lambda t: int(t[0]))
                ],
            }
            stats: dict[str, Any] = {}

            def before_snapshot(warnings: list[str]) -> bool:
                counts, estimates = _row_counts(conn, src.count_tables)
                stop = session.stop()
                xmax = conn.execute("select pg_snapshot_xmax(pg_current_snapshot())::text").fetchone()
                metadata.update(
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
                if check is not None:
                    bad, pages = check.result()
                    stats["checksum_errors"] = [
                        {"file": f, "block": b} for f, blocks in sorted(bad.items()) for b in blocks
                    ]
                    stats["pages_checked"] = pages
                metadata["checksum_errors"] = stats.get("checksum_errors", [])
                # A failing archive_command must still fail the backup (it breaks every restore
                # past it), so the backup only helps an archiver that works.
                helping = not _archiver_failing(archiver_state(conn))
                try:
                    stats["wal_wait_s"] = wait_for_wal(
                        repo,
                        name,
                        start.segment,
                        stop.segment,
                        src.wal_wait,
                        pg_wal=data_dir / "pg_wal" if helping else None,
                        segment_size=start.segment_size,
                    )
                except VerificationError as e:
                    missing = str(e.details.get("segment") or stop.segment)
                    raise archive_stall_error(conn, name, missing, src.wal_wait) from None
                unexpected = [
                    w
                    for w in warnings
                    if not w.endswith(_EXPECTED_WARNINGS) and not any(e in w for e in _EXPECTED_WARNINGS)
                ]
                return bool(unexpected)

            try:
                result: BackupResult = backup_tree(
                    repo,
                    data_dir,
                    exclude=Exclusions(data_dir),
                    follow_symlinks=_is_tablespace_link,
                    force_reread=reread,
                    progress=progress,
                    before_snapshot=before_snapshot,
                    kind=KIND,
                    paths=[str(data_dir)],
                    source=name,
                    tags={
                        "type": effective,
                        **{f"annotation.{k}": v for k, v in (annotations or {}).items()},
                    },
                    metadata=metadata,
                    parent=parent,
                )
            finally:
                stop_flag.set()
                pool.shutdown(wait=True)
    except BaseException as e:
        record_failed_run(catalog, run_id, e)
        raise
    finally:
        conn.close()
        repo.close()
    assert result.snapshot is not None
    catalog.record_snapshot(repo.url, result.snapshot)
    errors = stats.get("checksum_errors", [])
    summary = {
        "source": name,
        "snapshot_id": result.snapshot_id,
        "type": effective,
        "requested_type": backup_type,
        "parent": parent.id if parent else None,
        "start_lsn": metadata["start_lsn"],
        "stop_lsn": metadata["stop_lsn"],
        "timeline": metadata["timeline"],
        "wal_range": metadata["wal_range"],
        "system_identifier": metadata["system_identifier"],
        "server_version": metadata["server_version"],
        "row_counts": metadata["row_counts"],
        "tablespaces": metadata["tablespaces"],
        "annotations": metadata["annotations"],
        "pages_checked": stats.get("pages_checked", 0),
        "checksum_errors": errors,
        "wal_wait_s": round(stats["wal_wait_s"], 3),
        "duration_s": round(time.monotonic() - started, 3),
        "warnings": result.warnings[:50],
        **{
            k: result.summary[k]
            for k in (
                "files_new",
                "files_changed",
                "files_unmodified",
                "bytes_read",
                "bytes_total",
                "bytes_added",
                "bytes_uploaded",
            )
        },
    }
    status = "partial" if errors or result.partial else "succeeded"
    catalog.finish_run(
        run_id,
        status,
        bytes_read=result.summary["bytes_read"],
        bytes_added=result.summary["bytes_added"],
        snapshot_id=result.snapshot_id,
        details=summary,
    )
    catalog.audit("backup.postgres", name, status, {"snapshot": result.snapshot_id, "type": effective})
    if errors:
        catalog.emit_event(
            "backup.checksum_failure",
            "critical",
            name,
            f"{len(errors)} page(s) failed checksum validation in backup {result.snapshot_id[:8]} of '{name}'"
            if result.snapshot_id
            else "checksum failures",
            {"checksum_errors": errors[:100]},
        )
        listed = ", ".join(f"{e['file']} block {e['block']}" for e in errors[:10])
        raise PartialError(
            f"backup {str(result.snapshot_id)[:8]} of '{name}' was written, but {len(errors)} page(s) failed "
            f"checksum validation: {listed}",
            hint="the database has corrupted pages: check storage and run pg_amcheck; restore the "
            "affected relations from an earlier backup if needed",
            details={"summary": summary},
        )
    return summary


def backup_postgres_logical(
    cfg: Config,
    catalog: Catalog,
    password: str,
    *,
    source: str | None,
    database: str | None = None,
    annotations: dict[str, str] | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Stream `pg_dump -Fc` of one database into a snapshot (no temporary file); return the summary.

    Raise RecoverctlError with pg_dump's message when it fails (no snapshot is written then).
    """
    name, src = cfg.source(source, "postgres")
    dbname = database or (src.logical_databases[0] if src.logical_databases else src.dbname)
    with connect(src, name) as conn:
        bin_dir = find_bin_dir(src, server_major(conn))
        version = int(conn.info.server_version)
    env = {**os.environ, **_pg_env(src)}
    argv = [str(bin_dir / "pg_dump"), "-Fc", "-Z", "0", "-h", src.host, "-p", str(src.port), "-U", src.user,
            "-d", dbname]  # fmt: skip
    repo = open_repository(cfg, password)
    run_id = catalog.start_run("backup-postgres-logical", name, repo.url)
    try:
        with repo.lock(operation="backup postgres --logical"):
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
            assert proc.stdout is not None and proc.stderr is not None
            err_chunks: list[bytes] = []
            reader = threading.Thread(target=lambda: err_chunks.append(proc.stderr.read()), daemon=True)  # type: ignore[union-attr]
            reader.start()
            holder: dict[str, Any] = {}

            class _Checked:
                """The dump stream; at EOF it checks pg_dump's exit status, so a failed dump
                raises before the snapshot is written."""

                def __init__(self) -> None:
                    self.raw = proc.stdout

                def readinto(self, b: Any) -> int:
                    n = self.raw.readinto(b)  # type: ignore[union-attr]
                    if not n:
                        self._finish()
                    return n or 0

                def read(self, n: int = -1) -> bytes:
                    data = self.raw.read(n)  # type: ignore[union-attr]
                    if not data:
                        self._finish()
                    return data

                def _finish(self) -> None:
                    if "rc" in holder:
                        return
                    holder["rc"] = proc.wait()
                    reader.join()
                    if holder["rc"] != 0:
                        msg = b"".join(err_chunks).decode(errors="replace").strip()
                        raise RecoverctlError(
                            f"pg_dump of database '{dbname}' on source '{name}' failed: {msg[-500:]}",
                            hint="check the database name and the source's connection settings",
                        )

            try:
                result = backup_stream(
                    repo,
                    _Checked(),  # type: ignore[arg-type]
                    filename=f"{dbname}.dump",
                    kind=LOGICAL_KIND,
                    source=name,
                    tags={"type": "logical", "database": dbname},
                    metadata={
                        "backup": "logical",
                        "database": dbname,
                        "format": "custom",
                        "server_version": version,
                        "annotations": dict(annotations or {}),
                    },
                    progress=progress,
                )
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
    except BaseException as e:
        record_failed_run(catalog, run_id, e)
        raise
    finally:
        repo.close()
    assert result.snapshot is not None
    catalog.record_snapshot(repo.url, result.snapshot)
    summary = {
        "source": name,
        "database": dbname,
        "snapshot_id": result.snapshot_id,
        "bytes": result.summary["bytes_read"],
        "bytes_added": result.summary["bytes_added"],
        "duration_s": result.summary["duration_s"],
    }
    catalog.finish_run(
        run_id, "succeeded", bytes_read=summary["bytes"], bytes_added=summary["bytes_added"],
        snapshot_id=result.snapshot_id, details=summary,
    )  # fmt: skip
    catalog.audit(
        "backup.postgres.logical", name, "succeeded", {"snapshot": result.snapshot_id, "database": dbname}
    )
    return summary


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
