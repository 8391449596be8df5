"""The `escalation:` section (who is told about an unacknowledged incident, and when) and the
`incidents:` section (acknowledgement links, reopening)."""

from __future__ import annotations

import itertools

from pydantic import Field, SecretStr, field_validator

from recoverctl.config.base import Duration, Model

# The runbook's levels ("Incident Response"): acknowledge within 15 minutes, technical response
# after 1 hour, management after 4 hours.
RUNBOOK_LEVELS: tuple[tuple[int, float], ...] = ((1, 0.0), (2, 3600.0), (3, 4 * 3600.0))


class EscalationLevel(Model):
    """One level: `after` the incident opened (and while nobody acknowledged it), send to
    `routes`, again every `repeat` until the next level starts."""

    level: int = Field(ge=1)
    after: Duration = Field(ge=0)
    routes: list[str] = Field(min_length=1)
    repeat: Duration | None = Field(default=None, gt=0)


def check_levels(levels: list[EscalationLevel]) -> list[EscalationLevel]:
    """Given the configured levels, return them; raise ValueError unless level numbers are unique
    and `after` grows with the level."""
    ordered = sorted(levels, key=lambda x: x.level)
    if len({x.level for x in levels}) != len(levels):
        raise ValueError("each escalation level may appear once")
    for lower, higher in itertools.pairwise(ordered):
        if higher.after <= lower.after:
            raise ValueError(f"level {higher.level} must start later than level {lower.level}")
    return ordered


class IncidentsConfig(Model):
    # The address people reach `recoverctl serve` at, for acknowledgement links in notifications
    # (default: http://serve.host:serve.port).
    public_url: str | None = None
    # Key that signs acknowledgement links (default: derived from serve's bearer token or HMAC secret).
    ack_secret: SecretStr | None = None
    ack_secret_file: str | None = None
    ack_secret_env: str | None = None
    # How long an acknowledgement link stays valid.
    ack_link_ttl: Duration = Field(default=24 * 3600.0, gt=0)
    # How long a runner holds an escalation notification it is sending before another runner may
    # take it over (when the first died): longer than a channel's retries take.
    claim_lease: Duration = Field(default=120.0, gt=0)
    # How often the escalation loop checks RPO exposure against the sources' targets.
    rpo_check_every: Duration = Field(default=60.0, gt=0)

    @field_validator("public_url")
    @classmethod
    def _http_url(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("http://", "https://")):
            raise ValueError("public_url must be an http:// or https:// URL")
        return url.rstrip("/") if url else url
