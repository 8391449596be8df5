"""last_backups reads newest first and stops early; these pin that it still finds what a full
read of every run and snapshot would."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from recoverctl.catalog import Catalog
from recoverctl.catalog import tables as t
from recoverctl.catalog.recovery import LastBackups, last_backups


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    return Catalog(f"sqlite:///{tmp_path / 'c.db'}")


def _runs(catalog: Catalog, *rows: dict[str, Any]) -> None:
    base = dict(kind="backup", source="db", status="succeeded", details=None)
    with catalog.begin() as conn:
        conn.execute(t.runs.insert(), [{**base, **r} for r in rows])


def _snapshots(catalog: Catalog, *rows: dict[str, Any]) -> None:
    base = dict(repository="file:///r", kind="files", source="db", tags=None, summary=None)
    with catalog.begin() as conn:
        conn.execute(t.snapshots.insert(), [{**base, "id": f"s{i}", **r} for i, r in enumerate(rows)])


def test_full_only_source_with_many_runs_finds_an_old_incremental(catalog: Catalog) -> None:
    _runs(catalog, dict(started_at=5.0, finished_at=6.0, details={"metadata": {"type": "incremental"}}))
    _runs(catalog, *(dict(started_at=100.0 + i, finished_at=100.5 + i) for i in range(300)))
    assert last_backups(catalog, "db") == LastBackups(full=399.5, incremental=6.0, any=399.5)


def test_an_older_long_run_that_finished_last_counts(catalog: Catalog) -> None:
    _runs(catalog, dict(started_at=1.0, finished_at=10_000.0, details={"type": "incremental"}))
    _runs(
        catalog,
        *(dict(started_at=100.0 + i, finished_at=100.5 + i, kind="backup-incremental") for i in range(200)),
    )
    _runs(catalog, dict(started_at=50.0, finished_at=60.0))
    assert last_backups(catalog, "db") == LastBackups(full=60.0, incremental=10_000.0, any=10_000.0)


def test_logical_dumps_failed_runs_and_other_sources_do_not_count(catalog: Catalog) -> None:
    _runs(
        catalog,
        *(dict(kind="backup-logical", started_at=1000.0 + i, finished_at=1001.0 + i) for i in range(100)),
        dict(started_at=2000.0, finished_at=2001.0, status="failed"),
        dict(started_at=3000.0, finished_at=3001.0, source="other"),
        dict(started_at=10.0, finished_at=11.0, status="partial"),
    )
    assert last_backups(catalog, "db") == LastBackups(full=11.0, incremental=None, any=11.0)


def test_snapshots_typed_by_summary_or_tags_newest_of_each(catalog: Catalog) -> None:
    _snapshots(
        catalog,
        dict(time=3.0, tags=["type=incremental"]),
        *(dict(time=10.0 + i, summary={"type": "full"}) for i in range(120)),
        dict(time=500.0, kind="logical"),
    )
    assert last_backups(catalog, "db") == LastBackups(full=129.0, incremental=3.0, any=129.0)


def test_runs_and_snapshots_merge(catalog: Catalog) -> None:
    _runs(catalog, dict(started_at=1.0, finished_at=2.0, details={"type": "incremental"}))
    _snapshots(catalog, dict(time=1.5, summary={"type": "full"}))
    assert last_backups(catalog, "db") == LastBackups(full=1.5, incremental=2.0, any=2.0)
    assert last_backups(catalog, "nothing") == LastBackups()
