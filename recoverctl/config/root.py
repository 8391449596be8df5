"""The whole config file: one Config holding every section, and its cross-section checks."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BeforeValidator,
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from recoverctl.config.base import ENV_REPOSITORY, Model
from recoverctl.config.catalog import CatalogRetention, CatalogSection, split_catalog_key
from recoverctl.config.incidents import EscalationLevel, IncidentsConfig, check_levels
from recoverctl.config.notifications import NotificationsConfig
from recoverctl.config.repository import RepositoryConfig, _repository_from_str
from recoverctl.config.schedules import RetentionConfig, Schedule
from recoverctl.config.serve import Policy, ServeConfig
from recoverctl.config.services import DockerService, Service, SshService
from recoverctl.config.sources import ARCHIVE_TIMEOUT_MIN_S, Source, Targets
from recoverctl.errors import ConfigError

# The name `--repo` gives the repository of a config with a single `repository:` section.
PRIMARY = "primary"


class Config(Model):
    repository: Annotated[RepositoryConfig | None, BeforeValidator(_repository_from_str)] = None
    # Named repositories, the first one primary (backups and WAL go there; `recoverctl copy`
    # brings them to the others). Exclusive with `repository:`; once validated, `repository`
    # holds the primary so every reader of the single section keeps working.
    repositories: dict[str, Annotated[RepositoryConfig, BeforeValidator(_repository_from_str)]] = Field(
        default_factory=dict
    )
    catalog: str | None = None
    # `catalog: {url: ..., retention: {...}}` in the file (config/catalog.py); `catalog` holds its URL.
    catalog_settings: CatalogSection = Field(default_factory=CatalogSection)
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

    @model_validator(mode="before")
    @classmethod
    def _catalog_mapping(cls, data: Any) -> Any:
        return split_catalog_key(data)

    # Which of `repositories` the `repository` field holds (see `for_repository`), and whether
    # the environment chose it (then RECOVERCTL_PASSWORD(_FILE) are its passphrase).
    _active: str | None = PrivateAttr(default=None)
    _chosen_by_environment: bool = PrivateAttr(default=False)

    @model_validator(mode="before")
    @classmethod
    def _one_repository_section(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("repositories"):
            if data.get("repository") is not None:
                raise ValueError(
                    "set 'repository' (one repository) or 'repositories' (named, the first primary), not both"
                )
            if not isinstance(data["repositories"], dict):
                raise ValueError("'repositories' must map names to repositories")
            data = {**data, "repository": next(iter(data["repositories"].values()))}
        return data

    @field_validator("repositories")
    @classmethod
    def _repository_names(cls, repositories: dict[str, RepositoryConfig]) -> dict[str, RepositoryConfig]:
        for name in repositories:
            if not name or not name.replace("-", "").replace("_", "").isalnum():
                raise ValueError(f"repository name '{name}' must be letters, digits, '-' or '_'")
        urls = [r.url for r in repositories.values()]
        if len(set(urls)) != len(urls):
            raise ValueError("two repositories have the same url: a copy must live elsewhere")
        return repositories

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

    @property
    def catalog_retention(self) -> CatalogRetention:
        """Return how long `catalog prune` keeps each group of history rows."""
        return self.catalog_settings.retention

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

    def repository_names(self) -> list[str]:
        """Return the configured repositories' names, the primary first ([] when none)."""
        if self.repositories:
            return list(self.repositories)
        return [PRIMARY] if self.repository is not None else []

    @property
    def primary_name(self) -> str:
        return next(iter(self.repositories)) if self.repositories else PRIMARY

    @property
    def active_repository(self) -> str:
        """Return the name of the repository `repository` holds (the primary unless `for_repository`)."""
        return self._active or self.primary_name

    def named_repository(self, name: str | None) -> RepositoryConfig:
        """Given a repository name (None = the primary), return its section; raise ConfigError."""
        if name is None or name == self.primary_name:
            return self.require_repository()
        if name not in self.repositories:
            raise ConfigError(
                f"unknown repository '{name}'",
                hint=f"configured repositories: {', '.join(self.repository_names()) or '(none)'}",
            )
        return self.repositories[name]

    def copy_targets(self) -> list[str]:
        """Return the names of the repositories `recoverctl copy` fills: all but the primary."""
        return list(self.repositories)[1:]

    def for_repository(self, name: str | None, *, from_environment: bool = False) -> Config:
        """Given a repository name (None = the primary), return this config with that repository
        as its `repository`, so every action works on it unchanged; raise ConfigError.

        Its passphrase comes from its own `password_env` / `password_file` only, unless
        `from_environment` (RECOVERCTL_REPOSITORY_NAME chose it): then the variables come first.
        """
        if name is None:
            return self
        chosen = self.model_copy(update={"repository": self.named_repository(name)})
        chosen._active = name
        chosen._chosen_by_environment = from_environment
        chosen.path = self.path
        return chosen

    @property
    def repository_chosen(self) -> bool:
        """Whether a repository was named (--repo, RECOVERCTL_REPOSITORY_NAME), even the primary."""
        return self._active is not None

    def drill_rotation(self, when: float) -> str | None:
        """Given a time, return the repository a drill that names none restores from: the ISO
        week number modulo the number of repositories picks it (with two: even weeks the primary,
        odd weeks the copy), so weekly drills prove every copy restorable in turn. None with one
        repository."""
        import datetime as dt

        names = self.repository_names()
        if len(names) < 2:
            return None
        week = dt.datetime.fromtimestamp(when, dt.UTC).isocalendar().week
        return names[week % len(names)]

    @property
    def own_passphrase_only(self) -> bool:
        """Whether only the active repository's own password_env/password_file give its
        passphrase (a copy chosen with --repo: RECOVERCTL_PASSWORD is the primary's)."""
        return self.active_repository != self.primary_name and not self._chosen_by_environment

    def target_warnings(self) -> list[str]:
        """Return, per postgres source whose RPO target its WAL mode cannot meet, why not."""
        out = []
        for name, src in self.sources.items():
            if src.type != "postgres":
                continue
            # `wal.mode` (archive|stream) where the source has it; archive is the default.
            mode = getattr(getattr(src, "wal", None), "mode", "archive")
            rpo = self.targets.for_tier(src.tier).rpo
            if mode == "archive" and rpo < ARCHIVE_TIMEOUT_MIN_S:
                out.append(
                    f"source '{name}': RPO target {rpo:g}s ({src.tier}) cannot be met in archive mode: "
                    f"archive_timeout is at least {ARCHIVE_TIMEOUT_MIN_S}s, so up to that much WAL may "
                    "sit unarchived; stream WAL (wal: {mode: stream}) or raise the target"
                )
        return out

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
