"""Open or create the configured repository, and the key-slot use cases (`init`, `key ...`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from recoverctl.config import Config, RepositoryConfig
from recoverctl.errors import ObjectNotFound
from recoverctl.repo import Repository
from recoverctl.repo.configured import open_repository
from recoverctl.repo.repository import FormatUpgrade
from recoverctl.storage import open_storage

if TYPE_CHECKING:
    from recoverctl.catalog import Catalog

__all__ = [
    "FormatUpgrade",
    "KeyAdded",
    "KeyRemoved",
    "KeySlotInfo",
    "NewRepository",
    "PasswordChanged",
    "add_key",
    "change_password",
    "init_repository",
    "list_keys",
    "open_repository",
    "remove_key",
    "repository_exists",
    "upgrade_repository",
]


@dataclass
class NewRepository:
    """The repository `init` created: where, its id, format version and first key slot."""

    url: str
    id: str
    version: int
    key: str


@dataclass
class KeySlotInfo:
    """One key file: who created it when, with which KDF; `problem` says why it is not usable."""

    id: str
    current: bool
    problem: str | None
    hostname: str | None
    username: str | None
    created: float | None
    kdf: dict[str, Any] | None


@dataclass
class KeyAdded:
    added: str


@dataclass
class KeyRemoved:
    removed: str


@dataclass
class PasswordChanged:
    old_key: str
    new_key: str


def _options(cfg: Config | RepositoryConfig) -> RepositoryConfig:
    return cfg.require_repository() if isinstance(cfg, Config) else cfg


def init_repository(cfg: Config, password: str, catalog: Catalog | None = None) -> NewRepository:
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
    return NewRepository(storage.url, repo.id, repo.config["version"], repo.key_id)


def list_keys(cfg: Config, password: str) -> list[KeySlotInfo]:
    """Return the repository's key files; `current` marks the one that opened it."""
    with open_repository(cfg, password) as repo:
        return [KeySlotInfo(**row) for row in repo.list_keys()]


def add_key(cfg: Config, password: str, new_password: str, catalog: Catalog) -> KeyAdded:
    """Add a key slot for `new_password`; return its id."""
    with open_repository(cfg, password) as repo:
        kid = repo.add_key(new_password)
    catalog.audit("key.add", repo.url, "succeeded", {"key": kid})
    return KeyAdded(kid)


def remove_key(cfg: Config, password: str, key_id: str, catalog: Catalog) -> KeyRemoved:
    """Remove a key slot under an exclusive lock; refuse the last one (UsageError)."""
    with open_repository(cfg, password) as repo, repo.lock(exclusive=True, operation="key remove"):
        kid = repo.remove_key(key_id)
    catalog.audit("key.remove", repo.url, "succeeded", {"key": kid})
    return KeyRemoved(kid)


def change_password(cfg: Config, password: str, new_password: str, catalog: Catalog) -> PasswordChanged:
    """Rewrap the master key under a new passphrase (data is not re-encrypted)."""
    with open_repository(cfg, password) as repo:
        old = repo.key_id
        new = repo.change_password(new_password)
    catalog.audit("key.passwd", repo.url, "succeeded", {"old_key": old, "new_key": new})
    return PasswordChanged(old, new)


def upgrade_repository(
    cfg: Config, password: str, catalog: Catalog, *, dry_run: bool = False
) -> FormatUpgrade:
    """Move the repository to the current format version under an exclusive lock; return what
    changed (see Repository.upgrade). Raise UsageError for a key file that is not a usable slot."""
    with open_repository(cfg, password) as repo:
        if dry_run:
            return repo.upgrade(dry_run=True)
        with repo.lock(exclusive=True, operation="repair upgrade"):
            result = repo.upgrade()
    catalog.audit("repository.upgrade", repo.url, "succeeded", asdict(result))
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
