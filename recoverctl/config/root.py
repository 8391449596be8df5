"""The whole config file: one Config holding every section, and its cross-section checks."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BeforeValidator,
    Field,
    ValidationInfo,
    field_validator,
)

from recoverctl.config.base import ENV_REPOSITORY, Model
from recoverctl.config.incidents import EscalationLevel, IncidentsConfig, check_levels
from recoverctl.config.notifications import NotificationsConfig
from recoverctl.config.repository import RepositoryConfig, _repository_from_str
from recoverctl.config.schedules import RetentionConfig, Schedule
from recoverctl.config.serve import Policy, ServeConfig
from recoverctl.config.services import DockerService, Service, SshService
from recoverctl.config.sources import Source, Targets
from recoverctl.errors import ConfigError


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
    # None: the runbook's levels over the notification routes (docs/incidents.md).
    escalation: list[EscalationLevel] | None = None
    incidents: IncidentsConfig = Field(default_factory=IncidentsConfig)

    @field_validator("escalation")
    @classmethod
    def _escalation_names_known_channels(
        cls, levels: list[EscalationLevel] | None, info: ValidationInfo
    ) -> list[EscalationLevel] | None:
        if levels is None:
            return None
        notifications = info.data.get("notifications")
        channels = notifications.channels if notifications is not None else {}
        for level in levels:
            unknown = [r for r in level.routes if r not in channels]
            if unknown:
                raise ValueError(
                    f"level {level.level} routes to unknown channel(s) {', '.join(unknown)} "
                    f"(channels: {', '.join(sorted(channels)) or 'none configured'})"
                )
        return check_levels(levels)

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
