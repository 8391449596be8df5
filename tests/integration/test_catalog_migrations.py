"""Catalog migrations that move data: revision 0003 turns schedule_runs rows into jobs, and back."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from recoverctl.catalog import Catalog, jobs, leases, wal
from recoverctl.catalog import tables as t
from tests.fixtures.postgres import PgCluster

# schedule_runs as revision 0002 had it (tables.py no longer describes it).
schedule_runs = sa.table(
    "schedule_runs",
    sa.column("id", sa.Integer),
    sa.column("schedule", sa.String),
    sa.column("due_at", sa.Float),
    sa.column("state", sa.String),
    sa.column("runner", sa.String),
    sa.column("lease_expires_at", sa.Float),
    sa.column("started_at", sa.Float),
    sa.column("finished_at", sa.Float),
    sa.column("outcome", sa.Text),
)
# jobs as revision 0002 had it: without schedule and due_at.
jobs_0002 = sa.table(
    "jobs",
    *(sa.column(c.name, c.type) for c in t.jobs.columns if c.name not in ("schedule", "due_at")),
)


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'catalog.db'}"
    pg: PgCluster = request.getfixturevalue("pg")
    pg.psql("create database recoverctl")
    return pg.url("recoverctl")


def _revision(catalog: Catalog) -> str | None:
    """Return the catalog's revision (Catalog.info() counts rows of tables newer ones add)."""
    with catalog.engine.connect() as conn:
        return catalog.current_revision(conn)


def _to_revision(catalog: Catalog, revision: str, *, down: bool = False) -> None:
    with catalog.engine.begin() as conn:
        cfg = catalog._alembic_config(conn)
        (command.downgrade if down else command.upgrade)(cfg, revision)


@pytest.fixture
def old_catalog(url: str) -> Iterator[Catalog]:
    """A catalog at revision 0002 holding one webhook job and three scheduled occurrences."""
    c = Catalog(url, migrate=False)
    _to_revision(c, "0002")
    now = time.time()
    with c.engine.begin() as conn:
        conn.execute(
            jobs_0002.insert().values(
                kind="rollback",
                payload={"target": "web"},
                state="queued",
                attempts=0,
                max_attempts=3,
                dedup_key="active:rollback:web",
                created_at=now,
            )
        )
        conn.execute(
            schedule_runs.insert(),
            [
                {
                    "schedule": "nightly",
                    "due_at": 1000.0,
                    "state": "succeeded",
                    "runner": "scheduler:a:1",
                    "lease_expires_at": None,
                    "started_at": 1000.5,
                    "finished_at": 1010.0,
                    "outcome": json.dumps({"exit_code": 0, "duration_s": 9.5}),
                },
                {
                    "schedule": "nightly",
                    "due_at": 2000.0,
                    "state": "skipped",
                    "runner": "scheduler:b:2",
                    "lease_expires_at": None,
                    "started_at": 2000.1,
                    "finished_at": 2000.1,
                    "outcome": json.dumps({"reason": "overlap"}),
                },
                {
                    "schedule": "hourly",
                    "due_at": 3000.0,
                    "state": "running",
                    "runner": "scheduler:a:1",
                    "lease_expires_at": now - 1,
                    "started_at": 3000.2,
                    "finished_at": None,
                    "outcome": None,
                },
            ],
        )
    yield c
    c.close()


