from __future__ import annotations

import pytest
import sqlalchemy as sa

from recoverctl.catalog import Catalog
from recoverctl.catalog import tables as t
from tests.fixtures.postgres import PgCluster


def _exercise(catalog: Catalog) -> None:
    info = catalog.info()
    assert info["revision"] == info["head"] == catalog.head_revision()
    assert set(info["tables"]) >= {
        "runs",
        "jobs",
        "releases",
        "drills",
        "alerts",
        "notifications",
        "audit_log",
    }
    run = catalog.start_run("backup", "main", "/repo")
    catalog.finish_run(run, "succeeded", bytes_read=10)
    catalog.audit("backup", "main", "succeeded", {"run": run})
    with catalog.begin() as conn:
        assert conn.execute(sa.select(t.runs.c.status).where(t.runs.c.id == run)).scalar_one() == "succeeded"
    # The audit log is append-only in the database itself.
    with pytest.raises(sa.exc.DatabaseError), catalog.begin() as conn:
        conn.execute(t.audit_log.delete())
    with catalog.begin() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(t.audit_log)).scalar_one() == 1


def test_catalog_migrates_on_sqlite(tmp_path) -> None:  # type: ignore[no-untyped-def]
    catalog = Catalog(f"sqlite:///{tmp_path / 'c.db'}")
    _exercise(catalog)
    # Opening again is a no-op migration.
    Catalog(f"sqlite:///{tmp_path / 'c.db'}").info()


def test_catalog_migrates_on_postgresql(pg: PgCluster) -> None:
    pg.psql("create database recoverctl")
    catalog = Catalog(pg.url("recoverctl"))
    _exercise(catalog)
    catalog.close()


def test_unreachable_catalog_is_a_clear_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from recoverctl.errors import CatalogError

    with pytest.raises(CatalogError, match="unable to open catalog"):
        Catalog("postgresql+psycopg://nobody@127.0.0.1:1/none")
