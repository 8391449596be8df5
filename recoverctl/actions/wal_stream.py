"""`wal stream`: keep a postgres source's WAL streaming into the repository (streaming mode), and
read back how far behind it is for `status`, `postgres status` and `/metrics`.

The mechanics are in sources/postgres/stream.py; this use case records: a heartbeat per flush
interval (role `wal-stream`, the lag in its details), the WAL archive progress (wal_status, so
RPO exposure counts the partial segment too), and warning events when the slot's retained WAL
nears max_slot_wal_keep_size or the lag exceeds the tier's RPO target.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from recoverctl.catalog import Catalog
from recoverctl.catalog import wal as catalog_wal
from recoverctl.catalog.leases import heartbeat, heartbeats
from recoverctl.config import Config, PostgresSource
from recoverctl.errors import CatalogError, ConfigError, RecoverctlError
from recoverctl.repo.configured import open_repository
from recoverctl.sources.postgres.stream import StreamStatus, default_spool, stream
from recoverctl.units import human_duration, human_size

log = logging.getLogger(__name__)

ROLE = "wal-stream"
# A repeated warning (slot retention, lag over target) is raised again at most this often.
REWARN_S = 3600.0


def heartbeat_name(source: str) -> str:
    return f"{ROLE}:{source}"


@dataclass(frozen=True)
class ReceiverLag:
    """How far a source's WAL receiver (streaming mode) is behind, as it last reported."""

    source: str
    alive: bool  # it reported within three flush intervals
    reported_at: float
    lag_bytes: int | None
    lag_seconds: float | None
    primary_lsn: str | None
    uploaded_lsn: str | None
    receiver_pid: int | None
    restarts: int
    last_error: str | None
    slot: str | None
    slot_retained_bytes: int | None
    max_slot_wal_keep_bytes: int | None


class _Warnings:
    """Catalog events for conditions that persist: raised once, again after REWARN_S, and
    forgotten when the condition clears."""

    def __init__(self, catalog: Catalog, source: str):
        self.catalog, self.source = catalog, source
        self.raised: dict[str, float] = {}

    def check(self, kind: str, active: bool, summary: str, details: dict[str, Any]) -> None:
        if not active:
            self.raised.pop(kind, None)
            return
        now = time.time()
        if now - self.raised.get(kind, 0.0) < REWARN_S:
            return
        self.raised[kind] = now
        log.warning("%s: %s", self.source, summary)
        self.catalog.emit_event(kind, "warning", self.source, summary, details, f"{kind}:{self.source}")


def _record(
    cfg: Config, catalog: Catalog, src: PostgresSource, st: StreamStatus, warnings: _Warnings
) -> None:
    """Write one flush interval's status into the catalog; a catalog that does not answer only
    warns: the repository, not the catalog, must keep up."""
    details = {k: v for k, v in dataclasses.asdict(st).items() if k != "stored_now"}
    try:
        heartbeat(catalog, heartbeat_name(st.source), ROLE, details)
        segments = [s for s in st.stored_now if len(s) == 24]
        # Before its first whole segment a receiver has only the partial one in the repository:
        # that is progress too (and what ends a WAL outage of a quiet server).
        newest = st.last_stored or st.partial_segment
        if st.safe_until is not None and newest is not None:
            catalog_wal.record_archived(catalog, st.source, newest, st.safe_until, len(segments))
        keep, retained = st.max_slot_wal_keep_bytes, st.slot_retained_bytes
        warnings.check(
            "wal.slot_retention",
            bool(keep and retained is not None and retained >= src.wal.slot_warn_ratio * keep)
            or st.slot_wal_status in ("unreserved", "lost"),
            f"replication slot '{st.slot}' retains {human_size(retained or 0)} of WAL of "
            f"max_slot_wal_keep_size {human_size(keep)} (wal_status {st.slot_wal_status}): the server "
            "will drop WAL the receiver has not received; check 'recoverctl wal stream' is running and "
            "keeping up",
            {"slot": st.slot, "retained_bytes": retained, "max_slot_wal_keep_bytes": keep},
        )
        target = cfg.targets.for_tier(src.tier).rpo
        warnings.check(
            "wal.stream_lag",
            st.lag_seconds is not None and st.lag_seconds > target,
            f"WAL streaming is {human_duration(st.lag_seconds)} ({human_size(st.lag_bytes)}) behind "
            f"the primary, over the RPO target of {human_duration(target)}",
            {"lag_seconds": st.lag_seconds, "lag_bytes": st.lag_bytes, "rpo_target_s": target},
        )
    except (CatalogError, sa.exc.SQLAlchemyError) as e:
        log.warning("stream status of '%s' not recorded in the catalog: %s", st.source, e)


