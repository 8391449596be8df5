"""The `schedules:` and `retention:` sections: when jobs run and which snapshots `forget` keeps."""

from __future__ import annotations

from typing import Literal

from pydantic import (
    Field,
    model_validator,
)

from recoverctl.config.base import Duration, Model

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
