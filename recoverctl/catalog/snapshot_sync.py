"""The catalog's copy of the repository's snapshot list, kept in step by `forget` and `catalog sync`.

The repository is the source of truth; these rows are the catalog's cache of it. Reads for
reports live elsewhere; this module only compares and removes rows.
"""

from __future__ import annotations

from collections.abc import Collection

from recoverctl.catalog import Catalog
from recoverctl.catalog import tables as t


def catalog_snapshot_ids(catalog: Catalog, repository: str) -> set[str]:
    """Given a repository URL, return the ids of the snapshots the catalog lists for it."""
    with catalog.begin() as conn:
        return {
            r[0]
            for r in conn.execute(
                t.snapshots.select()
                .with_only_columns(t.snapshots.c.id)
                .where(t.snapshots.c.repository == repository)
            )
        }


def remove_snapshot_rows(catalog: Catalog, ids: Collection[str]) -> None:
    """Given snapshot ids (gone from the repository), remove their catalog rows."""
    if not ids:
        return
    with catalog.begin() as conn:
        conn.execute(t.snapshots.delete().where(t.snapshots.c.id.in_(list(ids))))
