"""The `unlock` use case: remove stale (or all) repository locks."""

from __future__ import annotations

from dataclasses import asdict

from recoverctl.catalog import Catalog
from recoverctl.config import Config
from recoverctl.repo.configured import open_repository
from recoverctl.repo.locks import RemovedLock, unlock


def unlock_repository(cfg: Config, password: str, remove_all: bool, catalog: Catalog) -> list[RemovedLock]:
    """Return the locks removed ; only stale ones unless `remove_all`."""
    with open_repository(cfg, password) as repo:
        removed = unlock(repo.storage, remove_all)
    catalog.audit(
        "repository.unlock",
        repo.url,
        "succeeded",
        {"removed": [asdict(r) for r in removed], "all": remove_all},
    )
    return removed
