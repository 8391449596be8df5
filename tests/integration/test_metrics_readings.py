"""The verify readings /metrics takes from the catalog pick one row per repository in SQL: the
same answers on SQLite and on a PostgreSQL catalog (JSON extraction differs between them)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from recoverctl.catalog import Catalog
from recoverctl.catalog import tables as t
from recoverctl.catalog.metrics_readings import (
    RepositorySize,
    VerifyReading,
    repository_sizes,
    verify_readings,
)
from tests.fixtures.postgres import PgCluster

pytestmark = pytest.mark.integration


@pytest.fixture(params=["sqlite", "postgresql"])
def catalog(request: pytest.FixtureRequest, tmp_path: Path, pg_factory: Callable[..., PgCluster]) -> Catalog:
    if request.param == "sqlite":
        return Catalog(f"sqlite:///{tmp_path / 'c.db'}")
    pg = pg_factory()
    pg.psql("create database recoverctl")
    return Catalog(pg.url("recoverctl"))


def _verify(repository: str, at: float, status: str = "succeeded", **details: Any) -> dict[str, Any]:
    return dict(
        kind="verify",
        repository=repository,
        started_at=at - 5,
        finished_at=None if status == "running" else at,
        status=status,
        details=details or None,
    )


def test_newest_verify_and_size_per_repository(catalog: Catalog) -> None:
    usage = {"bytes": 900, "objects": 7, "by_prefix": {"data": 800}}
    rows = [
        _verify("file:///a", 100.0, repository_bytes=500, usage={**usage, "objects": 3}),
        _verify("file:///a", 200.0, repository_bytes=900, usage=usage),
        # A failed verify measured the size too; it is the newest outcome.
        _verify("file:///a", 300.0, "failed", repository_bytes=950),
        # Still running: neither its outcome nor its (absent) size counts.
        _verify("file:///a", 400.0, "running"),
        # An older release recorded no size: the newest verify that did gives it.
        _verify("file:///b", 150.0, repository_bytes=10.0),
        _verify("file:///b", 250.0, packs_total=4),
        {**_verify("file:///c", 2.0), "kind": "backup"},
    ]
    with catalog.begin() as conn:
        conn.execute(t.runs.insert(), rows)
    assert verify_readings(catalog) == [
        VerifyReading("file:///a", 300.0, False, 200.0),
        VerifyReading("file:///b", 250.0, True, 250.0),
    ]
    assert repository_sizes(catalog) == [
        RepositorySize("file:///a", 950, None, 300.0),
        RepositorySize("file:///b", 10, None, 150.0),
    ]
    catalog.close()
