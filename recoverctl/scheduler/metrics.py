"""Prometheus textfile (node_exporter textfile collector) describing every schedule's last runs."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

from recoverctl.catalog import Catalog, jobs
from recoverctl.config import Config


def write_textfile(cfg: Config, catalog: Catalog, path: str, heartbeat: float | None = None) -> None:
    """Write the metrics file atomically (temp file + rename)."""
    reg = CollectorRegistry()
    last_run = Gauge(
        "recoverctl_schedule_last_run_timestamp_seconds",
        "Due time of the last finished run",
        ["schedule"],
        registry=reg,
    )
    last_ok = Gauge(
        "recoverctl_schedule_last_success_timestamp_seconds",
        "Due time of the last successful run",
        ["schedule"],
        registry=reg,
    )
    last_code = Gauge(
        "recoverctl_schedule_last_exit_code",
        "Exit code of the last finished run (-1: none)",
        ["schedule"],
        registry=reg,
    )
    last_dur = Gauge(
        "recoverctl_schedule_last_duration_seconds",
        "Duration of the last finished run",
        ["schedule"],
        registry=reg,
    )
    runs = Gauge(
        "recoverctl_schedule_runs", "Recorded occurrences by state", ["schedule", "state"], registry=reg
    )
    with catalog.begin() as conn:
        counts = jobs.occurrence_counts(conn)
    for s in cfg.schedules:
        last = jobs.last_occurrence(catalog, s.name, jobs.FINISHED_STATES)
        ok = jobs.last_occurrence(catalog, s.name, ["succeeded"])
        if last is not None and last.due_at is not None:
            outcome = last.result or {}
            last_run.labels(s.name).set(last.due_at)
            code = outcome.get("exit_code")
            last_code.labels(s.name).set(-1 if code is None else code)
            last_dur.labels(s.name).set(outcome.get("duration_s") or 0)
        if ok is not None and ok.due_at is not None:
            last_ok.labels(s.name).set(ok.due_at)
        for state, count in counts.get(s.name, {}).items():
            runs.labels(s.name, state).set(count)
    Gauge("recoverctl_metrics_written_timestamp_seconds", "When this file was written", registry=reg).set(
        time.time()
    )
    if heartbeat is not None:
        Gauge(
            "recoverctl_scheduler_heartbeat_timestamp_seconds", "Last scheduler loop heartbeat", registry=reg
        ).set(heartbeat)
    write_to_textfile(path, reg)
