"""One RPO exposure: `postgres status`, `status`, `summary` and /metrics report the same number
for one source (catalog/recovery.py), and `postgres status` folds in what the live server's
archiver reports beyond the catalog."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from recoverctl.actions.postgres_setup import postgres_status
from recoverctl.actions.status import status
from recoverctl.actions.summary import collect
from recoverctl.catalog import Catalog
from recoverctl.catalog import tables as t
from recoverctl.catalog.wal import record_archived
from recoverctl.cli.context import jsonable
from recoverctl.config import Config, parse_config
from recoverctl.service.metrics import CatalogCollector
from tests.fixtures.postgres import PgCluster


def _config(pg: PgCluster) -> Config:
    return parse_config({"sources": {"main": pg.source_config(tier="critical")}}, env={})


def _record_backup(catalog: Catalog, finished_at: float) -> None:
    with catalog.begin() as conn:
        conn.execute(
            t.runs.insert().values(
                kind="backup",
                source="main",
                started_at=finished_at - 10,
                finished_at=finished_at,
                status="succeeded",
            )
        )


def test_postgres_status_status_summary_and_metrics_agree(
    pg_factory: Callable[..., PgCluster], tmp_path: Path
) -> None:
    pg = pg_factory(extra_conf="archive_mode = on\narchive_command = 'true'")
    pg.psql("create table t (x int); insert into t values (1)")
    pg.archive_current_wal()
    live_at = float(pg.psql("select extract(epoch from last_archived_time) from pg_stat_archiver"))
    live_segment = pg.psql("select last_archived_wal from pg_stat_archiver")
    cfg = _config(pg)

    # The catalog knows a newer point than the live archiver: a backup after the last WAL it
    # recorded. Every reader measures from that backup.
    catalog = Catalog(f"sqlite:///{tmp_path / 'c.db'}")
    record_archived(catalog, "main", "000000010000000000000001", live_at + 500)
    _record_backup(catalog, live_at + 1000)
    now = live_at + 4000
    expected = 3000.0

    (pg_line,) = postgres_status(cfg, catalog, now=now).sources
    assert (pg_line.exposure_s, pg_line.within_target) == (expected, True)
    assert pg_line.server_reachable and pg_line.archiver is not None
    assert (pg_line.last_archived_at, pg_line.segments_archived) == (live_at + 500, 1)
    rpo = status(cfg, catalog, now=now).sources[0].items["rpo"]
    assert rpo.values["exposure_s"] == expected
    (summary_line,) = collect(cfg, catalog, "daily", now=now).rpo_exposure
    assert summary_line.exposure_s == expected
    families = {m.name: m for m in CatalogCollector(cfg, catalog)._from_catalog(now)}
    (sample,) = families["recoverctl_rpo_exposure_seconds"].samples
    assert sample.value == expected

    # The JSON keeps the keys `postgres status --json` always had, plus the archive_timeout bound
    # of a reachable server.
    assert set(jsonable(postgres_status(cfg, catalog, now=now))["sources"][0]) == {
        *("source", "tier", "rpo_target_s", "last_archived_segment", "last_archived_at"),
        *("exposure_s", "within_target", "segments_archived", "server_reachable", "archiver"),
        *("archive_timeout_s", "archive_bound_s"),
    }

    # A catalog that heard of nothing: only the live archiver knows a point, and `postgres status`
    # measures from it while the catalog's readers have nothing recoverable.
    empty = Catalog(f"sqlite:///{tmp_path / 'empty.db'}")
    (live_line,) = postgres_status(cfg, empty, now=live_at + 60).sources
    assert (live_line.exposure_s, live_line.last_archived_at) == (60.0, live_at)
    assert (live_line.last_archived_segment, live_line.segments_archived) == (live_segment, 0)
    assert status(cfg, empty, now=live_at + 60).sources[0].items["rpo"].values["exposure_s"] is None
