"""The `targets:` (RTO/RPO per tier) and `sources:` sections: what is backed up, and how fast it
must come back."""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import (
    Field,
    SecretStr,
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
