"""A WAL gap end to end: a real server's archive_command fails while the repository refuses
writes, then succeeds again; the catalog holds one outage with its start and end, and the
timeline API (Grafana annotations), the console's timeline page and `status` show it."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import yaml
from fastapi.testclient import TestClient

from recoverctl.catalog import Catalog
from recoverctl.catalog.wal import WalOutage, failures_totals, outages
from recoverctl.config import parse_config
from recoverctl.service.app import create_app
from recoverctl.service.server import build_state
from tests.fixtures.net import wait_until
from tests.fixtures.pgbackup import PgCli
from tests.fixtures.postgres import PgCluster


def _switch(pg: PgCluster) -> str:
    """Write a little WAL and switch segments; return the segment just completed."""
    pg.psql("insert into marks default values")
    seg = pg.psql("select pg_walfile_name(pg_current_wal_lsn())").strip()
    pg.psql("select pg_switch_wal()")
    return seg


def _archived(pg: PgCluster) -> str:
    return pg.psql("select coalesce(last_archived_wal, '') from pg_stat_archiver").strip()


def test_archiving_fails_then_recovers_and_the_gap_is_on_the_timeline(pg_cli: PgCli, pg_factory: Any) -> None:
    pg: PgCluster = pg_factory(start=False, extra_conf=(
        f"archive_mode = on\narchive_command = '{pg_cli.archive_command('main')}'\n"
    ))  # fmt: skip
    pg_cli.write_config({"main": pg.source_config()})
    pg_cli("init", check=0)
    pg.start()
    pg.psql("create table marks(id serial primary key)")
    catalog = Catalog(f"sqlite:///{pg_cli.home / 'catalog.db'}")
    try:
        first = _switch(pg)
        wait_until(lambda: _archived(pg) >= first, timeout=60, what=f"{first} archived")
        timeline_dir = pg_cli.repository / "wal" / "main" / "00000001"
        assert (timeline_dir / first).exists()

        # The repository refuses writes: PostgreSQL's archiver keeps retrying the next segment.
        os.chmod(timeline_dir, 0o555)
        try:
            failing = _switch(pg)
            gap: WalOutage = wait_until(
                lambda: next(iter(outages(catalog, sources=["main"])), None), timeout=60, what="an outage"
            )
            assert gap.ongoing and gap.first_failed_segment == failing and gap.last_good_segment is not None
            assert "Permission denied" in (gap.error or "")
            rpo = pg_cli("--json", "status", check=None).json()["sources"][0]["items"]["rpo"]
            assert f"WAL archiving failing since segment {failing}" in rpo["reason"]
            assert rpo["wal_gap"]["first_failed_segment"] == failing
        finally:
            os.chmod(timeline_dir, 0o755)

        # Archiving resumes; the outage ends with the next success recorded after it began.
        def closed() -> WalOutage | None:
            if _archived(pg) >= failing:
                _switch(pg)  # more pushes: the pusher records successes at most every 10 s
            (o,) = outages(catalog, sources=["main"])
            return None if o.ongoing else o

        ended = wait_until(closed, timeout=120, interval=1.0, what="the outage to end")
        assert ended.ended_at is not None and ended.ended_at > ended.started_at
        assert ended.failures >= 1 and failures_totals(catalog)["main"] >= ended.failures
        assert (timeline_dir / failing).exists()

        cfg = parse_config(yaml.safe_load(Path(pg_cli.config_path).read_text()))
        client = TestClient(create_app(build_state(cfg, catalog, workers=0, dry_run=True, host="127.0.0.1")))
        now_ms = int(time.time() * 1000) + 1000
        (region,) = client.get(f"/api/annotations?from=0&to={now_ms}&kind=wal&subject=main").json()
        assert region["isRegion"] is True
        assert (region["time"], region["timeEnd"]) == (
            int(ended.started_at * 1000),
            int(ended.ended_at * 1000),
        )
        assert "WAL gap" in region["text"] and failing in region["text"]
        page = client.get("/timeline?kind=wal").text
        assert page.count('data-kind="wal"') == 1 and failing in page and "repository could not cover" in page
    finally:
        catalog.close()