def wal_stream(
    cfg: Config,
    catalog: Catalog,
    password: str,
    *,
    source: str | None,
    stop: threading.Event | None = None,
    on_status: Any = None,
) -> StreamStatus:
    """Run the WAL receiver of a postgres source in streaming mode until SIGTERM/SIGINT (or
    `stop`); return its last status. Raise ConfigError when the source is not in streaming mode,
    LockedError when another receiver runs for it."""
    name, src = cfg.source(source, "postgres")
    assert isinstance(src, PostgresSource)
    if src.wal.mode != "stream":
        raise ConfigError(
            f"source '{name}' is not in streaming mode (wal.mode: {src.wal.mode})",
            hint=f"set sources.{name}.wal.mode: stream in the config",
        )
    stop = stop or threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGTERM, signal.SIGINT)}
    warnings = _Warnings(catalog, name)

    def status(st: StreamStatus) -> None:
        _record(cfg, catalog, src, st, warnings)
        if on_status is not None:
            on_status(st)

    def upload_failed(st: StreamStatus, error: RecoverctlError) -> None:
        # opens (or extends) the source's WAL outage: the timeline shows it as a WAL gap
        segment = st.partial_segment or st.last_stored or "unknown"
        try:
            catalog_wal.record_failed(catalog, name, segment, time.time(), str(error))
        except (CatalogError, sa.exc.SQLAlchemyError) as e:
            log.warning("upload failure of '%s' not recorded in the catalog: %s", name, e)

    try:
        catalog.audit("wal.stream", name, "started", {"spool": str(default_spool(name, src))})
        with open_repository(cfg, password) as repo:
            last = stream(
                repo,
                name,
                src,
                stop,
                status,
                lambda m: log.warning("%s: %s", name, m),
                on_upload_failed=upload_failed,
            )
        _record(cfg, catalog, src, last, warnings)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    catalog.audit("wal.stream", name, "stopped", {"stored_total": last.stored_total})
    return last


@dataclass(frozen=True)
class StreamUnits:
    """Service definitions that keep the WAL receivers running: file name -> text."""

    kind: str
    units: dict[str, str]


def stream_units(cfg: Config, kind: str, image: str = "recoverctl:latest") -> StreamUnits:
    """Return the systemd services (`kind` 'systemd') or Kubernetes manifests ('kubernetes') of
    every source in streaming mode; raise ConfigError when no source streams."""
    from recoverctl.scheduler.install import stream_manifests
    from recoverctl.scheduler.install import stream_units as systemd_stream_units

    units = systemd_stream_units(cfg) if kind == "systemd" else stream_manifests(cfg, image)
    if not units:
        raise ConfigError(
            "no postgres source has wal.mode: stream", hint="set sources.<name>.wal.mode: stream"
        )
    return StreamUnits(kind, {u.filename: u.text for u in units})


def receiver_lags(cfg: Config, catalog: Catalog, now: float | None = None) -> dict[str, ReceiverLag]:
    """Return, per source in streaming mode that ever reported, its receiver's last lag."""
    now = time.time() if now is None else now
    out: dict[str, ReceiverLag] = {}
    for hb in heartbeats(catalog, ROLE):
        d = hb.details
        src = cfg.sources.get(str(d.get("source")))
        if not isinstance(src, PostgresSource) or src.wal.mode != "stream":
            continue
        out[d["source"]] = ReceiverLag(
            source=d["source"],
            alive=now - hb.at <= 3 * src.wal.flush_interval + 5,
            reported_at=hb.at,
            lag_bytes=d.get("lag_bytes"),
            lag_seconds=d.get("lag_seconds"),
            primary_lsn=d.get("primary_lsn"),
            uploaded_lsn=d.get("uploaded_lsn"),
            receiver_pid=d.get("receiver_pid"),
            restarts=int(d.get("restarts") or 0),
            last_error=d.get("last_error"),
            slot=d.get("slot"),
            slot_retained_bytes=d.get("slot_retained_bytes"),
            max_slot_wal_keep_bytes=d.get("max_slot_wal_keep_bytes"),
        )
    return out


def receiver_verdict(
    cfg: Config, catalog: Catalog, source: str, now: float
) -> tuple[str, str, dict[str, Any]] | None:
    """Return (green/amber/red, reason, figures) for the WAL receiver of `source`, or None when
    the source is not in streaming mode. Red: not reporting, or behind more than the RPO target;
    amber: past 80 % of it, or the slot nearing max_slot_wal_keep_size."""
    src = cfg.sources.get(source)
    if not isinstance(src, PostgresSource) or src.wal.mode != "stream":
        return None
    lag = receiver_lags(cfg, catalog, now).get(source)
    target = float(cfg.targets.for_tier(src.tier).rpo)
    if lag is None:
        return (
            "red",
            f"streaming mode, but no receiver ever reported: run 'recoverctl wal stream --source {source}'",
            {},
        )
    figures = dataclasses.asdict(lag) | {"rpo_target_s": target}
    if not lag.alive:
        silent = human_duration(now - lag.reported_at)
        return "red", f"the WAL receiver has not reported for {silent}", figures
    seconds, size = lag.lag_seconds, lag.lag_bytes
    behind = f"{human_duration(seconds)} ({human_size(size)}) behind"
    if lag.receiver_pid is None:
        return "amber", f"pg_receivewal is reconnecting ({lag.last_error}); {behind}", figures
    if seconds is not None and seconds > target:
        return "red", f"WAL streaming {behind}, over the RPO target of {human_duration(target)}", figures
    keep, retained = lag.max_slot_wal_keep_bytes, lag.slot_retained_bytes
    if keep and retained is not None and retained >= src.wal.slot_warn_ratio * keep:
        held = f"{human_size(retained)} of {human_size(keep)}"
        return "amber", f"slot '{lag.slot}' retains {held} allowed", figures
    if seconds is not None and seconds > 0.8 * target:
        return "amber", f"WAL streaming {behind}, near the RPO target of {human_duration(target)}", figures
    return "green", f"WAL streaming {behind}", figures
