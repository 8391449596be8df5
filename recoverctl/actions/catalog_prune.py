"""Use case: delete the catalog's old history rows (`recoverctl catalog prune`, scheduled daily)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from recoverctl.catalog import Catalog
from recoverctl.catalog.history_retention import HistoryCutoffs, PrunedHistory, prune_history
from recoverctl.config import Config


@dataclass(frozen=True)
class CatalogPruned:
    """What `catalog prune` deleted (or would): rows per table, and the cutoff of each group
    (Unix seconds; None where the group is kept whole)."""

    dry_run: bool
    cutoffs: HistoryCutoffs
    deleted: PrunedHistory


def _cutoff(now: float, keep: float | None) -> float | None:
    return None if keep is None else now - keep


def prune_catalog(cfg: Config, catalog: Catalog, *, dry_run: bool, now: float | None = None) -> CatalogPruned:
    """Delete the events, alerts, notification rows and ended WAL outages older than
    `catalog.retention` that nothing holds; audit what went. Return the counts; raise
    CatalogError when unreachable."""
    now = time.time() if now is None else now
    keep = cfg.catalog_retention
    cuts = HistoryCutoffs(
        events=_cutoff(now, keep.events),
        alerts=_cutoff(now, keep.alerts),
        notifications=_cutoff(now, keep.notifications),
        wal_outages=_cutoff(now, keep.wal_outages),
    )
    deleted = prune_history(catalog, cuts, dry_run=dry_run)
    if not dry_run:
        catalog.audit("catalog.prune", catalog.display_url, "succeeded", {"deleted": vars(deleted)})
    return CatalogPruned(dry_run, cuts, deleted)
