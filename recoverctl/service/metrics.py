"""Prometheus metrics for `serve`: request counters kept in process, the rest read from the catalog.

Catalog-backed series (decisions, jobs, rollbacks, backup age, RPO exposure, drills and their
targets, repository size, verify age) are computed at scrape time so they survive restarts and
agree across several `serve` replicas.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from recoverctl.actions.status import VERIFY_MAX_AGE, repository_url
from recoverctl.actions.wal_stream import receiver_lags
from recoverctl.catalog import Catalog
from recoverctl.catalog.alerts import decision_counts_in
from recoverctl.catalog.drills import last_finished_drills
from recoverctl.catalog.jobs import action_job_counts_in
from recoverctl.catalog.metrics_readings import repository_sizes, verify_readings
from recoverctl.catalog.recovery import archiving_sources, rpo_exposure
from recoverctl.catalog.rollbacks import rollback_counts_in
from recoverctl.catalog.runs import last_succeeded_backups
from recoverctl.catalog.wal import failures_totals
from recoverctl.config import Config
from recoverctl.errors import CatalogError
from recoverctl.scheduler.cadence import max_age_of_last

log = logging.getLogger(__name__)
# `_created` series double the exposition and no dashboard uses them.
disable_created_metrics()


# How long the verify schedule's computed cadence is reused: it depends on the clock only
# through daylight-saving shifts.
CADENCE_TTL = 3600.0


class CatalogCollector(Collector):
    def __init__(self, cfg: Config, catalog: Catalog):
        self.cfg = cfg
        self.catalog = catalog
        self._verify_max_age: tuple[float, float] | None = None  # (computed at, seconds)

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("recoverctl_catalog_up", "1 when the catalog answered this scrape")
        try:
            families = list(self._from_catalog(time.time()))
        except (CatalogError, sa.exc.SQLAlchemyError) as e:
            log.warning("metrics: catalog unavailable: %s", e)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _from_catalog(self, now: float) -> Iterator[Metric]:
        yield from self._decisions_jobs_rollbacks()
        yield from self._repositories(now)
        yield from self._backups(now)
        yield from self._drills()
        yield from self._wal_stream(now)

    def _decisions_jobs_rollbacks(self) -> Iterator[Metric]:
        with self.catalog.begin() as conn:
            decisions = decision_counts_in(conn)
            jobs = action_job_counts_in(conn)
            rollbacks = rollback_counts_in(conn)

        m = CounterMetricFamily(
            "recoverctl_alert_decisions", "Alert decisions stored by type", labels=["decision"]
        )
        for decision in ("acted", "deduplicated", "suppressed", "ignored", "rejected"):
            m.add_metric([decision], float(decisions.get(decision, 0)))
        yield m

        g = GaugeMetricFamily(
            "recoverctl_jobs", "Jobs in the queue by kind and state", labels=["kind", "state"]
        )
        for kind, state, n in jobs:
            g.add_metric([kind, state], float(n))
        yield g

        m = CounterMetricFamily("recoverctl_rollbacks", "Rollbacks by result", labels=["result"])
        for state in sorted(set(rollbacks) | {"succeeded", "failed"}):
            m.add_metric([state], float(rollbacks.get(state, 0)))
        yield m

    def _repositories(self, now: float) -> Iterator[Metric]:
        """Per repository: its size as the newest verify measured it, and the last verify's time,
        age and outcome against the oldest the verify schedule allows."""
        size = GaugeMetricFamily(
            "recoverctl_repository_size_bytes",
            "Bytes the repository's storage holds, as the newest verify measured them",
            labels=["repository"],
        )
        objects = GaugeMetricFamily(
            "recoverctl_repository_objects",
            "Objects the repository's storage holds, as the newest verify counted them",
            labels=["repository"],
        )
        measured = GaugeMetricFamily(
            "recoverctl_repository_size_timestamp_seconds",
            "Unix time the repository size was measured (the verify that measured it finished)",
            labels=["repository"],
        )
        for s in repository_sizes(self.catalog):
            size.add_metric([s.repository], float(s.bytes))
            measured.add_metric([s.repository], s.measured_at)
            if s.objects is not None:
                objects.add_metric([s.repository], float(s.objects))
        yield from (size, objects, measured)

        ts = GaugeMetricFamily(
            "recoverctl_last_verify_timestamp_seconds",
            "Unix time the last successful verify finished",
            labels=["repository"],
        )
        age = GaugeMetricFamily(
            "recoverctl_last_verify_age_seconds",
            "Seconds since the last successful verify finished",
            labels=["repository"],
        )
        ok = GaugeMetricFamily(
            "recoverctl_last_verify_success",
            "1 when the newest verify found the repository intact",
            labels=["repository"],
        )
        for r in verify_readings(self.catalog):
            ok.add_metric([r.repository], 1.0 if r.last_succeeded else 0.0)
            if r.last_success_at is not None:
                ts.add_metric([r.repository], r.last_success_at)
                age.add_metric([r.repository], now - r.last_success_at)
        max_age = GaugeMetricFamily(
            "recoverctl_verify_max_age_seconds",
            "Oldest the last successful verify may be: the verify schedule's longest gap plus its "
            "jitter and timeout (the `status` limit when no schedule runs verify)",
            labels=["repository"],
        )
        url = repository_url(self.cfg)
        if url is not None:
            max_age.add_metric([url], self._verify_max_age_at(now))
        yield from (ts, age, ok, max_age)

    def _verify_max_age_at(self, now: float) -> float:
        if self._verify_max_age is None or now - self._verify_max_age[0] > CADENCE_TTL:
            scheduled = max_age_of_last(self.cfg, "verify", now)
            self._verify_max_age = (now, VERIFY_MAX_AGE if scheduled is None else scheduled)
        return self._verify_max_age[1]

    def _backups(self, now: float) -> Iterator[Metric]:
        backups = last_succeeded_backups(self.catalog)
        archiving = archiving_sources(self.catalog)
        sources = sorted(set(self.cfg.sources) | {s for s in backups if s} | set(archiving))
        age = GaugeMetricFamily(
            "recoverctl_last_backup_age_seconds",
            "Seconds since the last successful backup",
            labels=["source"],
        )
        ts = GaugeMetricFamily(
            "recoverctl_last_backup_timestamp_seconds",
            "Unix time of the last successful backup",
            labels=["source"],
        )
        exposure = GaugeMetricFamily(
            "recoverctl_rpo_exposure_seconds",
            "Data at risk now: seconds since the newest archived WAL or backup",
            labels=["source"],
        )
        target = GaugeMetricFamily(
            "recoverctl_rpo_target_seconds", "RPO target of the source's tier", labels=["source"]
        )
        for source in sources:
            last = backups.get(source)
            if last is not None:
                age.add_metric([source], now - last)
                ts.add_metric([source], last)
            measured = rpo_exposure(self.catalog, source, now).exposure_s
            if measured is not None:
                exposure.add_metric([source], measured)
            if source in self.cfg.sources:
                tier = self.cfg.sources[source].tier
                target.add_metric([source], self.cfg.targets.for_tier(tier).rpo)
        yield from (age, ts, exposure, target)

    def _drills(self) -> Iterator[Metric]:
        drills = last_finished_drills(self.catalog)

        ok = GaugeMetricFamily(
            "recoverctl_last_drill_success", "1 when the last drill passed", labels=["source"]
        )
        when = GaugeMetricFamily(
            "recoverctl_last_drill_timestamp_seconds", "Unix time the last drill finished", labels=["source"]
        )
        rto = GaugeMetricFamily(
            "recoverctl_last_drill_rto_seconds", "Measured RTO of the last drill", labels=["source"]
        )
        rpo = GaugeMetricFamily(
            "recoverctl_last_drill_rpo_seconds", "Measured RPO of the last drill", labels=["source"]
        )
        rto_target = GaugeMetricFamily(
            "recoverctl_drill_rto_target_seconds",
            "RTO target of the source's drills: the last drill's (its playbook's or tier's), else the tier's",
            labels=["source"],
        )
        rpo_target = GaugeMetricFamily(
            "recoverctl_drill_rpo_target_seconds",
            "RPO target of the source's drills: the last drill's (its playbook's or tier's), else the tier's",
            labels=["source"],
        )
        drilled: set[str] = set()
        for d in drills:
            src = d.source or d.name
            drilled.add(src)
            if d.rto_target_s is not None:
                rto_target.add_metric([src], d.rto_target_s)
            if d.rpo_target_s is not None:
                rpo_target.add_metric([src], d.rpo_target_s)
            ok.add_metric([src], 1.0 if d.verdict == "pass" else 0.0)
            if d.finished_at is not None:  # always: only finished drills are read
                when.add_metric([src], d.finished_at)
            if d.rto_s is not None:
                rto.add_metric([src], d.rto_s)
            if d.rpo_s is not None:
                rpo.add_metric([src], d.rpo_s)
        # Sources never drilled still get their tier's targets, so the dashboard shows the goal.
        for src, source in sorted(self.cfg.sources.items()):
            if src not in drilled:
                tier = self.cfg.targets.for_tier(source.tier)
                rto_target.add_metric([src], tier.rto)
                rpo_target.add_metric([src], tier.rpo)
        yield from (ok, when, rto, rpo, rto_target, rpo_target)

    def _wal_stream(self, now: float) -> Iterator[Metric]:
        """The WAL receivers of sources in streaming mode, as their last heartbeat reported, and
        the failed WAL archive attempts of every source."""
        lag_bytes = GaugeMetricFamily(
            "recoverctl_wal_stream_lag_bytes",
            "WAL bytes the repository is behind the primary's current position (streaming mode)",
            labels=["source"],
        )
        lag_seconds = GaugeMetricFamily(
            "recoverctl_wal_stream_lag_seconds",
            "Seconds since the primary was last at a WAL position the repository holds (streaming mode)",
            labels=["source"],
        )
        up = GaugeMetricFamily(
            "recoverctl_wal_stream_up",
            "1 when the source's WAL receiver reported within three flush intervals",
            labels=["source"],
        )
        for source, lag in sorted(receiver_lags(self.cfg, self.catalog, now).items()):
            up.add_metric([source], 1.0 if lag.alive and lag.receiver_pid else 0.0)
            if lag.lag_bytes is not None:
                lag_bytes.add_metric([source], float(lag.lag_bytes))
            if lag.lag_seconds is not None:
                # a receiver that stopped reporting falls further behind by the second
                lag_seconds.add_metric(
                    [source], lag.lag_seconds + (0.0 if lag.alive else now - lag.reported_at)
                )
        yield from (lag_bytes, lag_seconds, up)
        failures = CounterMetricFamily(
            "recoverctl_wal_push_failures_total",
            "Failed WAL archive attempts (wal push, the pusher, the stream receiver's uploads)",
            labels=["source"],
        )
        for source, count in sorted(failures_totals(self.catalog).items()):
            failures.add_metric([source], float(count))
        yield failures


class Metrics:
    """The registry `/metrics` exposes, plus the in-process request instruments."""

    def __init__(self, cfg: Config, catalog: Catalog):
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "recoverctl_webhook_requests",
            "Webhook requests by source and outcome",
            ["source", "outcome"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "recoverctl_webhook_seconds",
            "Time to answer a webhook request",
            ["source"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=self.registry,
        )
        self.registry.register(CatalogCollector(cfg, catalog))
