"""The `unlock` use case: remove stale (or all) repository locks."""

from __future__ import annotations

from typing import Any

from recoverctl.actions.repository import open_repository
from recoverctl.catalog import Catalog
from recoverctl.config import Config
from recoverctl.repo.locks import unlock


def unlock_repository(cfg: Config, password: str, remove_all: bool, catalog: Catalog) -> list[dict[str, Any]]:
    """Return the locks removed; only stale ones unless `remove_all`."""
    repo = open_repository(cfg, password)
    try:
        removed = unlock(repo.storage, remove_all)
    finally:
        repo.close()
    catalog.audit("repository.unlock", repo.url, "succeeded", {"removed": removed, "all": remove_all})
    return removed
