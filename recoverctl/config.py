"""Typed configuration: file discovery, ${VAR} expansion, environment overrides, secret redaction.

The top-level keys ``repository``, ``catalog``, ``sources``, ``services``, ``schedules``,
``notifications``, ``policies``, ``targets``, ``serve`` and ``retention`` and the variables
``RECOVERCTL_REPOSITORY``, ``RECOVERCTL_PASSWORD`` / ``RECOVERCTL_PASSWORD_FILE`` and
``RECOVERCTL_CATALOG`` are a contract: later changes are additive only.
"""

from __future__ import annotations

import difflib
import os
import re
import stat
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from recoverctl.errors import ConfigError

ENV_CONFIG = "RECOVERCTL_CONFIG"
ENV_REPOSITORY = "RECOVERCTL_REPOSITORY"
ENV_PASSWORD = "RECOVERCTL_PASSWORD"
ENV_PASSWORD_FILE = "RECOVERCTL_PASSWORD_FILE"
ENV_CATALOG = "RECOVERCTL_CATALOG"

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_E164_RE = re.compile(r"^\+[1-9]\d{1,14}$")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}


def parse_duration(value: object) -> float:
    """Given '0.2s', '10m', '2h', '7d' or a number of seconds, return seconds; raise ValueError."""
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        m = _DURATION_RE.match(value)
        if m:
            return float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    raise ValueError(f"not a duration: {value!r} (use e.g. 30s, 10m, 2h, 7d)")


Duration = Annotated[float, BeforeValidator(parse_duration)]


