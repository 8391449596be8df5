"""Typed configuration: file discovery, ${VAR} expansion, environment overrides, secret redaction.

The top-level keys ``repository``, ``catalog``, ``sources``, ``services``, ``schedules``,
``notifications``, ``policies``, ``targets``, ``serve``, ``retention``, ``escalation`` and
``incidents`` and the variables
``RECOVERCTL_REPOSITORY``, ``RECOVERCTL_PASSWORD`` / ``RECOVERCTL_PASSWORD_FILE`` and
``RECOVERCTL_CATALOG`` are a contract: later changes are additive only.

One module per concern: `base` (Model, durations, variable names), a module per section
(`repository`, `catalog`, `sources`, `services`, `schedules`, `notifications`, `serve`), `root` (Config),
`loading` (files, YAML, ${VAR}, validation messages) and `secrets` (secret files, redaction).
Every public name is re-exported here: import from `recoverctl.config`.
"""

from __future__ import annotations

from recoverctl.config.base import (
    ENV_CATALOG,
    ENV_CONFIG,
    ENV_PASSWORD,
    ENV_PASSWORD_FILE,
    ENV_REPOSITORY,
    ENV_REPOSITORY_NAME,
    Duration,
    Model,
    parse_duration,
)
from recoverctl.config.catalog import DEFAULT_HISTORY, CatalogRetention
from recoverctl.config.incidents import RUNBOOK_LEVELS, EscalationLevel, IncidentsConfig
from recoverctl.config.loading import (
    MAX_YAML_NODES,
    BoundedLoader,
    YamlBombError,
    _humanize,
    discover_path,
    expanded_size,
    load_config,
    load_yaml,
    parse_config,
)
from recoverctl.config.notifications import (
    Channel,
    ChannelBase,
    ChannelRetry,
    EmailChannel,
    NotificationsConfig,
    PagerDutyChannel,
    Routes,
    SlackChannel,
    StatusPageChannel,
    TwilioChannel,
    WebhookChannel,
)
from recoverctl.config.repository import RepositoryConfig, RetryOptions, S3Options, SftpOptions
from recoverctl.config.root import Config
from recoverctl.config.schedules import KeepRules, RetentionConfig, Schedule
from recoverctl.config.secrets import (
    has_secret,
    inline_secrets,
    iter_secret_values,
    loose_config_mode,
    passphrase_file,
    read_secret_file,
    redact,
    redact_url,
    redacted_dump,
    repository_password,
    secret_value,
)
from recoverctl.config.serve import (
    Condition,
    NamedToken,
    Policy,
    RejectionLimits,
    ServeAuth,
    ServeConfig,
    Window,
)
from recoverctl.config.services import (
    DatabaseLink,
    DockerService,
    HealthPolicy,
    Service,
    ServiceRetry,
    SshHost,
    SshService,
)
from recoverctl.config.sources import (
    ARCHIVE_TIMEOUT_MIN_S,
    FilesSource,
    PostgresSource,
    PostgresStandby,
    Source,
    SourceWal,
    Targets,
    Tier,
    TierTargets,
    VolumeSource,
)

__all__ = [
    "ARCHIVE_TIMEOUT_MIN_S",
    "DEFAULT_HISTORY",
    "ENV_CATALOG",
    "ENV_CONFIG",
    "ENV_PASSWORD",
    "ENV_PASSWORD_FILE",
    "ENV_REPOSITORY",
    "ENV_REPOSITORY_NAME",
    "MAX_YAML_NODES",
    "RUNBOOK_LEVELS",
    "BoundedLoader",
    "CatalogRetention",
    "Channel",
    "ChannelBase",
    "ChannelRetry",
    "Condition",
    "Config",
    "DatabaseLink",
    "DockerService",
    "Duration",
    "EmailChannel",
    "EscalationLevel",
    "FilesSource",
    "HealthPolicy",
    "IncidentsConfig",
    "KeepRules",
    "Model",
    "NamedToken",
    "NotificationsConfig",
    "PagerDutyChannel",
    "Policy",
    "PostgresSource",
    "PostgresStandby",
    "RejectionLimits",
    "RepositoryConfig",
    "RetentionConfig",
    "RetryOptions",
    "Routes",
    "S3Options",
    "Schedule",
    "ServeAuth",
    "ServeConfig",
    "Service",
    "ServiceRetry",
    "SftpOptions",
    "SlackChannel",
    "Source",
    "SourceWal",
    "SshHost",
    "SshService",
    "StatusPageChannel",
    "Targets",
    "Tier",
    "TierTargets",
    "TwilioChannel",
    "VolumeSource",
    "WebhookChannel",
    "Window",
    "YamlBombError",
    "_humanize",
    "discover_path",
    "expanded_size",
    "has_secret",
    "inline_secrets",
    "iter_secret_values",
    "load_config",
    "load_yaml",
    "loose_config_mode",
    "parse_config",
    "parse_duration",
    "passphrase_file",
    "read_secret_file",
    "redact",
    "redact_url",
    "redacted_dump",
    "repository_password",
    "secret_value",
]