def test_upgrade_moves_occurrences_into_jobs_with_claims_and_uniqueness(old_catalog: Catalog) -> None:
    old_catalog.migrate()
    assert old_catalog.info()["revision"] == old_catalog.head_revision()
    # The migrated schema is the one tables.py describes (columns, the new unique constraint).
    with old_catalog.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), t.metadata) == []
    with old_catalog.begin() as conn:
        assert "schedule_runs" not in sa.inspect(conn).get_table_names()
        webhook = conn.execute(sa.select(t.jobs).where(t.jobs.c.kind == "rollback")).one()
        assert jobs.active_job(conn, "rollback", "web") is not None
    assert (webhook.state, webhook.schedule, webhook.due_at) == ("queued", None, None)

    moved = {(j.schedule, j.due_at): j for j in jobs.recent_occurrences(old_catalog, 10)}
    assert sorted(moved) == [("hourly", 3000.0), ("nightly", 1000.0), ("nightly", 2000.0)]
    done = moved["nightly", 1000.0]
    assert (done.state, done.lease_owner, done.started_at, done.finished_at) == (
        "succeeded",
        "scheduler:a:1",
        1000.5,
        1010.0,
    )
    assert done.result == {"exit_code": 0, "duration_s": 9.5}
    assert moved["nightly", 2000.0].result == {"reason": "overlap"}
    assert jobs.last_due(old_catalog, "nightly") == 2000.0

    # The moved occurrences are still owned: claiming one again is refused, on every backend.
    again = jobs.claim_occurrence(old_catalog, "nightly", 1000.0, "scheduler:c:3", 60)
    assert again.state == "taken"
    # The running occurrence keeps its (expired) lease: it is reclaimed once, as an occurrence.
    (abandoned,) = jobs.recover_expired(old_catalog, pool=leases.OCCURRENCES)
    assert (abandoned.schedule, abandoned.due_at, abandoned.state) == ("hourly", 3000.0, "abandoned")
    assert jobs.recover_expired(old_catalog, pool=leases.OCCURRENCES) == []
    # A new occurrence is claimed as before.
    assert jobs.claim_occurrence(old_catalog, "hourly", 4000.0, "scheduler:c:3", 60).state == "claimed"
    with old_catalog.begin() as conn:
        assert jobs.occurrence_counts(conn) == {
            "nightly": {"succeeded": 1, "skipped": 1},
            "hourly": {"abandoned": 1, "running": 1},
        }


def test_downgrade_moves_occurrences_back_to_schedule_runs(old_catalog: Catalog) -> None:
    old_catalog.migrate()
    _to_revision(old_catalog, "0002", down=True)
    with old_catalog.engine.begin() as conn:
        runs = conn.execute(sa.select(schedule_runs).order_by(schedule_runs.c.due_at)).all()
        left = conn.execute(sa.select(jobs_0002.c.kind)).scalars().all()
    assert [(r.schedule, r.due_at, r.state, r.runner) for r in runs] == [
        ("nightly", 1000.0, "succeeded", "scheduler:a:1"),
        ("nightly", 2000.0, "skipped", "scheduler:b:2"),
        ("hourly", 3000.0, "running", "scheduler:a:1"),
    ]
    assert json.loads(runs[0].outcome) == {"exit_code": 0, "duration_s": 9.5}
    assert left == ["rollback"]
    # Upgrading again brings them back.
    old_catalog.migrate()
    assert len(jobs.recent_occurrences(old_catalog, 10)) == 3


def test_upgrade_to_0004_adds_incident_tables_matching_tables_py(url: str) -> None:
    c = Catalog(url, migrate=False)
    try:
        _to_revision(c, "0003")
        _to_revision(c, "0004")
        assert _revision(c) == "0004"
        with c.engine.connect() as conn:
            assert "incidents" in sa.inspect(conn).get_table_names()
        event_id = c.emit_event("drill.failed", "critical", "db", "restore drill 'nightly' of 'db' failed")
        with c.begin() as conn:
            opened = conn.execute(sa.select(t.incidents)).one()
            entry = conn.execute(sa.select(t.incident_timeline)).one()
        assert (opened.state, opened.subject, opened.kind) == ("open", "db", "drill.failed")
        assert entry.event_id == event_id
        _to_revision(c, "0003", down=True)
        with c.engine.connect() as conn:
            assert "incidents" not in sa.inspect(conn).get_table_names()
    finally:
        c.close()


