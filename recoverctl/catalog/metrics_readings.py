"""What `/metrics` reads of the verify history: per repository, the newest verify, the newest
one that succeeded, and the size the newest measuring verify recorded.

`verify` records the repository's size in its run details (`repository_bytes`, see
actions/usage.py); these reads pick one row per repository in SQL, so a scrape costs the same
after years of daily verifies.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from recoverctl.catalog import Catalog
from recoverctl.catalog import tables as t


@dataclass(frozen=True)
class VerifyReading:
    """One repository's verify history as `/metrics` shows it."""

    repository: str
    last_finished_at: float  # the newest finished verify, whatever its outcome
    last_succeeded: bool  # whether that verify found the repository intact
    last_success_at: float | None  # when the newest succeeded verify finished


@dataclass(frozen=True)
class RepositorySize:
    """The size of one repository as the newest verify that measured it recorded."""

    repository: str
    bytes: int
    objects: int | None
    measured_at: float


def _finished_verifies() -> sa.Select[Any]:
    return sa.select(sa.func.max(t.runs.c.id)).where(
        t.runs.c.kind == "verify",
        t.runs.c.status != "running",
        t.runs.c.repository.is_not(None),
        t.runs.c.finished_at.is_not(None),
    )


def verify_readings(catalog: Catalog) -> list[VerifyReading]:
    """Return, per repository that was ever verified, its newest verify's outcome and when the
    newest succeeded verify finished, ordered by repository."""
    newest = _finished_verifies().group_by(t.runs.c.repository).scalar_subquery()
    succeeded = (
        sa.select(t.runs.c.repository, sa.func.max(t.runs.c.finished_at))
        .where(t.runs.c.kind == "verify", t.runs.c.status == "succeeded")
        .group_by(t.runs.c.repository)
    )
    latest = sa.select(t.runs.c.repository, t.runs.c.finished_at, t.runs.c.status).where(
        t.runs.c.id.in_(newest)
    )
    with catalog.begin() as conn:
        success_at = {repo: at for repo, at in conn.execute(succeeded).all()}
        rows = conn.execute(latest).all()
    return sorted(
        (
            VerifyReading(repo, finished, status == "succeeded", success_at.get(repo))
            for repo, finished, status in rows
        ),
        key=lambda r: r.repository,
    )


def repository_sizes(catalog: Catalog) -> list[RepositorySize]:
    """Return, per repository, the size (bytes, objects) the newest verify that measured it
    recorded, and when that verify finished; ordered by repository."""
    size = t.runs.c.details["repository_bytes"].as_float()
    newest = _finished_verifies().where(size.is_not(None)).group_by(t.runs.c.repository).scalar_subquery()
    q = sa.select(t.runs.c.repository, t.runs.c.finished_at, t.runs.c.details).where(t.runs.c.id.in_(newest))
    with catalog.begin() as conn:
        rows = conn.execute(q).all()
    out = []
    for repo, finished, details in rows:
        usage = details.get("usage") if isinstance(details.get("usage"), dict) else {}
        objects = usage.get("objects")
        out.append(
            RepositorySize(
                repo,
                int(details["repository_bytes"]),
                int(objects) if isinstance(objects, int | float) else None,
                finished,
            )
        )
    return sorted(out, key=lambda r: r.repository)
