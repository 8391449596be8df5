"""The `catalog sync` use case: rebuild the catalog's snapshot rows from the repository."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from recoverctl.actions.operation import operation
from recoverctl.catalog import Catalog
from recoverctl.catalog.snapshot_sync import catalog_snapshot_ids, remove_snapshot_rows
from recoverctl.config import Config


@dataclass
class CatalogSync:
    """How the catalog's snapshot list changed to match the repository's."""

    repository: str
    snapshots: int
    added: int
    removed: int


def sync_catalog(cfg: Config, catalog: Catalog, password: str) -> CatalogSync:
    """Make the catalog list exactly the repository's snapshots; return counts added/removed."""
    with operation(cfg, password, "catalog-sync", recorder=catalog) as op:
        snaps = op.repo.list_snapshots()
        known = catalog_snapshot_ids(catalog, op.repo.url)
        ids = {s.id for s in snaps}
        stale = sorted(known - ids)
        remove_snapshot_rows(catalog, stale)
        for s in snaps:
            catalog.record_snapshot(op.repo.url, s)
        result = CatalogSync(op.repo.url, len(snaps), len(ids - known), len(stale))
        op.finish("succeeded", details=asdict(result))
    return result
