"""Open or create the configured repository, and the key-slot use cases (`init`, `key ...`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from recoverctl.config import Config, RepositoryConfig
from recoverctl.errors import ObjectNotFound
from recoverctl.repo import Repository
from recoverctl.repo.configured import open_repository
from recoverctl.storage import open_storage

if TYPE_CHECKING:
    from recoverctl.catalog import Catalog


def _options(cfg: Config | RepositoryConfig) -> RepositoryConfig:
    return cfg.require_repository() if isinstance(cfg, Config) else cfg


def init_repository(cfg: Config, password: str, catalog: Catalog | None = None) -> dict[str, Any]:
    """Create the configured repository; return its id, URL and key id; raise UsageError if one exists."""
    o = _options(cfg)
    storage = open_storage(o.url, o)
    try:
        repo = Repository.init(
            storage,
            password,
            compression_level=o.compression_level,
            pack_size_mib=o.pack_size_mib,
            parallelism=o.parallelism,
        )
    finally:
        storage.close()
    if catalog is not None:
        catalog.audit("repository.init", storage.url, "succeeded", {"repository_id": repo.id})
    return {"url": storage.url, "id": repo.id, "version": repo.config["version"], "key": repo.key_id}


def list_keys(cfg: Config, password: str) -> list[dict[str, Any]]:
    repo = open_repository(cfg, password)
    try:
        return repo.list_keys()
    finally:
        repo.close()


def add_key(cfg: Config, password: str, new_password: str, catalog: Catalog) -> dict[str, Any]:
    """Add a key slot for `new_password`; return its id."""
    repo = open_repository(cfg, password)
    try:
        kid = repo.add_key(new_password)
    finally:
        repo.close()
    catalog.audit("key.add", repo.url, "succeeded", {"key": kid})
    return {"added": kid}


def remove_key(cfg: Config, password: str, key_id: str, catalog: Catalog) -> dict[str, Any]:
    """Remove a key slot under an exclusive lock; refuse the last one (UsageError)."""
    repo = open_repository(cfg, password)
    try:
        with repo.lock(exclusive=True, operation="key remove"):
            kid = repo.remove_key(key_id)
    finally:
        repo.close()
    catalog.audit("key.remove", repo.url, "succeeded", {"key": kid})
    return {"removed": kid}


def change_password(cfg: Config, password: str, new_password: str, catalog: Catalog) -> dict[str, Any]:
    """Rewrap the master key under a new passphrase (data is not re-encrypted)."""
    repo = open_repository(cfg, password)
    old = repo.key_id
    try:
        new = repo.change_password(new_password)
    finally:
        repo.close()
    catalog.audit("key.passwd", repo.url, "succeeded", {"old_key": old, "new_key": new})
    return {"old_key": old, "new_key": new}


def upgrade_repository(
    cfg: Config, password: str, catalog: Catalog, *, dry_run: bool = False
) -> dict[str, Any]:
    """Move the repository to the current format version under an exclusive lock; return what
    changed (see Repository.upgrade). Raise UsageError for a key file that is not a usable slot."""
    repo = open_repository(cfg, password)
    try:
        if dry_run:
            return repo.upgrade(dry_run=True)
        with repo.lock(exclusive=True, operation="repair upgrade"):
            result = repo.upgrade()
    finally:
        repo.close()
    catalog.audit("repository.upgrade", repo.url, "succeeded", result)
    return result


def repository_exists(cfg: Config) -> bool:
    o = _options(cfg)
    storage = open_storage(o.url, o)
    try:
        storage.stat("config")
        return True
    except ObjectNotFound:
        return False
    finally:
        storage.close()