def test_upgrade_to_0005_adds_newest_first_indexes_that_reads_use(url: str) -> None:
    c = Catalog(url, migrate=False)
    try:
        _to_revision(c, "0004")
        _to_revision(c, "0005")
        assert _revision(c) == "0005"
        with c.engine.connect() as conn:
            names = {i["name"] for i in sa.inspect(conn).get_indexes("runs")}
            names |= {i["name"] for i in sa.inspect(conn).get_indexes("snapshots")}
        assert {"ix_runs_source_started", "ix_runs_started", "ix_snapshots_source_time"} <= names
        if c.is_sqlite:
            # The newest-first read of a source's backups walks the new index instead of sorting.
            newest = sa.text(
                "explain query plan select * from runs where source = 'db' and kind like 'backup%' "
                "order by started_at desc, id desc limit 48"
            )
            with c.engine.connect() as conn:
                plan = " ".join(str(row[-1]) for row in conn.execute(newest))
            assert "ix_runs_source_started" in plan, plan
        _to_revision(c, "0004", down=True)
        with c.engine.connect() as conn:
            assert "ix_runs_source_started" not in {i["name"] for i in sa.inspect(conn).get_indexes("runs")}
    finally:
        c.close()


# wal_status as revision 0005 had it: without failures_total.
wal_status_0005 = sa.table(
    "wal_status", *(sa.column(c.name, c.type) for c in t.wal_status.columns if c.name != "failures_total")
)


def test_upgrade_to_0006_opens_the_gap_of_a_failing_source_and_downgrades(url: str) -> None:
    c = Catalog(url, migrate=False)
    try:
        _to_revision(c, "0005")
        with c.engine.begin() as conn:
            conn.execute(
                wal_status_0005.insert(),
                [
                    # failing now: its newest attempt failed
                    {"source": "db", "last_segment": "000000010000000000000003", "last_archived_at": 100.0,
                     "last_failed_segment": "000000010000000000000004", "last_failed_at": 200.0,
                     "segments_total": 3},
                    # failed once, archived since
                    {"source": "files", "last_segment": "000000010000000000000009", "last_archived_at": 300.0,
                     "last_failed_segment": "000000010000000000000008", "last_failed_at": 250.0,
                     "segments_total": 9},
                    {"source": "quiet", "last_segment": "000000010000000000000001", "last_archived_at": 50.0,
                     "last_failed_segment": None, "last_failed_at": None, "segments_total": 1},
                ],
            )  # fmt: skip
        c.migrate()
        assert c.info()["revision"] == "0006" == c.head_revision()
        with c.engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), t.metadata) == []
        (gap,) = wal.outages(c)
        assert (gap.source, gap.started_at, gap.ongoing, gap.failures) == ("db", 200.0, True, 1)
        assert (gap.last_good_segment, gap.first_failed_segment) == (
            "000000010000000000000003",
            "000000010000000000000004",
        )
        assert wal.failures_totals(c) == {"db": 1, "files": 1, "quiet": 0}
        # The migrated catalog records and closes outages like a new one.
        wal.record_failed(c, "db", "000000010000000000000004", 210.0, "denied")
        wal.record_archived(c, "db", "000000010000000000000005", 220.0)
        (closed,) = wal.outages(c)
        assert (closed.ended_at, closed.failures, closed.error) == (220.0, 2, "denied")
        _to_revision(c, "0005", down=True)
        with c.engine.connect() as conn:
            assert "wal_outages" not in sa.inspect(conn).get_table_names()
            columns = {col["name"] for col in sa.inspect(conn).get_columns("wal_status")}
            kept = conn.execute(sa.select(wal_status_0005).order_by(wal_status_0005.c.source)).all()
        assert "failures_total" not in columns
        assert [(r.source, r.last_segment) for r in kept] == [
            ("db", "000000010000000000000005"),
            ("files", "000000010000000000000009"),
            ("quiet", "000000010000000000000001"),
        ]
    finally:
        c.close()