class Model(BaseModel):
    """Base for every config section: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


# --- repository -----------------------------------------------------------------------------------


class S3Options(Model):
    endpoint_url: str | None = None
    region: str | None = None
    path_style: bool = False
    storage_class: str | None = None
    sse: Literal["AES256", "aws:kms"] | None = None
    kms_key_id: str | None = None
    object_lock_mode: Literal["GOVERNANCE", "COMPLIANCE"] | None = None
    object_lock_days: int | None = None
    access_key_id: str | None = None
    secret_access_key: SecretStr | None = None
    # The same keys read from files when the repository is opened (first line, stripped), so
    # the config file itself need not hold them.
    access_key_id_file: str | None = None
    secret_access_key_file: str | None = None
    multipart_threshold_mib: int = 64
    multipart_chunk_mib: int = 16
    max_concurrency: int = 8
    connect_timeout: Duration = 10.0
    read_timeout: Duration = 60.0

    @model_validator(mode="after")
    def _one_place_per_key(self) -> S3Options:
        for key in ("access_key_id", "secret_access_key"):
            if getattr(self, key) is not None and getattr(self, f"{key}_file"):
                raise ValueError(f"set {key} or {key}_file, not both")
        return self


class SftpOptions(Model):
    key_file: str | None = None
    known_hosts: str | None = None
    insecure_accept_new_host_keys: bool = False
    timeout: Duration = 15.0
    connections: int = 4


class RetryOptions(Model):
    attempts: int = 6
    max_seconds: Duration = 120.0
    initial: Duration = 0.2
    maximum: Duration = 10.0


class RepositoryConfig(Model):
    url: str
    password_file: str | None = None
    compression_level: int = 3
    pack_size_mib: int = 16
    parallelism: int = 4
    s3: S3Options = Field(default_factory=S3Options)
    sftp: SftpOptions = Field(default_factory=SftpOptions)
    retry: RetryOptions = Field(default_factory=RetryOptions)


def _repository_from_str(value: object) -> object:
    return {"url": value} if isinstance(value, str) else value


# --- targets (RTO/RPO per tier) -------------------------------------------------------------------

Tier = Literal["critical", "non-critical"]


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


# --- services -------------------------------------------------------------------------------------


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


# --- schedules ------------------------------------------------------------------------------------


class Schedule(Model):
    name: str
    cron: str
    job: str
    timezone: str = "UTC"
    jitter: Duration = 0.0
    timeout: Duration = 6 * 3600.0
    catch_up: Literal["once", "skip"] = "once"
    overlap: Literal["skip"] = "skip"
    enabled: bool = True

    @model_validator(mode="after")
    def _check_cron_and_zone(self) -> Schedule:
        # Checked here (not at run time) so `config check` names the schedule before cron fires it.
        from recoverctl.cron import check_expression, check_timezone

        problem = check_expression(self.cron) or check_timezone(self.timezone)
        if problem:
            raise ValueError(f"schedule '{self.name}': {problem}")
        if not self.job.strip():
            raise ValueError(f"schedule '{self.name}': job is empty (e.g. 'backup postgres --type full')")
        return self


# --- retention ------------------------------------------------------------------------------------


class KeepRules(Model):
    """Which snapshots `forget` keeps (restic semantics, see docs/scheduling-and-notifications.md)."""

    keep_last: int = Field(default=0, ge=0)
    keep_hourly: int = Field(default=0, ge=0)
    keep_daily: int = Field(default=0, ge=0)
    keep_weekly: int = Field(default=0, ge=0)
    keep_monthly: int = Field(default=0, ge=0)
    keep_yearly: int = Field(default=0, ge=0)
    keep_within: Duration = Field(default=0.0, ge=0)

    @model_validator(mode="after")
    def _keeps_something(self) -> KeepRules:
        # A rule set that keeps nothing would let `forget` delete every snapshot it applies to.
        if not any(getattr(self, name) for name in type(self).model_fields):
            raise ValueError("keeps nothing: give at least one keep_* rule (e.g. keep_daily: 30)")
        return self


class RetentionConfig(Model):
    """Retention used by `forget` without keep options (and so by scheduled `forget --prune`)."""

    # For snapshots of every source not named under `sources` (and of no source).
    default: KeepRules | None = None
    # Per source name (a key of `sources:`): replaces the default for that source's snapshots.
    sources: dict[str, KeepRules] = Field(default_factory=dict)

    def rules_for(self, source: str | None) -> KeepRules | None:
        """Return the rules for snapshots of `source`, or None when none apply (keep them all)."""
        if source is not None and source in self.sources:
            return self.sources[source]
        return self.default


# --- notifications --------------------------------------------------------------------------------


class ChannelRetry(Model):
    attempts: int = Field(default=4, ge=1)
    initial: Duration = 1.0
    maximum: Duration = 30.0
    # A Retry-After longer than this is not waited for: the delivery is recorded as failed.
    max_retry_after: Duration = 120.0


class ChannelBase(Model):
    min_interval: Duration = 0.0
    timeout: Duration = 10.0
    retry: ChannelRetry = Field(default_factory=ChannelRetry)


class SlackChannel(ChannelBase):
    type: Literal["slack"]
    webhook_url: str | None = None
    webhook_url_file: str | None = None
    channel: str | None = None


class EmailChannel(ChannelBase):
    type: Literal["email"]
    host: str
    port: int = 587
    security: Literal["starttls", "tls", "none"] = "starttls"
    username: str | None = None
    password: SecretStr | None = None
    password_file: str | None = None
    sender: str = Field(alias="from")
    to: list[str]
    # Extra CA bundle for a private SMTP server certificate (STARTTLS/TLS).
    ca_file: str | None = None


class TwilioChannel(ChannelBase):
    type: Literal["sms", "voice"]
    account_sid: str
    auth_token: SecretStr | None = None
    auth_token_file: str | None = None
    sender: str = Field(alias="from")
    to: list[str]
    base_url: str = "https://api.twilio.com"

    @model_validator(mode="after")
    def _check_e164(self) -> TwilioChannel:
        for number in [self.sender, *self.to]:
            if not _E164_RE.match(number):
                raise ValueError(f"'{number}' is not an E.164 phone number (e.g. +14155550100)")
        if not self.to:
            raise ValueError("'to' needs at least one phone number")
        return self


class PagerDutyChannel(ChannelBase):
    type: Literal["pagerduty"]
    routing_key: SecretStr | None = None
    routing_key_file: str | None = None
    base_url: str = "https://events.pagerduty.com"


class WebhookChannel(ChannelBase):
    type: Literal["webhook"]
    url: str
    secret: SecretStr | None = None
    secret_file: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)


Channel = Annotated[
    Union[SlackChannel, EmailChannel, TwilioChannel, PagerDutyChannel, WebhookChannel],  # noqa: UP007
    Field(discriminator="type"),
]


class Routes(Model):
    critical: list[str] = Field(default_factory=list)
    warning: list[str] = Field(default_factory=list)
    info: list[str] = Field(default_factory=list)


class NotificationsConfig(Model):
    channels: dict[str, Channel] = Field(default_factory=dict)
    routes: Routes = Field(default_factory=Routes)

    @model_validator(mode="after")
    def _routes_name_channels(self) -> NotificationsConfig:
        for severity in ("critical", "warning", "info"):
            for name in getattr(self.routes, severity):
                if name not in self.channels:
                    known = ", ".join(sorted(self.channels)) or "(none configured)"
                    raise ValueError(f"routes.{severity} names unknown channel '{name}' (channels: {known})")
        return self


# --- alert policies and the webhook server --------------------------------------------------------


class Window(Model):
    count: int
    window: Duration


class Condition(Model):
    # 'value:NAME' (Grafana values), 'annotation:NAME', 'label:NAME', or a bare NAME (tried in that order).
    value_from: str
    op: Literal[">", ">=", "<", "<=", "=="] = ">"
    threshold: float
    # When set, the compared quantity is the relative change value/baseline - 1 (0.5 = 50 % worse).
    baseline_from: str | None = None


class Policy(Model):
    name: str
    match: dict[str, str] = Field(default_factory=dict)
    action: Literal["rollback", "backup", "drill", "notify"]
    service: str | None = None
    service_from_label: str | None = None
    source: str | None = None
    playbook: str | None = None
    conditions: list[Condition] = Field(default_factory=list)
    conditions_mode: Literal["all", "any"] = "all"
    min_firing: Duration = 0.0
    cooldown: Duration = 600.0
    max_actions: Window | None = None
    max_release_age: Duration | None = None
    mode: Literal["act", "dry-run"] = "act"
    severity: Literal["critical", "warning", "info"] = "critical"


class ServeAuth(Model):
    bearer_token_file: str | None = None
    bearer_token_env: str | None = None
    hmac_secret_file: str | None = None
    hmac_secret_env: str | None = None
    max_skew: Duration = 300.0
    signature_header: str = "X-Grafana-Alerting-Signature"
    timestamp_header: str = "X-Grafana-Alerting-Signature-Timestamp"
    # A signature without a timestamp can be replayed forever: opt out only for senders that
    # cannot send one.
    require_timestamp: bool = True


class RejectionLimits(Model):
    """How refused hook requests are recorded and throttled (see docs/serve.md)."""

    # Tallies of refused requests are written (one row per source, reason and peer) this often.
    flush_every: Duration = Field(default=10.0, gt=0)
    # Unauthenticated requests a peer address may have refused at once before it gets 429s...
    burst: int = Field(default=20, ge=1)
    # ...and how fast that allowance comes back.
    per_second: float = Field(default=1.0, gt=0)
    # A 429 is answered after this pause: a flood that waits for its answers (HTTP/1.1
    # keep-alive) then sends at most connections/delay requests a second, instead of taking
    # every cycle the server would give it away from legitimate alerts.
    delay: Duration = Field(default=0.25, ge=0, le=10)


class ServeConfig(Model):
    host: str = "127.0.0.1"
    port: int = 8035
    auth: ServeAuth = Field(default_factory=ServeAuth)
    rejections: RejectionLimits = Field(default_factory=RejectionLimits)
    max_body_bytes: int = 1024 * 1024
    workers: int = 2
    lease: Duration = 30.0
    poll_interval: Duration = 0.5


# --- the whole file -------------------------------------------------------------------------------


class Config(Model):
    repository: Annotated[RepositoryConfig | None, BeforeValidator(_repository_from_str)] = None
    catalog: str | None = None
    sources: dict[str, Source] = Field(default_factory=dict)
    services: dict[str, Service] = Field(default_factory=dict)
    schedules: list[Schedule] = Field(default_factory=list)
    notifications: NotificationsConfig = Field(default_factory=NotificationsConfig)
    policies: list[Policy] = Field(default_factory=list)
    targets: Targets = Field(default_factory=Targets)
    serve: ServeConfig = Field(default_factory=ServeConfig)
    retention: RetentionConfig | None = None

    @field_validator("retention")
    @classmethod
    def _retention_names_known_sources(
        cls, retention: RetentionConfig | None, info: ValidationInfo
    ) -> RetentionConfig | None:
        sources = info.data.get("sources", {})
        unknown = sorted(set(retention.sources) - set(sources)) if retention is not None else []
        if unknown:
            raise ValueError(
                f"sources names {', '.join(repr(u) for u in unknown)}, not in sources: "
                f"({', '.join(sources) or 'none configured'})"
            )
        return retention

    @field_validator("schedules")
    @classmethod
    def _unique_schedule_names(cls, schedules: list[Schedule]) -> list[Schedule]:
        seen: set[str] = set()
        for s in schedules:
            if s.name in seen:
                raise ValueError(f"schedule name '{s.name}' is used twice")
            seen.add(s.name)
        return schedules

    def schedule(self, name: str) -> Schedule:
        """Return the named schedule; raise NotFoundError listing the configured ones."""
        for s in self.schedules:
            if s.name == name:
                return s
        from recoverctl.errors import NotFoundError

        raise NotFoundError(
            f"unknown schedule '{name}'",
            hint=f"configured schedules: {', '.join(s.name for s in self.schedules) or '(none)'}",
        )

    # Where the file was found; None when running from environment variables alone.
    path: Path | None = Field(default=None, exclude=True)

    def require_repository(self) -> RepositoryConfig:
        """Return the repository section; raise ConfigError when none is configured."""
        if self.repository is None:
            raise ConfigError(
                "no repository configured",
                hint=f"set {ENV_REPOSITORY} or add 'repository: <url>' to the config file",
            )
        return self.repository

    def source(self, name: str | None, kind: str | None = None) -> tuple[str, Any]:
        """Given a source name (or None when exactly one of `kind` exists), return (name, source)."""
        candidates = {n: s for n, s in self.sources.items() if kind is None or s.type == kind}
        if name is None:
            if len(candidates) == 1:
                return next(iter(candidates.items()))
            raise ConfigError(
                f"--source is required: the config has {len(candidates)} {kind or ''} sources".replace(
                    "  ", " "
                ),
                hint=f"choose one of: {', '.join(sorted(candidates)) or '(none configured)'}",
            )
        if name not in candidates:
            raise ConfigError(
                f"unknown source '{name}'",
                hint=f"configured {kind or ''} sources: {', '.join(sorted(candidates)) or '(none)'}",
            )
        return name, candidates[name]

    def service(self, name: str) -> DockerService | SshService:
        """Return the named service; raise ConfigError listing the configured ones."""
        try:
            return self.services[name]
        except KeyError:
            from recoverctl.errors import NotFoundError

            raise NotFoundError(
                f"unknown service '{name}'",
                hint=f"configured services: {', '.join(sorted(self.services)) or '(none)'}",
            ) from None


# --- loading --------------------------------------------------------------------------------------

_VAR_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _expand(value: Any, where: str, env: typing.Mapping[str, str]) -> Any:
    if isinstance(value, str):

        def repl(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            raise ConfigError(
                f"{where}: environment variable '{name}' is not set",
                hint=f"export {name}=... or write ${{{name}:-default}}",
            )

        return _VAR_RE.sub(repl, value)
    if isinstance(value, dict):
        return {k: _expand(v, f"{where}.{k}" if where else str(k), env) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, f"{where}[{i}]", env) for i, v in enumerate(value)]
    return value


def discover_path(explicit: str | None, env: typing.Mapping[str, str]) -> Path | None:
    """Return the config file to read, or None if none exists; raise ConfigError for a missing named one."""
    named = explicit or env.get(ENV_CONFIG)
    if named:
        path = Path(named).expanduser()
        if not path.is_file():
            source = "--config" if explicit else ENV_CONFIG
            raise ConfigError(f"config file '{path}' (from {source}) does not exist")
        return path
    xdg = Path(env.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    for candidate in (
        Path("recoverctl.yaml"),
        xdg / "recoverctl" / "recoverctl.yaml",
        Path("/etc/recoverctl/recoverctl.yaml"),
    ):
        if candidate.is_file():
            return candidate
    return None


def _field_names(model: type[BaseModel]) -> list[str]:
    names = []
    for name, info in model.model_fields.items():
        if info.exclude:
            continue
        names.append(info.alias or name)
    return names


def _unwrap(tp: Any) -> Any:
    while True:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(args) == 1:
                tp = args[0]
            else:
                return tp
        else:
            return tp


def _type_at(root: type[BaseModel], loc: tuple[int | str, ...]) -> Any:
    """Follow a pydantic error location through the model types; return the type it reaches, or None."""
    tp: Any = root
    for part in loc:
        tp = _unwrap(tp)
        origin = typing.get_origin(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            fields = {(f.alias or n): f for n, f in tp.model_fields.items()}
            fields.update(tp.model_fields)
            if part not in fields:
                return None
            tp = fields[part].annotation
        elif origin in (dict, list):
            tp = typing.get_args(tp)[-1]
        elif origin in (Union, types.UnionType):
            # A tagged union: pydantic puts the tag value into the location.
            tp = _union_member(tp, part)
            if tp is None:
                return None
        else:
            return None
    return tp


def _union_member(union: Any, tag: int | str) -> type[BaseModel] | None:
    for member in typing.get_args(union):
        member = _unwrap(member)
        if isinstance(member, type) and issubclass(member, BaseModel):
            for f in member.model_fields.values():
                if typing.get_origin(f.annotation) is Literal and tag in typing.get_args(f.annotation):
                    return member
    return None


def _model_at(root: type[BaseModel], loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """Return the model that owns the last key of a pydantic error location."""
    tp = _unwrap(_type_at(root, loc[:-1]))
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def _humanize(err: ValidationError, path: Path | None, root: type[BaseModel]) -> ConfigError:
    lines = []
    for e in err.errors():
        loc = tuple(e["loc"])
        visible = _visible_loc(loc, root)
        where = ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in visible).replace(".[", "[")
        if e["type"] == "extra_forbidden":
            owner = _model_at(root, loc)
            key = str(loc[-1])
            suggestion = ""
            if owner is not None:
                close = difflib.get_close_matches(key, _field_names(owner), n=1, cutoff=0.5)
                if close:
                    suggestion = f", did you mean '{close[0]}'?"
                else:
                    suggestion = f" (valid keys: {', '.join(_field_names(owner))})"
            lines.append(f"{where}: unknown key{suggestion}")
        elif e["type"] == "missing":
            lines.append(f"{where}: required key is missing")
        else:
            lines.append(f"{where}: {e['msg']} (got {e.get('input')!r})")
    src = f"'{path}'" if path else "configuration from the environment"
    return ConfigError(
        f"invalid configuration in {src}:\n  " + "\n  ".join(lines),
        hint="fix the keys named above; 'recoverctl config check' validates without running anything",
        details={"file": str(path) if path else None, "errors": lines},
    )


def _visible_loc(loc: tuple[int | str, ...], root: type[BaseModel]) -> list[int | str]:
    """Drop the tag values pydantic inserts into the location of tagged-union members."""
    visible: list[int | str] = []
    for i, part in enumerate(loc):
        prefix = loc[:i]
        tp = _unwrap(_type_at(root, prefix))
        if typing.get_origin(tp) in (Union, types.UnionType) and isinstance(part, str):
            continue
        visible.append(part)
    return visible


def parse_config(
    data: Any, *, path: Path | None = None, env: typing.Mapping[str, str] | None = None
) -> Config:
    """Given the raw YAML document, return a validated Config with environment overrides applied."""
    env = os.environ if env is None else env
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file '{path}' must be a mapping of keys, not {type(data).__name__}")
    data = _expand(data, "", env)
    if env.get(ENV_REPOSITORY):
        repo = data.get("repository")
        if isinstance(repo, dict):
            data["repository"] = {**repo, "url": env[ENV_REPOSITORY]}
        else:
            data["repository"] = env[ENV_REPOSITORY]
    if env.get(ENV_CATALOG):
        data["catalog"] = env[ENV_CATALOG]
    try:
        cfg = Config.model_validate(data)
    except ValidationError as e:
        raise _humanize(e, path, Config) from None
    cfg.path = path
    return cfg


# --- YAML ----------------------------------------------------------------------------------------

# Nodes a document may expand to once every alias is replaced by what it names. A real config is a
# few thousand; an alias bomb ("billion laughs") is a few lines that expand to 10^9, which the
# ${VAR} expansion and validation would then copy node by node until memory runs out.
MAX_YAML_NODES = 50_000


class YamlBombError(yaml.YAMLError):
    """The document expands past the node budget, or an alias contains itself."""


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def expanded_size(root: yaml.Node, limit: int) -> int:
    """Return how many nodes `root` expands to with aliases copied out (capped at limit + 1).

    An alias is the same node object as its anchor, so a subtree's size is computed once and
    reused. Iterative: a deeply nested document must not exhaust the interpreter's stack here.
    Raise YamlBombError for an alias that contains itself.
    """
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            open_nodes.discard(key)
            sizes[key] = min(limit + 1, 1 + sum(sizes[id(c)] for c in _children(node)))
            continue
        if key in sizes:
            continue
        if key in open_nodes:
            raise YamlBombError(
                f"an alias refers to the collection that contains it (line {node.start_mark.line + 1})"
            )
        open_nodes.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in _children(node) if id(c) not in sizes)
    return sizes[id(root)]


class BoundedLoader(yaml.SafeLoader):
    """SafeLoader that refuses a document whose aliases expand past `max_nodes` nodes.

    The check runs on the composed node graph, before any Python object is constructed.
    """

    max_nodes = MAX_YAML_NODES

    def compose_document(self) -> yaml.Node | None:
        node: yaml.Node | None = super().compose_document()
        if node is not None:
            size = expanded_size(node, self.max_nodes)
            if size > self.max_nodes:
                raise YamlBombError(
                    f"the document expands to more than {self.max_nodes} nodes through its aliases "
                    "(an alias bomb?)"
                )
        return node


def load_yaml(text: str, what: str) -> Any:
    """Parse one YAML document with BoundedLoader; raise ConfigError naming `what` when invalid."""
    try:
        return yaml.load(text, Loader=BoundedLoader)  # a SafeLoader subclass: no arbitrary objects
    except YamlBombError as e:
        raise ConfigError(
            f"{what} is refused: {e}",
            hint="write the repeated parts out instead of nesting aliases",
        ) from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{what} is not valid YAML: {e}") from None
    except RecursionError:
        raise ConfigError(f"{what} is refused: it is nested too deeply") from None


def load_config(explicit: str | None = None, env: typing.Mapping[str, str] | None = None) -> Config:
    """Find, read and validate the configuration; raise ConfigError naming the file and key."""
    env = os.environ if env is None else env
    path = discover_path(explicit, env)
    data: Any = {}
    if path is not None:
        try:
            text = path.read_text()
        except OSError as e:
            raise ConfigError(f"cannot read config file '{path}': {e.strerror}") from None
        data = load_yaml(text, f"config file '{path}'")
    return parse_config(data, path=path, env=env)


# --- secrets --------------------------------------------------------------------------------------


def read_secret_file(path: str, what: str) -> str:
    """Return the first line of a secret file; raise ConfigError naming what it was for."""
    try:
        text = Path(path).expanduser().read_text()
    except OSError as e:
        raise ConfigError(f"cannot read {what} from '{path}': {e.strerror}") from None
    lines = text.splitlines()
    return lines[0].strip() if lines else ""


def secret_value(value: SecretStr | None, file: str | None, what: str) -> str | None:
    """Return a secret given inline (from ${VAR}) or in a file; None when neither is set."""
    if value is not None:
        return value.get_secret_value()
    if file:
        return read_secret_file(file, what)
    return None


def repository_password(cfg: Config, env: typing.Mapping[str, str] | None = None) -> str | None:
    """Return the repository passphrase from the environment or a password file, or None (prompt)."""
    env = os.environ if env is None else env
    if env.get(ENV_PASSWORD):
        return env[ENV_PASSWORD]
    if env.get(ENV_PASSWORD_FILE):
        return read_secret_file(env[ENV_PASSWORD_FILE], f"the repository password ({ENV_PASSWORD_FILE})")
    if cfg.repository and cfg.repository.password_file:
        return read_secret_file(cfg.repository.password_file, "the repository password (password_file)")
    return None


_URL_CRED_RE = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/@]*):(?P<pw>[^@/]*)@")
# password=... in a libpq conninfo or a URL query (also PGPASSWORD=..., RECOVERCTL_PASSWORD=...),
# not password_file=...
_PASSWORD_PARAM_RE = re.compile(r"(?i)(password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&;'\"]+)")


def redact_url(url: str) -> str:
    """Return the text with any URL password (user:pw@, password=...) replaced by '***'."""
    text = _URL_CRED_RE.sub(lambda m: f"{m.group('scheme')}{m.group('user')}:***@", url)
    return _PASSWORD_PARAM_RE.sub(lambda m: f"{m.group(1)}***", text)


def has_secret(text: str) -> bool:
    """Return True when `text` carries a password (one `redact_url` would hide)."""
    return redact_url(text) != text


def redact(value: Any, secrets: typing.Iterable[str] = ()) -> Any:
    """Return `value` (text, or dicts and lists holding text) with URL passwords and each of
    `secrets` (values of 4 characters or more) replaced by '***'. The one redaction rule for
    logs, the audit log, events and `config show`."""
    known = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def walk(v: Any) -> Any:
        if isinstance(v, str):
            for s in known:
                v = v.replace(s, "***")
            return redact_url(v)
        if isinstance(v, dict):
            return {k: walk(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [walk(x) for x in v]
        return v

    return walk(value)


def redacted_dump(cfg: Config) -> dict[str, Any]:
    """Return the config as plain data with secrets and URL passwords redacted."""
    data = cfg.model_dump(mode="json", by_alias=True, exclude_none=True)
    return typing.cast(dict[str, Any], redact(data))


def iter_secret_values(cfg: Config) -> Iterator[str]:
    """Yield every secret value in the config, for log redaction."""

    def walk(obj: Any) -> Iterator[str]:
        if isinstance(obj, SecretStr):
            yield obj.get_secret_value()
        elif isinstance(obj, BaseModel):
            for name in type(obj).model_fields:
                yield from walk(getattr(obj, name))
        elif isinstance(obj, dict):
            for v in obj.values():
                yield from walk(v)
        elif isinstance(obj, list):
            for v in obj:
                yield from walk(v)

    yield from walk(cfg)
    for url in (cfg.catalog, cfg.repository.url if cfg.repository else None):
        m = _URL_CRED_RE.search(url or "")
        if m and m.group("pw"):
            from urllib.parse import unquote

            yield m.group("pw")
            yield unquote(m.group("pw"))


def inline_secrets(cfg: Config) -> list[str]:
    """Return the keys of the config file holding a secret written in the file itself: a secret
    key (password, secret_access_key, tokens...) or a URL with a password, not a `${VAR}` and
    not a `*_file` path. [] without a file (or one that no longer reads)."""
    if cfg.path is None:
        return []
    try:
        raw = yaml.safe_load(Path(cfg.path).read_text())
    except (OSError, yaml.YAMLError):
        return []
    found: list[str] = []

    def child(model: Any, key: Any) -> Any:
        if isinstance(model, BaseModel):
            for name, info in type(model).model_fields.items():
                if key in (name, info.alias):
                    return getattr(model, name)
            return None
        return model.get(key) if isinstance(model, dict) else None

    def walk(model: Any, value: Any, where: str) -> None:
        if isinstance(value, str):
            if "${" not in value and ((isinstance(model, SecretStr) and value) or has_secret(value)):
                found.append(where)
        elif isinstance(value, dict):
            for k, v in value.items():
                walk(child(model, k), v, f"{where}.{k}" if where else str(k))
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(model[i] if isinstance(model, list) and i < len(model) else None, v, f"{where}[{i}]")

    walk(cfg, raw, "")
    return found


def loose_config_mode(cfg: Config) -> str | None:
    """Return a warning when the config file holds secrets inline (`inline_secrets`) and its
    group or others can read it; None otherwise (no file, private file, no inline secret)."""
    if cfg.path is None:
        return None
    path = Path(cfg.path).resolve()
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return None
    if not mode & 0o044:
        return None
    keys = inline_secrets(cfg)
    if not keys:
        return None
    who = {0o040: "its group", 0o004: "every local user"}.get(mode & 0o044, "its group and every local user")
    return (
        f"config file '{path}' holds secrets inline ({', '.join(keys)}) and {who} can read it "
        f"(mode {mode:04o}): chmod 600 {path} (or move the values into *_file keys)"
    )
