"""A PostgreSQL cluster as a Source: physical backups, point-in-time restore, and the drill's
restore into a scratch data directory (with recovery configured, the server not started: the
drill's scratch cluster starts it so recovery and start-up are timed apart)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recoverctl.config import Config
from recoverctl.errors import NotFoundError
from recoverctl.progress import Progress
from recoverctl.repo import Repository
from recoverctl.sources.base import DrillFlow, Fetched, PointInTime, RestoreRun, Selection, random_time
from recoverctl.sources.postgres.backup import KIND, PhysicalBackup, copy_physical
from recoverctl.sources.postgres.layout import tablespace_plan
from recoverctl.sources.postgres.recovery import RecoveryTarget, normalize_target

if TYPE_CHECKING:
    from recoverctl.catalog import Catalog
    from recoverctl.sources.postgres.restore import PhysicalRestoreResult

# sources.postgres.restore is imported where it is used: it loads the catalog (SQLAlchemy, ~30 MiB
# resident) that a backup process never needs.


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


class PostgresCluster:
    """The PostgreSQL source `name` of the config (physical backups; the WAL archive beside them)."""

    kind = KIND
    drill_flow: DrillFlow = "scratch_server"
    restore_run_kind = "restore-postgres"

    def __init__(self, cfg: Config, name: str, catalog: Catalog | None, password: str):
        self.cfg = cfg
        self.name = name
        self.run_source: str | None = name
        self._catalog = catalog  # restore point names resolve through it; backups pass None
        self.password = password  # restore_command and the WAL fetcher read the archive with it
        _, self.config = cfg.source(name, "postgres")
        self.target: RecoveryTarget | None = None  # the selected point, names resolved

    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            raise RuntimeError(f"source '{self.name}' was made for a backup: restoring needs the catalog")
        return self._catalog

    def backup(self, repo: Repository, progress: Progress, **options: Any) -> PhysicalBackup:
        """Back up the cluster physically (options: conn, data_dir, backup_type, annotations, as
        `backup.copy_physical` takes them); return what was written."""
        conn, data_dir = options.pop("conn"), options.pop("data_dir")
        return copy_physical(repo, conn, self.name, self.config, data_dir, progress=progress, **options)

    def restore(
        self, repo: Repository, snapshot: str | None, into: Path, progress: Progress, **options: Any
    ) -> PhysicalRestoreResult:
        """Restore `snapshot` (None: the newest before the target) into the data directory `into`
        (options: PhysicalRestoreRequest's); return the PhysicalRestoreResult."""
        from recoverctl.sources.postgres.restore import PhysicalRestoreRequest, restore_physical

        req = PhysicalRestoreRequest(
            target_dir=Path(into).absolute(),
            target=normalize_target(options.pop("target", None) or RecoveryTarget("latest")),
            snapshot=snapshot,
            **options,
        )
        return restore_physical(repo, self.cfg, self.catalog, self.password, self.name, req, progress)

    def select_recovery_point(self, repo: Repository, point: PointInTime, drill_start: float) -> Selection:
        """Return the snapshot `restore postgres` would use for `point`; raise NotFoundError if none."""
        snaps = [s for s in repo.find_snapshots(kind=KIND, source=self.name) if s.metadata.get("stop_lsn")]
        if not snaps:
            raise NotFoundError(
                f"no physical backups of source '{self.name}' in '{repo.url}'",
                hint=f"run 'recoverctl backup postgres --source {self.name}' first",
            )
        target_time: float | None = None
        if point.kind == "random":
            oldest = min(float(s.metadata["stop_time"]) for s in snaps)
            target_time = random_time(point.window, drill_start, oldest)
            target = RecoveryTarget("time", _iso(target_time))
        elif point.kind == "time":
            assert point.time is not None
            target_time = point.time.timestamp()
            target = RecoveryTarget("time", point.time.isoformat())
        else:
            target = RecoveryTarget(point.kind)
        from recoverctl.sources.postgres.restore import choose_snapshot

        snap, self.target = choose_snapshot(repo, self.catalog, self.name, target, None)
        md: dict[str, Any] = snap.metadata
        return Selection(
            snapshot_id=snap.id,
            snapshot_time=float(md.get("stop_time") or snap.time),
            target_kind="time" if target_time is not None else point.kind,
            target_time=target_time,
            size=snap.summary.get("bytes_total"),
            metadata={
                "row_counts": md.get("row_counts") or {},
                "reltuples": md.get("reltuples") or {},
                "tablespace_oids": [str(t["oid"]) for t in tablespace_plan(snap, None)],
            },
        )

    def drill_restore(
        self, repo: Repository, selection: Selection, data_dir: Path, os_user: str | None, progress: Progress
    ) -> Fetched:
        """Restore the selected snapshot into `data_dir` with recovery to the selected target (the
        server is not started); tablespaces go into the drill's workspace, never production's."""
        out = self.restore(
            repo, selection.snapshot_id, data_dir, progress,
            target=self.target, target_action="promote", os_user=os_user,
            fetch_ahead=True,  # the scratch cluster starts right after
            tablespace_map={
                oid: str(data_dir.parent / "tablespaces" / oid)
                for oid in selection.metadata.get("tablespace_oids", [])
            },
        )  # fmt: skip
        return Fetched(
            bytes=out.bytes_restored,
            details={
                "files_restored": out.files_restored,
                "backup_stop_lsn": out.backup_stop_lsn,
                "restore_fetch_s": out.phases.get("fetch"),
            },
            run=RestoreRun(
                status="succeeded",
                bytes_read=out.bytes_restored,
                details=out.to_json(),
                audit=("restore.postgres", out.audit_details()),
            ),
        )
