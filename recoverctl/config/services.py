"""The `services:` section: deployment targets (docker, ssh) with health checks and databases."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import (
    Field,
    SecretStr,
)

from recoverctl.config.base import Duration, Model
from recoverctl.config.sources import Tier


class HealthPolicy(Model):
    url: str | None = None
    path: str = "/health"
    expect_status: int = 200
    expect_json: dict[str, Any] = Field(default_factory=dict)
    successes: int = 3
    interval: Duration = 1.0
    timeout: Duration = 60.0
    request_timeout: Duration = 2.0


class DatabaseLink(Model):
    source: str
    alembic_config: str | None = None
    # May contain {version}: the migration scripts shipped with that release.
    script_location: str | None = None
    url: SecretStr | None = None
    dbname: str | None = None
    restore_point: bool = True
    migrate: bool = True


class ServiceRetry(Model):
    """How long a deploy or rollback step rides out an unreachable engine, host or catalog."""

    # Per operation: a Docker engine restart takes a few seconds, a host reboot about a minute.
    window: Duration = Field(default=60.0, ge=0)
    initial: Duration = 0.5
    maximum: Duration = 5.0


class DockerService(Model):
    target: Literal["docker"]
    image: str
    container: str
    docker_host: str | None = None
    ports: dict[str, int | str] = Field(default_factory=dict)
    env: dict[str, str] = Field(default_factory=dict)
    env_files: list[str] = Field(default_factory=list)
    volumes: list[str] = Field(default_factory=list)
    network_mode: str | None = None
    command: list[str] | str | None = None
    restart_policy: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    health: HealthPolicy = Field(default_factory=HealthPolicy)
    tier: Tier = "critical"
    database: DatabaseLink | None = None
    keep_releases: int = 5
    stop_timeout: Duration = 10.0
    retry: ServiceRetry = Field(default_factory=ServiceRetry)


class SshHost(Model):
    host: str
    port: int = 22
    user: str | None = None
    key_file: str | None = None
    health_url: str | None = None
    # Per-host layout, for fleets whose hosts differ (defaults: the service's).
    releases_dir: str | None = None
    current_link: str | None = None


class SshService(Model):
    target: Literal["ssh"]
    hosts: list[SshHost | str]
    user: str | None = None
    key_file: str | None = None
    known_hosts: str | None = None
    insecure_accept_new_host_keys: bool = False
    releases_dir: str
    current_link: str | None = None
    artifact: str | None = None
    fetch_command: str | None = None
    restart_command: str | None = None
    stop_command: str | None = None
    health: HealthPolicy = Field(default_factory=HealthPolicy)
    tier: Tier = "critical"
    database: DatabaseLink | None = None
    keep_releases: int = 5
    connect_timeout: Duration = 10.0
    retry: ServiceRetry = Field(default_factory=ServiceRetry)


Service = Annotated[Union[DockerService, SshService], Field(discriminator="target")]  # noqa: UP007
