"""One file or volume snapshot drill: select → fetch → checks, then score and record.

The same guarantees as a PostgreSQL drill (engine.py): phases timed on the monotonic clock, the
snapshot pinned while it runs, the temp dir removed on success, failure, SIGINT and SIGTERM
(unless keep), the same catalog row, event and result shape. There is no server: the restore is
the recovery, and the check is a re-hash of every restored file against the snapshot.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from recoverctl.catalog import Catalog
from recoverctl.catalog.recovery import exposure_at
from recoverctl.config import Config
from recoverctl.drill import engine
from recoverctl.drill.playbook import Playbook, RecoveryPoint
from recoverctl.drill.restorer import Fetched, Selection
from recoverctl.drill.scratch import DrillError, create_workspace, is_within
from recoverctl.errors import RecoverctlError
from recoverctl.interrupts import uninterruptible


class SnapshotRestorer(Protocol):
    def select(self, point: RecoveryPoint, drill_start: float) -> Selection: ...

    def fetch(self, selection: Selection, data_dir: Path, os_user: str | None) -> Fetched: ...

    def rehash(self, selection: Selection, data_dir: Path) -> dict[str, Any]: ...


def make_workspace(parent: str | None, protected: list[str]) -> Path:
    """Return a fresh private temp dir under `parent` (default $TMPDIR).

    Raise DrillError when `parent` lies inside one of the `protected` (backed-up) paths: a restore
    there would be picked up by the next backup of the source.
    """
    parent_dir = Path(parent or tempfile.gettempdir())
    for p in protected:
        if is_within(parent_dir, Path(p)):
            raise DrillError(
                f"drill temp dir '{parent_dir}' is inside '{p}', a path the source backs up",
                hint="set where.temp_dir in the playbook to a directory outside the source's paths",
            )
    return create_workspace(parent_dir)


def _no_space(e: RecoverctlError) -> bool:
    errors = e.details.get("errors")
    listed = errors if isinstance(errors, list) else []
    texts = [e.message] + [str(x.get("error", "")) for x in listed if isinstance(x, dict)]
    return any(os.strerror(errno.ENOSPC) in x or os.strerror(errno.EDQUOT) in x for x in texts)


def measured_rpo(selection: Selection, drill_start: float) -> tuple[float, str]:
    """Return (rpo_s, basis): drill start - the restored snapshot's time for `latest`, else the
    exposure now (drill start - the newest snapshot of the set), as for PostgreSQL targeted drills;
    both the one exposure `catalog.recovery.exposure_at` defines."""
    if selection.target_kind == "latest":
        point, basis = selection.snapshot_time, "snapshot time"
    else:
        point = selection.metadata.get("newest_snapshot_time") or selection.snapshot_time
        basis = "newest snapshot"
    # A snapshot always has a time; 0.0 only keeps the type total.
    _, exposure = exposure_at(drill_start, float(point or 0.0))
    assert exposure is not None
    return exposure, basis


def _fetch(restorer: SnapshotRestorer, run: engine.DrillRun, workspace: Path, min_free: int) -> None:
    """Restore the selected snapshot into `workspace`/restore; raise DrillError when the space runs out."""
    assert run.selection is not None
    run.details["space"] = engine.check_space(workspace, run.selection, min_free)
    try:
        fetched = restorer.fetch(run.selection, workspace / "restore", None)
    except RecoverctlError as e:
        if not _no_space(e):
            raise
        raise DrillError(
            f"no space left in '{workspace.parent}' while restoring snapshot {run.selection.snapshot_id[:8]}",
            hint="free space there or set where.temp_dir to a larger filesystem",
        ) from None
    run.bytes = fetched.bytes
    run.details.update(fetched.details)


def _rehash(restorer: SnapshotRestorer, run: engine.DrillRun, workspace: Path) -> None:
    """Re-hash the restore against the snapshot: the drill's one check."""
    assert run.selection is not None
    check = restorer.rehash(run.selection, workspace / "restore")
    run.checks.append(check)
    run.details.update({k: check["details"][k] for k in ("files_checked", "bytes_checked", "mismatch_count")})
    run.checks_done = time.monotonic()


def _leave_workspace(run: engine.DrillRun, workspace: Path, keep: bool) -> None:
    """Remove the workspace (or, with `keep`, say where the restore is kept)."""
    run.details["workspace"] = str(workspace)
    if keep:
        run.details["workspace_removed"] = False
        run.details["kept"] = {"restore_dir": str(workspace / "restore")}
    else:
        shutil.rmtree(workspace, ignore_errors=True)
        run.details["workspace_removed"] = not workspace.exists()


def execute(
    cfg: Config,
    catalog: Catalog,
    pb: Playbook,
    restorer: SnapshotRestorer,
    *,
    keep: bool = False,
    cold: bool = False,
    on_phase: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run one file/volume drill and return its result (verdict pass or fail); record it.

    Raise DrillInterrupted (exit 130) after cleanup when SIGINT/SIGTERM arrives.
    """
    d = pb.drill
    _, source = cfg.source(d.source)
    rto_target, rpo_target = engine.targets_for(pb, cfg, source)
    run = engine.DrillRun(pb, source, rto_target, rpo_target, keep=keep, cold=cold)
    timeout = d.where.timeout or max(2 * rto_target, 600.0)
    engine.record_start(catalog, run)
    protected = list(getattr(source, "paths", []))
    workspace: Path | None = None
    pin_id: int | None = None
    interrupted: BaseException | None = None

    def announce(name: str) -> None:
        if on_phase is not None:
            on_phase(name)

    try:
        with engine.signals_raise() as guard:
            try:
                announce("select")
                with run.phase("select"):
                    run.selection = restorer.select(d.recovery_point, run.started_at)
                    with uninterruptible():  # a committed pin always has its id here, to unpin
                        pin_id = engine.pin(
                            catalog, run, run.selection.snapshot_id, time.time() + timeout + 3600
                        )
                announce("fetch")
                with run.phase("fetch"):
                    workspace = make_workspace(d.where.temp_dir, protected)
                    _fetch(restorer, run, workspace, d.where.min_free)
                announce("checks")
                with run.phase("checks"):
                    _rehash(restorer, run, workspace)
                run.rpo_measured = measured_rpo(run.selection, run.started_at)
            except RecoverctlError as e:
                run.failure = f"failed at {run.failed_phase or 'setup'}: {e.message}"
                run.failure_hint = e.hint
                if run.selection is not None:
                    run.rpo_measured = measured_rpo(run.selection, run.started_at)
            finally:
                with guard.shield():
                    try:
                        if workspace is not None:
                            _leave_workspace(run, workspace, keep)
                    finally:
                        if pin_id is not None:
                            engine.unpin(catalog, pin_id)
            guard.raise_pending(run)
    except (engine.SignalReceived, engine.DrillInterrupted, KeyboardInterrupt) as e:
        interrupted = e
    result = engine.finish(cfg, catalog, run, interrupted)
    if interrupted is not None:
        raise engine.cancelled(interrupted, hint="the temp dir was removed; run the drill again")
    return result
