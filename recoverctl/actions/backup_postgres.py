"""`backup postgres`: record a physical or logical backup of a PostgreSQL source as a run.

The mechanics (backup session, checksum pass, WAL wait, pg_dump stream) are in
sources/postgres/backup.py; this use case opens and locks the repository, records the run, the
snapshot and the audit entry, and turns checksum failures into a partial result.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any

from recoverctl.actions.operation import operation
from recoverctl.config import Config, PostgresSource
from recoverctl.errors import ConfigError, PartialError, RecoverctlError, UsageError
from recoverctl.progress import Progress
from recoverctl.recorder import RunRecorder
from recoverctl.sources.postgres.backup import (
    PhysicalBackup,
    backup_data_dir,
    dump_logical,
    dump_tools,
)
from recoverctl.sources.postgres.connection import connect
from recoverctl.sources.postgres.standby import standby_for
from recoverctl.sources.registry import source_for

_SIZES = (
    "files_new",
    "files_changed",
    "files_unmodified",
    "bytes_read",
    "bytes_total",
    "bytes_added",
    "bytes_uploaded",
)


@dataclass
class PhysicalBackupPlan:
    """What `backup postgres --dry-run` would back up."""

    source: str
    type: str
    data_dir: str
    dry_run: bool = True
    # primary or standby; with standby, the standby was verified (in recovery, same system
    # identifier and timeline as the primary) and data_dir is its data directory.
    backup_from: str = "primary"
    standby_host: str | None = None


@dataclass
class PhysicalBackupSummary:
    """A physical backup written to the repository (the run's details hold the same)."""

    source: str
    snapshot_id: str | None
    type: str
    requested_type: str
    parent: str | None
    start_lsn: str
    stop_lsn: str
    timeline: int
    wal_range: list[str]
    system_identifier: str
    server_version: int
    row_counts: dict[str, int]
    tablespaces: list[dict[str, Any]]
    annotations: dict[str, str]
    pages_checked: int
    checksum_errors: list[dict[str, Any]]
    wal_wait_s: float
    duration_s: float
    warnings: list[str]
    files_new: int
    files_changed: int
    files_unmodified: int
    bytes_read: int
    bytes_total: int
    bytes_added: int
    bytes_uploaded: int
    backup_from: str = "primary"
    standby_host: str | None = None

    @classmethod
    def of(cls, name: str, requested: str, b: PhysicalBackup, duration_s: float) -> PhysicalBackupSummary:
        md = b.metadata
        return cls(
            source=name,
            snapshot_id=b.result.snapshot_id,
            type=b.type,
            requested_type=requested,
            parent=b.parent.id if b.parent else None,
            **{k: md[k] for k in ("start_lsn", "stop_lsn", "timeline", "wal_range", "system_identifier")},
            **{k: md[k] for k in ("server_version", "row_counts", "tablespaces", "annotations")},
            pages_checked=b.pages_checked,
            checksum_errors=b.checksum_errors,
            wal_wait_s=round(b.wal_wait_s, 3),
            duration_s=round(duration_s, 3),
            warnings=b.result.warnings[:50],
            **{k: b.result.summary[k] for k in _SIZES},
            backup_from=str(md.get("backup_from", "primary")),
            standby_host=md.get("standby_host"),
        )


@dataclass
class LogicalBackupSummary:
    """A logical dump written to the repository."""

    source: str
    database: str
    snapshot_id: str | None
    bytes: int
    bytes_added: int
    duration_s: float


def backup_postgres(
    cfg: Config,
    catalog: RunRecorder,
    password: str,
    *,
    source: str | None,
    backup_type: str = "full",
    annotations: dict[str, str] | None = None,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> PhysicalBackupSummary | PhysicalBackupPlan:
    """Back up a running cluster physically; return the summary (snapshot id, LSNs, WAL range...).

    `incremental` reuses files unchanged since the newest snapshot of the same cluster (falls
    back to full when there is none) and still writes a standalone snapshot. Raise ConfigError
    (exit 2) when WAL archiving is not configured, PartialError (exit 3) after writing the
    snapshot when pages failed checksum validation, VerificationError when the stop segment
    does not reach the archive (no snapshot then). `catalog` only records: the CLI passes a
    ForkedRecorder, so SQLAlchemy is never loaded in the process that reads the cluster.
    """
    if backup_type not in ("full", "incremental"):
        raise UsageError(f"unknown backup type '{backup_type}'", hint="use --type full or --type incremental")
    name, src = cfg.source(source, "postgres")
    with connect(src, name) as conn, standby_for(name, src, conn) as standby:
        data_dir = backup_data_dir(cfg, name, src, conn, standby)
        if dry_run:
            return PhysicalBackupPlan(
                source=name, type=backup_type, data_dir=str(data_dir), backup_from=src.backup_from,
                standby_host=f"{standby.host}:{standby.config.port}" if standby else None,
            )  # fmt: skip
        started = time.monotonic()
        with operation(
            cfg, password, "backup-postgres", recorder=catalog, source=name,
            lock="shared", lock_name="backup postgres",
        ) as op:  # fmt: skip
            backup: PhysicalBackup = source_for(cfg, name, None, password).backup(
                op.repo, progress or Progress(), conn=conn, data_dir=data_dir, backup_type=backup_type,
                annotations=dict(annotations or {}), standby=standby,
            )  # fmt: skip
            summary = PhysicalBackupSummary.of(name, backup_type, backup, time.monotonic() - started)
            _record(catalog, op, backup, summary)
    return summary


def _record(catalog: RunRecorder, op: Any, backup: PhysicalBackup, summary: PhysicalBackupSummary) -> None:
    """Record the snapshot, the run's outcome and the audit entry; raise PartialError (after
    recording) when pages failed checksum validation."""
    result, name, errors = backup.result, summary.source, summary.checksum_errors
    assert result.snapshot is not None
    catalog.record_snapshot(op.repo.url, result.snapshot)
    status = "partial" if errors or result.partial else "succeeded"
    op.finish(
        status,
        bytes_read=result.summary["bytes_read"],
        bytes_added=result.summary["bytes_added"],
        snapshot_id=result.snapshot_id,
        details=dataclasses.asdict(summary),
    )
    catalog.audit("backup.postgres", name, status, {"snapshot": result.snapshot_id, "type": backup.type})
    if not errors:
        return
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
        details={"summary": dataclasses.asdict(summary)},
    )


def backup_postgres_logical(
    cfg: Config,
    catalog: RunRecorder,
    password: str,
    *,
    source: str | None,
    database: str | None = None,
    annotations: dict[str, str] | None = None,
    progress: Progress | None = None,
) -> LogicalBackupSummary:
    """Stream `pg_dump -Fc` of one database into a snapshot (no temporary file); return the summary.

    Raise RecoverctlError with pg_dump's message when it fails (no snapshot is written then).
    """
    name, src = cfg.source(source, "postgres")
    dbname = database or (src.logical_databases[0] if src.logical_databases else src.dbname)
    tools = dump_tools(name, src)
    with operation(
        cfg, password, "backup-postgres-logical", recorder=catalog, source=name,
        lock="shared", lock_name="backup postgres --logical",
    ) as op:  # fmt: skip
        result = dump_logical(
            op.repo, name, src, dbname, tools, annotations=dict(annotations or {}), progress=progress
        )
        assert result.snapshot is not None
        catalog.record_snapshot(op.repo.url, result.snapshot)
        summary = LogicalBackupSummary(
            source=name,
            database=dbname,
            snapshot_id=result.snapshot_id,
            bytes=result.summary["bytes_read"],
            bytes_added=result.summary["bytes_added"],
            duration_s=result.summary["duration_s"],
        )
        op.finish(
            "succeeded", bytes_read=summary.bytes, bytes_added=summary.bytes_added,
            snapshot_id=result.snapshot_id, details=dataclasses.asdict(summary),
        )  # fmt: skip
    catalog.audit(
        "backup.postgres.logical", name, "succeeded", {"snapshot": result.snapshot_id, "database": dbname}
    )
    return summary


def check_standbys(cfg: Config) -> None:
    """Given a config, connect to each source that backs up from a standby and to its standby;
    raise ConfigError naming what would fail such a backup (unreachable, not in recovery, a
    standby of another cluster or timeline, its data directory not readable here), one line each."""
    problems: list[str] = []
    for name, src in cfg.sources.items():
        if not isinstance(src, PostgresSource) or src.backup_from != "standby":
            continue
        try:
            with connect(src, name) as conn, standby_for(name, src, conn):
                pass
        except RecoverctlError as e:
            problems.append(e.message)
    if problems:
        raise ConfigError(
            "backup_from: standby cannot work:\n  " + "\n  ".join(problems),
            hint="point 'standby:' at a streaming standby of the primary, or set backup_from: primary",
            details={"file": str(cfg.path) if cfg.path else None, "errors": problems},
        )
