"""The drill Restorer for file and volume snapshots: wraps the restore use case, then re-hashes.

It lives with the use cases because it runs one: the drill engine (drill/) sees it only through
the `Restorer` protocol, built by `actions.drill`.

Fetch is the operator's `recoverctl restore` of the chosen snapshot into the drill's temp dir
(every blob is authenticated on the way, so a damaged pack fails the fetch and is named). The
check then reads every restored file back from disk and compares each chunk's keyed hash with
the blob id the snapshot lists: it proves the bytes on disk, not only the bytes in flight.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from recoverctl.actions.restore import restore
from recoverctl.catalog import Catalog
from recoverctl.config import Config
from recoverctl.drill.playbook import RecoveryPoint, SnapshotFilter
from recoverctl.drill.rehash import rehash_tree
from recoverctl.drill.restorer import Fetched, Selection, WarningLog, random_time
from recoverctl.errors import NotFoundError
from recoverctl.repo import Repository
from recoverctl.repo.configured import open_repository
from recoverctl.repo.snapshot import Snapshot


class FilesRestorer:
    """Select, fetch and re-hash file or volume snapshots of one source (kind 'files' or 'volume')."""

    def __init__(
        self,
        cfg: Config,
        catalog: Catalog,
        password: str,
        source: str,
        kind: str,
        filt: SnapshotFilter | None,
    ):
        self.cfg = cfg
        self.catalog = catalog
        self.password = password
        self.source = source
        self.kind = kind
        self.filter = filt or SnapshotFilter()

    def _candidates(self, repo: Repository) -> list[Snapshot]:
        # A volume's snapshots carry the volume name as source; a files source's carry its name.
        src = self.source
        if self.kind == "volume":
            _, cfg_src = self.cfg.source(self.source, "volume")
            src = cfg_src.volume
        snaps = repo.find_snapshots(
            kind=self.kind, source=src, tags=self.filter.tags, paths=self.filter.paths
        )
        if not snaps:
            wanted = [f"kind {self.kind}", f"source '{src}'"]
            if self.filter.tags:
                wanted.append(f"tags {self.filter.tags}")
            if self.filter.paths is not None:
                wanted.append(f"paths {self.filter.paths}")
            raise NotFoundError(
                f"no snapshots with {', '.join(wanted)} in '{repo.url}'",
                hint=f"back the source up first ('recoverctl backup {self.kind} ... --source {self.source}') "
                "or fix the playbook's snapshot filter",
            )
        return snaps

    def select(self, point: RecoveryPoint, drill_start: float) -> Selection:
        """Return the snapshot for `point` (or the filter's id); raise NotFoundError when none qualifies."""
        repo = open_repository(self.cfg, self.password)
        try:
            snaps = self._candidates(repo)
            newest = snaps[-1].time
            target_time: float | None = None
            kind = "latest"
            if self.filter.id:
                snap = repo.resolve_snapshot(self.filter.id)
                if snap.id not in {s.id for s in snaps}:
                    raise NotFoundError(
                        f"snapshot {snap.short_id} is not a {self.kind} snapshot of source '{self.source}' "
                        "matching the playbook's filter",
                        hint="check the id with 'recoverctl snapshots'",
                    )
                kind = "snapshot"
            elif point.kind in ("latest", "immediate"):
                snap = snaps[-1]
            else:
                if point.kind == "random":
                    target_time = random_time(point.window, drill_start, snaps[0].time)
                else:
                    assert point.time is not None
                    target_time = point.time.timestamp()
                at_or_before = [s for s in snaps if s.time <= target_time]
                if not at_or_before:
                    raise NotFoundError(
                        f"no {self.kind} snapshot of '{self.source}' at or before the recovery point "
                        f"{point.describe()}",
                        hint=f"pick a later recovery point; the oldest snapshot is {snaps[0].short_id} "
                        f"({time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(snaps[0].time))})",
                    )
                snap = at_or_before[-1]
                kind = "time"
        finally:
            repo.close()
        return Selection(
            snapshot_id=snap.id,
            snapshot_time=snap.time,
            target_kind=kind,
            target_time=target_time,
            size=snap.summary.get("bytes_total") or snap.summary.get("bytes_read"),
            metadata={"newest_snapshot_time": newest, "paths": snap.paths, "kind": snap.kind},
        )

    def fetch(self, selection: Selection, data_dir: Path, os_user: str | None) -> Fetched:
        """Restore the snapshot into `data_dir` through the restore action.

        Raise VerificationError naming the damaged pack(s) when blobs fail authentication.
        """
        log = WarningLog()
        with log.naming_damage(selection.snapshot_id, self.source):
            out = restore(
                self.cfg, self.catalog, self.password, selection.snapshot_id, str(data_dir), progress=log
            )
        return Fetched(
            bytes=int(out.get("bytes") or 0),
            details={"files_restored": out.get("files"), "dirs_restored": out.get("dirs")},
        )

    def rehash(self, selection: Selection, data_dir: Path) -> dict[str, Any]:
        """Re-hash the restore in `data_dir` against the snapshot; return a check result dict."""
        started = time.monotonic()
        repo = open_repository(self.cfg, self.password)
        try:
            snap = repo.load_snapshot(selection.snapshot_id)
            r = rehash_tree(repo, snap, data_dir)
        finally:
            repo.close()
        if r.mismatch_count:
            listed = "; ".join(f"{m['path']}: {m['why']}" for m in r.mismatches)
            more = (
                f" (and {r.mismatch_count - len(r.mismatches)} more)"
                if r.mismatch_count > len(r.mismatches)
                else ""
            )
            output = f"{r.mismatch_count} of {r.files} file(s) differ from the snapshot: {listed}{more}"
        else:
            output = f"{r.files} files, {r.bytes} bytes re-hashed: all match the snapshot"
        return {
            "name": "rehash",
            "kind": "rehash",
            "ok": r.mismatch_count == 0,
            "output": output,
            "expected": "every file matches the snapshot",
            "actual": f"{r.mismatch_count} mismatching",
            "duration_s": round(time.monotonic() - started, 3),
            "details": {
                "files_checked": r.files,
                "bytes_checked": r.bytes,
                "mismatch_count": r.mismatch_count,
                "mismatches": r.mismatches,
            },
        }
