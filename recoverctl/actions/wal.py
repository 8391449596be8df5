"""`wal push` / `wal fetch` / `wal expire`: the WAL archive's use cases.

push and fetch run once per WAL file inside the server (archive_command, restore_command), so
this module imports only what they need; the mechanics are in sources/postgres/walpush.py and
sources/postgres/walarchive.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recoverctl.config import Config
from recoverctl.sources.postgres.walresults import WalExpiry, WalFetch, WalPush


@dataclass(frozen=True)
class WalExpire:
    """What `wal expire` removed (or, with dry_run, would remove), per postgres source."""

    dry_run: bool
    sources: list[WalExpiry]

    def to_json(self) -> dict[str, Any]:
        return {"dry_run": self.dry_run, "sources": [s.to_json() for s in self.sources]}


def wal_push(cfg: Config, password: str, *, source: str | None, path: Path, detach: bool = False) -> WalPush:
    """archive_command: store WAL file `path` for `source`; return the outcome.

    Relative paths are taken from the server's data directory (PostgreSQL runs archive_command
    there). Other ready WAL files are pushed in the same call, or with `detach` (the
    archive_command entry point) by a detached pusher process after this call returns. Raise
    UsageError for a non-WAL name, VerificationError for a conflicting copy.
    """
    from recoverctl.sources.postgres.walpush import push_wal

    name, _src = cfg.source(source, "postgres")
    return push_wal(cfg, password, name, path, detach=detach)


def wal_fetch(cfg: Config, password: str, *, source: str | None, name: str, dest: Path) -> WalFetch:
    """restore_command: write WAL file `name` of `source` to `dest`; return what was written.

    Raise NotFoundError (and write nothing) when the archive does not have it, which PostgreSQL
    reads as "end of archive".
    """
    from recoverctl.sources.postgres.walarchive import fetch_wal

    src_name, _src = cfg.source(source, "postgres")
    return fetch_wal(cfg, password, src_name, name, dest)


def expire_wal(cfg: Config, password: str, *, source: str | None = None, dry_run: bool = False) -> WalExpire:
    """Delete archived WAL older than what the oldest kept physical backup needs; return per source
    what was (or would be) removed. `prune` runs the same step under its exclusive lock.
    """
    from recoverctl.repo.configured import open_repository
    from recoverctl.sources.postgres.walarchive import expire_wal_locked

    names = [cfg.source(source, "postgres")[0]] if source else postgres_sources(cfg)
    with open_repository(cfg, password) as repo, repo.lock(operation="wal expire"):
        out = expire_wal_locked(repo, names, dry_run=dry_run)
    return WalExpire(dry_run, out)


def postgres_sources(cfg: Config) -> list[str]:
    """Given the config, return the names of its postgres sources."""
    return [n for n, s in cfg.sources.items() if s.type == "postgres"]
