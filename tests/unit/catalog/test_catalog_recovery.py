"""One recovery point and one RPO exposure (catalog/recovery.py), and the readers that agree on it:
status, summary and the metrics a scrape reads."""

from __future__ import annotations

from pathlib import Path

import pytest

from recoverctl.actions.status import status
from recoverctl.actions.summary import collect
from recoverctl.catalog import Catalog
from recoverctl.catalog import tables as t
from recoverctl.catalog.recovery import BACKUP_BASIS, WAL_BASIS, recovery_point, rpo_exposure
from recoverctl.config import Config, parse_config
from recoverctl.service.metrics import CatalogCollector

NOW = 1_000_000.0


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    return Catalog(f"sqlite:///{tmp_path / 'c.db'}")


@pytest.fixture
def cfg() -> Config:
    return parse_config({"sources": {"main": {"type": "postgres", "tier": "critical"}}}, env={})


def _backup(catalog: Catalog, kind: str, status: str, finished_at: float) -> None:
    with catalog.begin() as conn:
        conn.execute(
            t.runs.insert().values(
                kind=kind, source="main", started_at=finished_at - 10, finished_at=finished_at, status=status
            )
        )


def _archived(catalog: Catalog, at: float) -> None:
    with catalog.begin() as conn:
        conn.execute(
            t.wal_status.insert().values(
                source="main", last_segment="0001", last_archived_at=at, segments_total=1
            )
        )


def test_nothing_recorded_is_no_recovery_point(catalog: Catalog) -> None:
    measured = rpo_exposure(catalog, "main", NOW)
    assert measured.point.at is None and measured.exposure_s is None


def test_backups_count_logical_dumps_do_not_and_archived_wal_wins(catalog: Catalog) -> None:
    _backup(catalog, "backup", "succeeded", NOW - 7200)
    _backup(catalog, "backup-incremental", "partial", NOW - 3600)
    _backup(catalog, "backup-logical", "succeeded", NOW - 60)
    point = recovery_point(catalog, "main")
    assert (point.at, point.basis) == (NOW - 3600, BACKUP_BASIS)
    assert rpo_exposure(catalog, "main", NOW).exposure_s == 3600
    _archived(catalog, NOW - 120)
    point = recovery_point(catalog, "main")
    assert (point.at, point.basis, point.last_archived_at) == (NOW - 120, WAL_BASIS, NOW - 120)
    # Never negative: a point recorded after `now` means nothing is exposed.
    assert rpo_exposure(catalog, "main", NOW - 500).exposure_s == 0.0


def test_status_summary_and_metrics_report_the_same_exposure(catalog: Catalog, cfg: Config) -> None:
    # A partial backup newer than the last archived segment: before the one definition, summary
    # and metrics counted only succeeded runs and reported 4000 s here while status said 3000 s.
    _backup(catalog, "backup", "partial", NOW - 3000)
    _archived(catalog, NOW - 4000)
    expected = rpo_exposure(catalog, "main", NOW).exposure_s
    assert expected == 3000

    item = status(cfg, catalog, now=NOW).sources[0].items["rpo"]
    assert item.values["exposure_s"] == expected and item.status == "amber"
    (line,) = collect(cfg, catalog, "daily", now=NOW).rpo_exposure
    assert (line.exposure_s, line.last_recovery_point, line.ok) == (expected, NOW - 3000, True)
    families = {m.name: m for m in CatalogCollector(cfg, catalog)._from_catalog(NOW)}
    (sample,) = families["recoverctl_rpo_exposure_seconds"].samples
    assert sample.labels == {"source": "main"} and sample.value == expected
