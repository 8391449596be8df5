"""The `catalog sync` use case: rebuild the catalog's snapshot rows from the repository."""

from __future__ import annotations

from typing import Any

from recoverctl.actions.repository import open_repository
from recoverctl.catalog import Catalog
from recoverctl.catalog import tables as t
from recoverctl.config import Config
from recoverctl.recorder import record_failed_run


def sync_catalog(cfg: Config, catalog: Catalog, password: str) -> dict[str, Any]:
    """Make the catalog list exactly the repository's snapshots; return counts added/removed."""
    repo = open_repository(cfg, password)
    run_id = catalog.start_run("catalog-sync", None, repo.url)
    try:
        snaps = repo.list_snapshots()
        with catalog.begin() as conn:
            known = {
                r[0]
                for r in conn.execute(
                    t.snapshots.select()
                    .with_only_columns(t.snapshots.c.id)
                    .where(t.snapshots.c.repository == repo.url)
                )
            }
            ids = {s.id for s in snaps}
            stale = sorted(known - ids)
            if stale:
                conn.execute(t.snapshots.delete().where(t.snapshots.c.id.in_(stale)))
        for s in snaps:
            catalog.record_snapshot(repo.url, s)
    except BaseException as e:
        record_failed_run(catalog, run_id, e)
        raise
    finally:
        repo.close()
    result = {
        "repository": repo.url,
        "snapshots": len(snaps),
        "added": len(ids - known),
        "removed": len(stale),
    }
    catalog.finish_run(run_id, "succeeded", details=result)
    return result
