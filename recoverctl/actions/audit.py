"""Use case: read the audit log (`recoverctl audit`): who did what, to which target, when."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from recoverctl.catalog import Catalog
from recoverctl.catalog.events import AuditEntry, audit_entries


@dataclass(frozen=True)
class AuditLog:
    """The audit entries asked for, oldest first, and the filters that chose them."""

    since: float | None
    kind: str | None
    entries: list[AuditEntry]


def entry_json(e: AuditEntry) -> dict[str, Any]:
    """Return one entry as its JSON line carries it."""
    return {
        "id": e.id,
        "at": e.at,
        "actor": e.actor,
        "action": e.action,
        "target": e.target,
        "outcome": e.outcome,
        "details": e.details or {},
    }


def read_audit_log(
    catalog: Catalog, *, since: float | None, kind: str | None, limit: int | None = None
) -> AuditLog:
    """Return the audit entries at or after `since` (Unix seconds) whose action is `kind` or
    under it, the newest `limit` of them, oldest first; raise CatalogError when unreachable."""
    return AuditLog(since, kind, audit_entries(catalog, since=since, action=kind, limit=limit))
