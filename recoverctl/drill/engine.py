"""One drill, phase by phase: select → fetch → recovery → startup → checks, then score and record.

Every phase is timed on the monotonic clock. Whatever happens (a failed phase, SIGINT, SIGTERM),
the snapshot pin is released and the scratch cluster is stopped and removed (unless keep).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import psycopg

from recoverctl.catalog import Catalog, drills
from recoverctl.catalog.recovery import recovery_point
from recoverctl.config import Config, PostgresSource, Source
from recoverctl.drill.checks import CheckContext, run_check
from recoverctl.drill.playbook import Playbook
from recoverctl.drill.restorer import Restorer, Selection
from recoverctl.drill.scoring import measured_rpo, score
from recoverctl.drill.scratch import DrillError, ScratchCluster
from recoverctl.errors import CancelledError, RecoverctlError
from recoverctl.interrupts import interrupt, stop_requested, uninterruptible
from recoverctl.sources.postgres.server import postmaster_status, remove_secrets
from recoverctl.units import human_duration, human_size

log = logging.getLogger(__name__)

PHASES = ("select", "fetch", "recovery", "startup", "checks")


class DrillInterrupted(CancelledError):
    """SIGINT or SIGTERM arrived during a drill; cleanup ran before this propagates."""


class SignalReceived(BaseException):
    """SIGINT/SIGTERM in the middle of a drill, raised by the SignalGuard.

    A BaseException, like KeyboardInterrupt: no `except Exception` in the code it lands in
    (SQLAlchemy, botocore, the restore's per-file error handling) can turn the cancel into an
    ordinary failure. The flow turns it into DrillInterrupted once cleanup has run.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def cancelled(exc: BaseException, hint: str) -> DrillInterrupted:
    """Given what stopped a drill (SignalReceived, KeyboardInterrupt or DrillInterrupted), return
    the DrillInterrupted to raise, with `hint` unless it already has one."""
    if isinstance(exc, DrillInterrupted):
        return exc
    name = signal.Signals(exc.signum).name if isinstance(exc, SignalReceived) else "SIGINT"
    return DrillInterrupted(f"drill cancelled by {name}", hint=hint)


class SignalGuard:
    """Turns the first SIGINT/SIGTERM into SignalReceived, except while shielded (cleanup): then
    the signal is remembered and `raise_pending()` acts on it once cleanup is done. Inside an
    `uninterruptible()` block (a catalog transaction) the exception waits for the block's end."""

    def __init__(self) -> None:
        self.fired: list[int] = []
        self.shielded = False

    def handler(self, signum: int, _frame: FrameType | None) -> None:
        if self.fired or self.shielded:
            if not self.fired:
                self.fired.append(signum)
            log.warning("drill: %s received, finishing cleanup first", signal.Signals(signum).name)
            return
        self.fired.append(signum)
        stop_requested.set()
        interrupt(SignalReceived(signum))

    @contextlib.contextmanager
    def shield(self) -> Iterator[None]:
        self.shielded = True
        try:
            yield
        finally:
            self.shielded = False

    def raise_pending(self, run: DrillRun) -> None:
        """After cleanup: raise DrillInterrupted for a signal that came while shielded, unless the
        drill already failed (the failure is what it is recorded as)."""
        if not self.fired or run.failure is not None:
            return
        run.failed_phase = run.failed_phase or "cleanup"
        raise DrillInterrupted(
            f"drill cancelled by {signal.Signals(self.fired[0]).name}",
            hint="the scratch cluster and temp files were removed; run the drill again",
        )


@contextlib.contextmanager
def signals_raise() -> Iterator[SignalGuard]:
    """Install a SignalGuard for SIGINT/SIGTERM (main thread only) and restore the old handlers."""
    guard = SignalGuard()
    if threading.current_thread() is not threading.main_thread():
        yield guard
        return
    previous = {s: signal.signal(s, guard.handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield guard
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@dataclass
class DrillRun:
    """The mutable record of one drill while it runs."""

    playbook: Playbook
    source: Source
    rto_target_s: float
    rpo_target_s: float
    keep: bool = False
    cold: bool = False
    id: int | None = None
    started_at: float = field(default_factory=time.time)
    t0: float = field(default_factory=time.monotonic)
    phases: dict[str, float] = field(default_factory=dict)
    checks: list[dict[str, Any]] = field(default_factory=list)
    selection: Selection | None = None
    bytes: int | None = None
    failed_phase: str | None = None
    failure: str | None = None
    failure_hint: str | None = None
    recovered_commit_ts: float | None = None
    recovered_lsn: str | None = None
    cluster: ScratchCluster | None = None
    checks_done: float | None = None
    details: dict[str, Any] = field(default_factory=dict)
    # (rpo_s, basis) measured by a flow that knows better than the PostgreSQL rules (file drills).
    rpo_measured: tuple[float, str] | None = None
    pin_id: int | None = None

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.monotonic()
        try:
            yield
        except BaseException:
            self.failed_phase = self.failed_phase or name
            raise
        finally:
            self.phases[name] = round(time.monotonic() - start, 3)


def targets_for(pb: Playbook, cfg: Config, source: Source) -> tuple[float, float]:
    """Return (rto_target_s, rpo_target_s): the playbook's, else the source tier's defaults."""
    tier = cfg.targets.for_tier(source.tier)
    rto = pb.drill.targets.rto if pb.drill.targets.rto is not None else tier.rto
    rpo = pb.drill.targets.rpo if pb.drill.targets.rpo is not None else tier.rpo
    return float(rto), float(rpo)


def record_start(catalog: Catalog, run: DrillRun) -> None:
    """Insert the drill's catalog row (verdict 'running') and set `run.id`."""
    pb, d = run.playbook, run.playbook.drill
    run.id = drills.start_drill(
        catalog,
        name=d.name,
        source=d.source,
        started_at=run.started_at,
        rto_target_s=run.rto_target_s,
        rpo_target_s=run.rpo_target_s,
        recovery_point=d.recovery_point.describe(),
        details={"playbook": str(pb.path) if pb.path else None, "cold": run.cold, "keep": run.keep},
    )


def _host_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def pin(catalog: Catalog, run: DrillRun, snapshot_id: str, expires_at: float) -> int:
    """Pin the drill's snapshot against pruning until `expires_at`; return the pin's id."""
    return drills.pin_snapshot(
        catalog,
        snapshot_id,
        reason=f"drill {run.playbook.drill.name} #{run.id}",
        owner=f"drill:{run.id}@{_host_owner()}",
        expires_at=expires_at,
    )


def unpin(catalog: Catalog, pin_id: int) -> None:
    drills.unpin_snapshot(catalog, pin_id)


def check_space(workspace: Path, selection: Selection, min_free: int) -> dict[str, int]:
    """Return free and needed bytes; raise DrillError when the snapshot + min_free do not fit."""
    free = shutil.disk_usage(workspace).free
    need = (selection.size or 0) + min_free
    if need and free < need:
        raise DrillError(
            f"not enough free space for the scratch restore in '{workspace.parent}': "
            f"need {human_size(need)} (snapshot {human_size(selection.size or 0)} + min_free "
            f"{human_size(min_free)}), {human_size(free)} free",
            hint="free space there or set where.temp_dir in the playbook to a larger filesystem",
        )
    return {"free_bytes": free, "needed_bytes": need}


def _connect(cluster: ScratchCluster, user: str, dbname: str) -> psycopg.Connection[Any]:
    return psycopg.connect(**cluster.connect_kwargs(dbname, user), autocommit=True)  # type: ignore[arg-type]


def _probe(cluster: ScratchCluster, user: str, dbname: str, sql: str) -> Any:
    """Return the first column of `sql`, or None while the server refuses connections."""
    try:
        with _connect(cluster, user, dbname) as conn:
            row = conn.execute(sql.encode()).fetchone()
            return row[0] if row else None
    except psycopg.OperationalError:
        return None


def _bring_up(run: DrillRun, cluster: ScratchCluster, user: str, dbname: str, deadline: float) -> None:
    """Start the server and time WAL replay (recovery) and end-of-recovery until writable (startup)."""

    def recovered() -> bool:
        # postmaster.pid says 'ready' once recovery has ended; reading it costs nothing, while
        # each refused connection costs the server a fork, so connect only to confirm.
        status = postmaster_status(cluster.data_dir)
        if status is not None and status != "ready":
            return False
        return _probe(cluster, user, dbname, "select not pg_is_in_recovery()") is True

    with run.phase("recovery"):
        cluster.start()
        cluster.wait(recovered, deadline=deadline, what="recovery (WAL replay) to finish", interval=0.02)
    # restore_command is done: the passphrase it read must be gone before any check runs SQL.
    remove_secrets(cluster.data_dir)
    with run.phase("startup"):

        def writable() -> bool:
            try:
                with _connect(cluster, user, dbname) as conn:
                    conn.execute("create temporary table recoverctl_drill_probe (x int)")
                return True
            except psycopg.OperationalError:
                return False
            except psycopg.errors.ReadOnlySqlTransaction:
                return False

        cluster.wait(writable, deadline=deadline, what="the server to accept writes")
        # First thing on the writable copy, before any check: no apply worker could start (the
        # command line allows none), and now none ever will, even on a kept copy started by hand.
        run.details["detached_subscriptions"] = cluster.detach_subscriptions(user, dbname)
        with _connect(cluster, user, dbname) as conn:
            row = conn.execute(
                "select extract(epoch from pg_last_xact_replay_timestamp())::float8, "
                "pg_last_wal_replay_lsn()::text"
            ).fetchone()
        if row is not None:
            run.recovered_commit_ts = float(row[0]) if row[0] is not None else None
            run.recovered_lsn = row[1]


def _recorded_counts(selection: Selection) -> tuple[dict[str, int], str]:
    meta = selection.metadata
    if meta.get("row_counts"):
        return {k: int(v) for k, v in meta["row_counts"].items()}, "exact counts at backup"
    if meta.get("reltuples"):
        return {k: int(v) for k, v in meta["reltuples"].items()}, "pg_class.reltuples at backup"
    return {}, "none recorded"


def _select_and_fetch(
    catalog: Catalog,
    run: DrillRun,
    source: PostgresSource,
    restorer: Restorer,
    timeout: float,
    announce: Callable[[str], None],
) -> ScratchCluster:
    """Select the snapshot (and pin it), create the scratch cluster and restore into it; return
    the cluster. Raise DrillError when it does not fit."""
    d = run.playbook.drill
    announce("select")
    with run.phase("select"):
        run.selection = restorer.select(d.recovery_point, run.started_at)
        with uninterruptible():  # a committed pin always has its id here, to unpin
            run.pin_id = pin(catalog, run, run.selection.snapshot_id, time.time() + timeout + 3600)
    announce("fetch")
    with run.phase("fetch"):
        run.cluster = cluster = ScratchCluster.create(
            Path(source.bin_dir or "/usr/lib/postgresql/15/bin"),
            os_user=d.where.os_user or source.os_user,
            parent=d.where.temp_dir,
            port=d.where.port,
            production_port=source.port,
            production_data_dir=source.data_dir,
            keep=run.keep,
        )
        run.details["space"] = check_space(cluster.workspace, run.selection, d.where.min_free)
        try:
            fetched = restorer.fetch(run.selection, cluster.data_dir, d.where.os_user or source.os_user)
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DrillError(
                    f"no space left in '{cluster.workspace.parent}' while restoring "
                    f"snapshot {run.selection.snapshot_id}: {e.strerror}",
                    hint="free space there or set where.temp_dir to a larger filesystem",
                ) from None
            raise
        run.bytes = fetched.bytes
        run.details.update(fetched.details)
    return cluster


def _run_checks(run: DrillRun, cluster: ScratchCluster, user: str, dbname: str) -> None:
    """Run the playbook's checks against the recovered cluster, against the recovered point."""
    selection = run.selection
    assert selection is not None  # checks run only after a snapshot was selected
    counts, basis = _recorded_counts(selection)
    if selection.target_kind == "latest":
        point_ts = run.recovered_commit_ts or selection.snapshot_time
    else:
        point_ts = selection.target_time or selection.snapshot_time
    ctx = CheckContext(cluster, user, dbname, point_ts, counts, basis)
    for check in run.playbook.drill.effective_checks():
        run.checks.append(run_check(check, ctx).to_dict())
    run.checks_done = time.monotonic()


def execute(
    cfg: Config,
    catalog: Catalog,
    pb: Playbook,
    restorer: Restorer,
    *,
    keep: bool = False,
    cold: bool = False,
    on_phase: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run one drill and return its result (verdict pass or fail); record it in the catalog.

    Raise DrillInterrupted (exit 130) after cleanup when SIGINT/SIGTERM arrives. A failed drill is a
    result, not an exception: the caller decides the exit code from the verdict.
    """
    d = pb.drill
    _, source = cfg.source(d.source, "postgres")
    rto_target, rpo_target = targets_for(pb, cfg, source)
    run = DrillRun(pb, source, rto_target, rpo_target, keep=keep, cold=cold)
    timeout = d.where.timeout or max(2 * rto_target, 600.0)
    record_start(catalog, run)
    user = source.user
    dbname = source.dbname
    interrupted: BaseException | None = None
    deadline = time.monotonic() + timeout

    def announce(name: str) -> None:
        if on_phase is not None:
            on_phase(name)

    try:
        with signals_raise() as guard:
            try:
                cluster = _select_and_fetch(catalog, run, source, restorer, timeout, announce)
                announce("recovery")
                _bring_up(run, cluster, user, dbname, deadline)
                announce("checks")
                with run.phase("checks"):
                    _run_checks(run, cluster, user, dbname)
            except RecoverctlError as e:
                run.failure = f"failed at {run.failed_phase or 'setup'}: {e.message}"
                run.failure_hint = e.hint
                run.details.update({k: v for k, v in e.details.items() if k == "log_tail"})
            finally:
                with guard.shield():
                    _teardown(catalog, run, run.pin_id)
            guard.raise_pending(run)
    except (SignalReceived, DrillInterrupted, KeyboardInterrupt) as e:
        interrupted = e
    result = finish(cfg, catalog, run, interrupted)
    if interrupted is not None:
        raise cancelled(interrupted, hint="the scratch cluster was removed; run the drill again")
    return result


def _teardown(catalog: Catalog, run: DrillRun, pin_id: int | None) -> None:
    # Runs shielded: a signal arriving now is acted on only after cleanup has finished.
    try:
        if run.cluster is not None:
            removed = run.cluster.cleanup()
            run.details["workspace"] = str(run.cluster.workspace)
            run.details["workspace_removed"] = removed
            run.details["port"] = run.cluster.port
            if not removed:
                run.details["kept"] = {
                    "data_dir": str(run.cluster.data_dir),
                    "start": f"pg_ctl -D {run.cluster.data_dir} "
                    f'-o "{" ".join(run.cluster.server_options())}" start',
                }
    finally:
        if pin_id is not None:
            unpin(catalog, pin_id)


def _rpo(catalog: Catalog, run: DrillRun) -> tuple[float | None, str]:
    """Return the drill's measured RPO (rounded to the millisecond) and what it was measured from."""
    if run.rpo_measured is not None:
        return round(run.rpo_measured[0], 3), run.rpo_measured[1]
    sel = run.selection
    if sel is None:
        return None, "unknown"
    rpo_s, basis = measured_rpo(
        recovery_kind=sel.target_kind,
        drill_start=run.started_at,
        recovered_commit_ts=run.recovered_commit_ts,
        snapshot_time=sel.snapshot_time,
        last_archived_at=recovery_point(catalog, run.playbook.drill.source).last_archived_at,
    )
    return (round(rpo_s, 3) if rpo_s is not None else None), basis


def _verdict(
    run: DrillRun, rto_s: float | None, rpo_s: float | None, interrupted: BaseException | None
) -> tuple[str, str | None]:
    """Return (verdict, reason): cancelled when interrupted, else the score."""
    if interrupted is not None:
        return "cancelled", f"cancelled during {run.failed_phase or 'setup'}"
    s = score(
        checks=run.checks,
        rto_s=rto_s,
        rpo_s=rpo_s,
        rto_target_s=run.rto_target_s,
        rpo_target_s=run.rpo_target_s,
        failure=run.failure,
    )
    return s.verdict, s.reason


def finish(
    cfg: Config,
    catalog: Catalog,
    run: DrillRun,
    interrupted: BaseException | None,
) -> dict[str, Any]:
    """Given a drill that ended (`interrupted` by what cancelled it, if it was), score it, record
    it in the catalog and return its result."""
    d = run.playbook.drill
    sel = run.selection
    finished = time.time()
    all_ok = bool(run.checks) and all(c["ok"] for c in run.checks)
    # RTO only exists when recovery reached the point where every check passed.
    rto_s = round(run.checks_done - run.t0, 3) if all_ok and run.checks_done is not None else None
    rpo_s, rpo_basis = _rpo(catalog, run)
    verdict, reason = _verdict(run, rto_s, rpo_s, interrupted)
    result: dict[str, Any] = {
        "id": run.id,
        "name": d.name,
        "source": d.source,
        "verdict": verdict,
        "rto_s": rto_s,
        "rpo_s": rpo_s,
        "rto_target_s": run.rto_target_s,
        "rpo_target_s": run.rpo_target_s,
        "rpo_basis": rpo_basis,
        "phases": {p: run.phases[p] for p in PHASES if p in run.phases},
        "checks": run.checks,
        "reason": reason,
        "failed_phase": run.failed_phase if verdict != "pass" else None,
        "hint": run.failure_hint,
        "snapshot_id": sel.snapshot_id if sel else None,
        "snapshot_time": sel.snapshot_time if sel else None,
        "recovery_point": d.recovery_point.describe(),
        "recovery_target": {"kind": sel.target_kind, "time": sel.target_time} if sel else None,
        "recovered_commit_ts": run.recovered_commit_ts,
        "recovered_lsn": run.recovered_lsn,
        "bytes": run.bytes,
        "cold": run.cold,
        "started_at": run.started_at,
        "finished_at": finished,
        "details": run.details,
    }
    _record_finish(catalog, run, result)
    return result


def _record_finish(catalog: Catalog, run: DrillRun, result: dict[str, Any]) -> None:
    """Record the drill's `result`, audit it, and raise the `drill.failed` event when it failed."""
    d = run.playbook.drill
    verdict, reason, rto_s, rpo_s = result["verdict"], result["reason"], result["rto_s"], result["rpo_s"]
    drills.finish_drill(
        catalog,
        run.id,
        snapshot_id=result["snapshot_id"],
        finished_at=result["finished_at"],
        verdict=verdict,
        rto_s=rto_s,
        rpo_s=rpo_s,
        phases=result["phases"],
        checks=run.checks,
        bytes=run.bytes,
        reason=reason,
        details={k: result[k] for k in (*drills.DETAIL_KEYS, "details")}
        | {"playbook": str(run.playbook.path) if run.playbook.path else None, "keep": run.keep},
    )
    catalog.audit("drill.run", f"{d.source}:{d.name}", verdict, {"drill_id": run.id, "reason": reason})
    if verdict == "fail":
        summary = f"restore drill '{d.name}' of '{d.source}' failed: {reason}"
        log.error(summary)
        catalog.emit_event(
            "drill.failed",
            "critical",
            d.source,
            summary,
            {
                "drill_id": run.id,
                "name": d.name,
                "reason": reason,
                "rto_s": rto_s,
                "rpo_s": rpo_s,
                "rto_target_s": run.rto_target_s,
                "rpo_target_s": run.rpo_target_s,
                "failed_phase": run.failed_phase,
            },
            dedup_key=f"drill.failed:{d.source}:{d.name}:{run.id}",
        )
    else:
        log.info(
            "drill %s %s: RTO %s (target %s), RPO %s (target %s)",
            d.name,
            verdict,
            human_duration(rto_s),
            human_duration(run.rto_target_s),
            human_duration(rpo_s),
            human_duration(run.rpo_target_s),
        )
