"""The drill engine's Restorer for any source: the Source protocol chooses and restores, this use
case opens the repository and records the restore as a run exactly as the operator's restore of
that source is recorded.

The drill engine (drill/) sees it only through the `Restorer` protocol, built by `actions.drill`.
Fetch of a files or volume snapshot is `recoverctl restore` into the drill's temp dir (every blob
is authenticated on the way, so a damaged pack fails the fetch and is named); its check then
re-hashes the files on disk against the snapshot. Fetch of a PostgreSQL backup restores its files
and writes the recovery configuration without starting the server.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from recoverctl.actions.operation import operation
from recoverctl.catalog import Catalog
from recoverctl.config import Config
from recoverctl.drill.rehash import rehash_check
from recoverctl.progress import Progress
from recoverctl.repo.configured import open_repository
from recoverctl.sources.base import Fetched, PointInTime, Selection, Source, WarningLog


class SourceRestorer:
    """Select, fetch (and for snapshot trees re-hash) backups of one source for a drill."""

    def __init__(
        self,
        cfg: Config,
        catalog: Catalog,
        password: str,
        source: Source,
        progress: Callable[[str], Progress] | None = None,
    ):
        self.cfg = cfg
        self.catalog = catalog
        self.password = password
        self.source = source
        self.progress = progress  # given a label, the display of the fetch (the CLI's choice)

    def select(self, point: PointInTime, drill_start: float) -> Selection:
        """Return the snapshot for `point`; raise NotFoundError when none qualifies."""
        with open_repository(self.cfg, self.password) as repo:
            return self.source.select_recovery_point(repo, point, drill_start)

    def fetch(self, selection: Selection, data_dir: Path, os_user: str | None) -> Fetched:
        """Restore the selected snapshot into `data_dir`, recorded as a restore run.

        Raise VerificationError naming the damaged pack(s) when blobs fail authentication.
        """
        src = self.source
        display = self.progress(f"fetch {src.name}") if self.progress is not None else Progress()
        log = WarningLog(display)
        with (
            contextlib.closing(display),
            log.naming_damage(selection.snapshot_id, src.name),
            operation(
                self.cfg, self.password, src.restore_run_kind, recorder=self.catalog, source=src.run_source
            ) as op,
        ):
            fetched = src.drill_restore(op.repo, selection, data_dir, os_user, log)
            run = fetched.run
            if run is not None:
                op.finish(
                    run.status,
                    bytes_read=run.bytes_read,
                    snapshot_id=selection.snapshot_id,
                    details=run.details,
                )
                if run.error is not None:
                    raise run.error  # after recording, as the operator's restore does
        if run is not None and run.audit is not None:
            self.catalog.audit(run.audit[0], src.name, "succeeded", run.audit[1])
        return fetched

    def rehash(self, selection: Selection, data_dir: Path) -> dict[str, Any]:
        """Re-hash the restore in `data_dir` against the snapshot; return a check result dict."""
        with open_repository(self.cfg, self.password) as repo:
            return rehash_check(repo, repo.load_snapshot(selection.snapshot_id), data_dir)
