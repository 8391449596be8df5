"""Which packs of a repository `verify` read, and when: so `--read-data-subset P%` rotates."""

from __future__ import annotations

import sqlalchemy as sa

from recoverctl.catalog import Catalog, now
from recoverctl.catalog import tables as t


def packs_by_verification_age(catalog: Catalog, repository: str) -> list[str]:
    """Given a repository URL, return its packs by last verification time, oldest first."""
    with catalog.begin() as conn:
        rows = conn.execute(
            sa.select(t.verified_packs.c.pack)
            .where(t.verified_packs.c.repository == repository)
            .order_by(t.verified_packs.c.verified_at)
        ).all()
    return [r[0] for r in rows]


def record_verified_packs(catalog: Catalog, repository: str, verified: dict[str, bool]) -> None:
    """Given pack id → whether it read back intact, record that each was verified now."""
    if not verified:
        return
    at = now()
    with catalog.begin() as conn:
        conn.execute(
            t.verified_packs.delete().where(
                t.verified_packs.c.repository == repository, t.verified_packs.c.pack.in_(list(verified))
            )
        )
        conn.execute(
            t.verified_packs.insert(),
            [
                {"repository": repository, "pack": p, "verified_at": at, "ok": ok}
                for p, ok in verified.items()
            ],
        )
