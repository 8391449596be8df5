"""Open the repository a config names: its storage backend plus the repository options.

Kept free of the catalog (SQLAlchemy) so `recoverctl-wal` and the WAL fetcher start fast.
"""

from __future__ import annotations

from recoverctl.config import Config, RepositoryConfig
from recoverctl.repo.repository import Repository
from recoverctl.storage import open_storage


def open_repository(cfg: Config | RepositoryConfig, password: str) -> Repository:
    """Given the config (or its repository section) and passphrase, return the opened repository.

    Raise NotFoundError (no repository), WrongKeyError (passphrase), StorageError (backend).
    """
    o = cfg.require_repository() if isinstance(cfg, Config) else cfg
    storage = open_storage(o.url, o)
    try:
        return Repository.open(
            storage,
            password,
            compression_level=o.compression_level,
            pack_size_mib=o.pack_size_mib,
            parallelism=o.parallelism,
        )
    except BaseException:
        storage.close()
        raise


def open_named_repository(cfg: Config, name: str | None, password: str) -> Repository:
    """Given the config, a repository name from `repositories:` (None = the primary) and its
    passphrase, return it opened; raise ConfigError for an unknown name, then as `open_repository`."""
    return open_repository(cfg.named_repository(name), password)
