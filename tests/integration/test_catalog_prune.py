"""Catalog history retention (`catalog prune`) on SQLite and PostgreSQL: what goes, what stays."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from recoverctl.actions.catalog_prune import prune_catalog
from recoverctl.catalog import Catalog
from recoverctl.catalog import tables as t
from recoverctl.config import parse_config
from tests.conftest import Cli
from tests.fixtures.postgres import PgCluster

DAY = 86400.0


@pytest.fixture(params=["sqlite", "postgresql"])
def catalog(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Catalog]:
    if request.param == "sqlite":
        c = Catalog(f"sqlite:///{tmp_path / 'c.db'}")
    else:
        pg: PgCluster = request.getfixturevalue("pg")
        pg.psql("create database recoverctl")
        c = Catalog(pg.url("recoverctl"))
    yield c
    c.close()


def _insert(conn: Any, table: sa.Table, **values: Any) -> int:
    return int(conn.execute(table.insert().values(**values)).inserted_primary_key[0])


def _alert(conn: Any, at: float, **values: Any) -> int:
    row = {"source": "alertmanager", "alertname": "HighErrorRate", "service": "web", "decision": "acted"}
    return _insert(conn, t.alerts, received_at=at, **{**row, **values})


def _event(conn: Any, at: float, delivered: bool = True) -> int:
    return _insert(
        conn, t.events, at=at, kind="backup.failed", severity="critical", summary="x", delivered=delivered
    )


def _note(conn: Any, at: float, event_id: int | None) -> int:
    return _insert(
        conn,
        t.notifications,
        event_id=event_id,
        at=at,
        channel="slack",
        channel_type="slack",
        severity="critical",
        status="sent",
        attempts=1,
    )


def _seed(catalog: Catalog, now: float) -> dict[str, int]:
    old, recent = now - 100 * DAY, now - 10 * DAY
    with catalog.begin() as conn:
        ids = {
            "old_event": _event(conn, old),
            "old_undelivered": _event(conn, old, delivered=False),
            "recent_event": _event(conn, recent),
        }
        ids["old_note"] = _note(conn, old, ids["old_event"])
        ids["old_note_of_recent_event"] = _note(conn, old, ids["recent_event"])
        ids["recent_note"] = _note(conn, recent, ids["recent_event"])
        ids["old_alert"] = _alert(conn, old, fingerprint="f1", starts_at="s1", incident_key="am:f1:s1")
        # Still firing: a recent deduplicated row of the same alert holds the row that took it.
        ids["firing_alert"] = _alert(conn, old, fingerprint="f2", starts_at="s2", incident_key="am:f2:s2")
        ids["firing_repeat"] = _alert(conn, recent, fingerprint="f2", starts_at="s2", decision="deduplicated")
        job = _insert(conn, t.jobs, kind="rollback", payload={}, state="queued", created_at=old)
        ids["alert_of_queued_job"] = _alert(conn, old, fingerprint="f3", starts_at="s3", job_id=job)
        outage = {"source": "main", "first_failed_segment": "A", "last_failed_segment": "B", "failures": 3}
        ids["old_outage"] = _insert(
            conn, t.wal_outages, started_at=old, ended_at=old + 60, last_failed_at=old, **outage
        )
        ids["open_outage"] = _insert(conn, t.wal_outages, started_at=old, last_failed_at=recent, **outage)
        ids["recent_outage"] = _insert(
            conn, t.wal_outages, started_at=old, ended_at=recent, last_failed_at=recent, **outage
        )
        _insert(conn, t.runs, kind="backup", started_at=old, status="succeeded")
        _insert(conn, t.drills, name="weekly", started_at=old, verdict="pass")
        _insert(conn, t.releases, service="web", version="1", created_at=old, status="good")
    return ids


def _ids(catalog: Catalog, table: sa.Table) -> set[int]:
    with catalog.begin() as conn:
        return set(conn.execute(sa.select(table.c.id)).scalars())


def test_prune_deletes_old_history_and_keeps_what_is_still_needed(catalog: Catalog) -> None:
    now = time.time()
    ids = _seed(catalog, now)
    cfg = parse_config({}, env={})  # the default: 90 days for every group

    dry = prune_catalog(cfg, catalog, dry_run=True, now=now)
    assert (dry.deleted.events, dry.deleted.alerts, dry.deleted.notifications, dry.deleted.wal_outages) == (
        1,
        1,
        2,
        1,
    )
    assert len(_ids(catalog, t.events)) == 3, "a dry run deletes nothing"

    done = prune_catalog(cfg, catalog, dry_run=False, now=now)
    assert done.deleted == dry.deleted
    assert _ids(catalog, t.events) == {ids["old_undelivered"], ids["recent_event"]}
    assert _ids(catalog, t.notifications) == {ids["recent_note"]}
    assert _ids(catalog, t.alerts) == {ids["firing_alert"], ids["firing_repeat"], ids["alert_of_queued_job"]}
    # an outage that ended long ago goes; one still open, or ended within the window, stays
    assert _ids(catalog, t.wal_outages) == {ids["open_outage"], ids["recent_outage"]}
    for table in (t.runs, t.drills, t.releases, t.jobs):
        assert len(_ids(catalog, table)) == 1, f"{table.name} is never pruned"
    with catalog.begin() as conn:
        (audit,) = conn.execute(sa.select(t.audit_log).where(t.audit_log.c.action == "catalog.prune")).all()
    assert audit.details["deleted"] == {"events": 1, "alerts": 1, "notifications": 2, "wal_outages": 1}
    # Nothing more to do the second time.
    again = prune_catalog(cfg, catalog, dry_run=False, now=now).deleted
    assert (again.events, again.alerts, again.notifications, again.wal_outages) == (0, 0, 0, 0)


def test_retention_per_group_and_rows_another_table_refers_to(catalog: Catalog) -> None:
    now = time.time()
    ids = _seed(catalog, now)
    # A table added later (an incident's timeline) that points at events holds the events it names.
    timeline = sa.Table(
        "test_incident_timeline",
        t.metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("event_id", sa.Integer, sa.ForeignKey("events.id")),
    )
    try:
        timeline.create(catalog.engine)
        with catalog.begin() as conn:
            conn.execute(timeline.insert().values(event_id=ids["old_event"]))
            conn.execute(
                t.events.update().where(t.events.c.id == ids["old_undelivered"]).values(delivered=True)
            )
        cfg = parse_config(
            {
                "catalog": {
                    "retention": {
                        "events": "5d",
                        "alerts": None,
                        "notifications": "200d",
                        "wal_outages": "5d",
                    }
                }
            },
            env={},
        )
        deleted = prune_catalog(cfg, catalog, dry_run=False, now=now).deleted
    finally:
        t.metadata.remove(timeline)
    # events: 5 days, but the one the timeline names stays (and so does its delivery row).
    assert _ids(catalog, t.events) == {ids["old_event"]}
    assert _ids(catalog, t.notifications) == {ids["old_note"]}
    assert len(_ids(catalog, t.alerts)) == 4, "alerts: null keeps them all"
    assert (deleted.events, deleted.alerts, deleted.notifications) == (2, 0, 2)
    # wal_outages: 5 days takes the one that ended 10 days ago too; the open one stays
    assert _ids(catalog, t.wal_outages) == {ids["open_outage"]} and deleted.wal_outages == 2


def test_catalog_prune_command_and_default_schedule(cli: Cli) -> None:
    catalog = Catalog(cli.env["RECOVERCTL_CATALOG"])
    _seed(catalog, time.time())
    catalog.close()
    cli.write_config({"catalog": {"retention": {"notifications": "1d"}}})
    text = cli("catalog", "prune", "--dry-run", check=0).stdout
    assert text.splitlines()[0] == "catalog prune: would delete"
    assert "events                1  (older than" in text
    assert "notifications         3  (older than" in text
    out = cli("--json", "catalog", "prune", check=0).json()
    assert "wal_outages           1  (older than" in text
    assert out["dry_run"] is False
    assert out["deleted"] == {"events": 1, "alerts": 1, "notifications": 3, "wal_outages": 1}
    assert set(out["cutoffs"]) == {"events", "alerts", "notifications", "wal_outages"}

    from recoverctl.scheduler.defaults import DEFAULT_SCHEDULE_YAML

    assert "job: catalog prune" in DEFAULT_SCHEDULE_YAML
