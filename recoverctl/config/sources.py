"""The `targets:` (RTO/RPO per tier) and `sources:` sections: what is backed up, and how fast it
must come back."""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import (
    Field,
    SecretStr,
    model_validator,
)

from recoverctl.config.base import Duration, Model

# --- targets (RTO/RPO per tier) -------------------------------------------------------------------

Tier = Literal["critical", "non-critical"]


# The shortest archive_timeout `postgres setup` sets: below a minute every idle period costs one
# 16 MiB segment per timeout (PostgreSQL's docs warn against very short values). So archive mode
# cannot keep an RPO target under it.
ARCHIVE_TIMEOUT_MIN_S = 60


class TierTargets(Model):
    rto: Duration
    rpo: Duration


class Targets(Model):
    critical: TierTargets = Field(default_factory=lambda: TierTargets(rto=7200, rpo=3600))
    non_critical: TierTargets = Field(
        default_factory=lambda: TierTargets(rto=86400, rpo=86400), alias="non-critical"
    )

    def for_tier(self, tier: Tier) -> TierTargets:
        return self.critical if tier == "critical" else self.non_critical


# --- sources --------------------------------------------------------------------------------------


class SourceWal(Model):
    """`sources.<name>.wal`: how WAL leaves the server. `archive` (the default) relies on
    archive_command alone; `stream` adds `recoverctl wal stream`, a supervised pg_receivewal on a
    replication slot that uploads the segment being written every `flush_interval`."""

    mode: Literal["archive", "stream"] = "archive"
    flush_interval: Duration = 2.0
    # Physical replication slot the receiver streams from (created when missing);
    # default recoverctl_<source>.
    slot: str | None = Field(default=None, pattern=r"^[a-z0-9_]{1,63}$")
    # Private directory pg_receivewal writes into; default <data home>/recoverctl/wal-stream/<source>.
    spool_dir: str | None = None
    # Warn (and raise an alert event) when the slot retains this share of max_slot_wal_keep_size.
    slot_warn_ratio: float = Field(default=0.8, gt=0, le=1)


class PostgresStandby(Model):
    """`sources.<name>.standby`: the streaming standby `backup_from: standby` copies the data files
    from. Connection keys left out are the source's own (user, dbname, password); `data_dir` is the
    standby's data directory as readable on the host recoverctl runs on (default: the standby's
    `data_directory`)."""

    host: str
    port: int = 5432
    user: str | None = None
    dbname: str | None = None
    password: SecretStr | None = None
    password_file: str | None = None
    data_dir: str | None = None
    # How long the backup waits without replay progress for the standby to reach the backup's
    # start LSN (the timer restarts whenever replay moves, as pgBackRest's does).
    replay_wait: Duration = 600.0


class PostgresSource(Model):
    type: Literal["postgres"]
    host: str = "/var/run/postgresql"
    port: int = 5432
    user: str = "postgres"
    dbname: str = "postgres"
    password: SecretStr | None = None
    password_file: str | None = None
    data_dir: str | None = None
    bin_dir: str | None = None
    tier: Tier = "critical"
    os_user: str | None = None
    count_tables: list[str] = Field(default_factory=list)
    # How long a backup waits for its last WAL segment to reach the repository.
    wal_wait: Duration = 120.0
    # Databases `backup postgres --logical` dumps when --database is not given (default: dbname).
    logical_databases: list[str] = Field(default_factory=list)
    wal: SourceWal = Field(default_factory=SourceWal)
    # Where a physical backup reads the data files: the primary itself, or `standby` (the primary
    # then only runs pg_backup_start/pg_backup_stop and its WAL switch).
    backup_from: Literal["primary", "standby"] = "primary"
    # Incrementals read only the chunks the WAL names (`on`), read modified files whole (`off`),
    # or choose per backup by how much WAL there is to decode against what changed (`auto`).
    page_incremental: Literal["auto", "on", "off"] = "auto"
    standby: PostgresStandby | None = None

    @model_validator(mode="after")
    def _standby_configured(self) -> PostgresSource:
        if self.backup_from == "standby" and self.standby is None:
            raise ValueError("backup_from: standby needs a 'standby:' section (host, port, data_dir)")
        return self


class FilesSource(Model):
    type: Literal["files"]
    paths: list[str]
    exclude: list[str] = Field(default_factory=list)
    one_file_system: bool = False
    tier: Tier = "non-critical"


class VolumeSource(Model):
    type: Literal["volume"]
    volume: str
    stop_containers: bool = False
    tier: Tier = "non-critical"


Source = Annotated[Union[PostgresSource, FilesSource, VolumeSource], Field(discriminator="type")]  # noqa: UP007
