"""What the catalog says retention must keep: pins on snapshots (releases, running drills)."""

from __future__ import annotations

import time

import sqlalchemy as sa

from recoverctl.catalog import Catalog
from recoverctl.catalog import tables as t


def pinned_snapshots(catalog: Catalog) -> dict[str, str]:
    """Return snapshot id (or unique prefix) → reason for every unexpired pin."""
    at = time.time()
    with catalog.begin() as conn:
        rows = conn.execute(
            sa.select(t.pins.c.snapshot_id, t.pins.c.reason, t.pins.c.owner).where(
                sa.or_(t.pins.c.expires_at.is_(None), t.pins.c.expires_at > at)
            )
        ).all()
    return {r.snapshot_id: f"{r.reason}" + (f" ({r.owner})" if r.owner else "") for r in rows}
