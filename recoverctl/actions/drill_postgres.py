"""The drill Restorer for physical PostgreSQL backups: wraps `actions.restore_postgres`.

It lives with the use cases because it runs one: the drill engine (drill/) sees it only through
the `Restorer` protocol, built by `actions.drill`.

Selection picks the snapshot exactly as `restore postgres` would for the recovery target (so the
drill proves what an operator's restore would do); fetch restores its files and writes the
recovery configuration (`restore_command` fetching WAL from the repository) without starting
the server — the drill's scratch cluster starts it so recovery and startup are timed separately.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from recoverctl.actions.restore_postgres import restore_postgres
from recoverctl.catalog import Catalog
from recoverctl.config import Config
from recoverctl.drill.playbook import RecoveryPoint
from recoverctl.drill.restorer import Fetched, Selection, WarningLog, random_time
from recoverctl.errors import NotFoundError
from recoverctl.repo.configured import open_repository
from recoverctl.sources.postgres.backup import KIND
from recoverctl.sources.postgres.layout import tablespace_plan
from recoverctl.sources.postgres.recovery import RecoveryTarget
from recoverctl.sources.postgres.restore import choose_snapshot


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


class PostgresRestorer:
    def __init__(self, cfg: Config, catalog: Catalog, password: str, source: str):
        self.cfg = cfg
        self.catalog = catalog
        self.password = password
        self.source = source
        self.target: RecoveryTarget | None = None

    def select(self, point: RecoveryPoint, drill_start: float) -> Selection:
        """Return the snapshot `restore postgres` would use for `point`; raise NotFoundError if none."""
        repo = open_repository(self.cfg, self.password)
        try:
            snaps = [
                s for s in repo.find_snapshots(kind=KIND, source=self.source) if s.metadata.get("stop_lsn")
            ]
            if not snaps:
                raise NotFoundError(
                    f"no physical backups of source '{self.source}' in '{repo.url}'",
                    hint=f"run 'recoverctl backup postgres --source {self.source}' first",
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
            snap, self.target = choose_snapshot(repo, self.catalog, self.source, target, None)
        finally:
            repo.close()
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

    def fetch(self, selection: Selection, data_dir: Path, os_user: str | None) -> Fetched:
        """Restore the selected snapshot into `data_dir` with recovery to the selected target.

        Raise VerificationError naming the damaged pack(s) when blobs fail authentication.
        """
        log = WarningLog()
        with log.naming_damage(selection.snapshot_id, self.source):
            out = restore_postgres(
                self.cfg,
                self.catalog,
                self.password,
                source=self.source,
                target_dir=data_dir,
                snapshot=selection.snapshot_id,
                target=self.target,
                target_action="promote",
                os_user=os_user,
                progress=log,
                fetch_ahead=True,  # the scratch cluster starts right after
                # Never the production tablespace dirs: each goes into the drill's workspace.
                tablespace_map={
                    oid: str(data_dir.parent / "tablespaces" / oid)
                    for oid in selection.metadata.get("tablespace_oids", [])
                },
            )
        return Fetched(
            bytes=out.bytes_restored,
            details={
                "files_restored": out.files_restored,
                "backup_stop_lsn": out.backup_stop_lsn,
                "restore_fetch_s": out.phases.get("fetch"),
            },
        )


def restorer_factory(cfg: Config, catalog: Catalog, password: str) -> Any:
    """Return a function giving each playbook its PostgresRestorer."""

    def make(pb: Any) -> PostgresRestorer:
        return PostgresRestorer(cfg, catalog, password, pb.drill.source)

    return make
