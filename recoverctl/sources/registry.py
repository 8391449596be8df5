"""Which Source a configured source name is: one line per kind, so use cases and the drill
engine never branch on the kind."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from recoverctl.config import Config
from recoverctl.config import VolumeSource as VolumeConfig
from recoverctl.sources.base import Source
from recoverctl.sources.files import FilesSource, SnapshotChoice

if TYPE_CHECKING:
    from recoverctl.catalog import Catalog


def _postgres(
    cfg: Config, name: str, catalog: Catalog | None, password: str, _f: SnapshotChoice | None
) -> Source:
    from recoverctl.sources.postgres.cluster import PostgresCluster  # psycopg: only when used

    return PostgresCluster(cfg, name, catalog, password)


def _files(
    cfg: Config, name: str, _c: Catalog | None, _p: str, snapshot_filter: SnapshotChoice | None
) -> Source:
    return FilesSource(name, snapshot_filter)


def _volume(
    cfg: Config, name: str, _c: Catalog | None, _p: str, snapshot_filter: SnapshotChoice | None
) -> Source:
    from recoverctl.sources.volume import VolumeSource

    _, src = cfg.source(name, "volume")
    assert isinstance(src, VolumeConfig)
    return VolumeSource(name, src.volume, snapshot_filter)


KINDS: dict[str, Callable[[Config, str, Catalog | None, str, SnapshotChoice | None], Source]] = {
    "postgres": _postgres,
    "files": _files,
    "volume": _volume,
}


def source_for(
    cfg: Config,
    name: str,
    catalog: Catalog | None,
    password: str,
    snapshot_filter: SnapshotChoice | None = None,
) -> Source:
    """Return the Source for the configured source `name` (files/volume snapshots narrowed by
    `snapshot_filter`); raise ConfigError for a name the config does not have. A backup passes
    no `catalog`: only restores read it (PostgreSQL restore point names)."""
    kind = cfg.source(name)[1].type
    return KINDS[kind](cfg, name, catalog, password, snapshot_filter)
