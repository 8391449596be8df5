"""The `policies:` (alert conditions) and `serve:` (webhook server) sections."""

from __future__ import annotations

from typing import Literal

from pydantic import (
    Field,
)

from recoverctl.config.base import Duration, Model


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
    action: Literal["rollback", "backup", "drill", "notify", "copy"]
    service: str | None = None
    service_from_label: str | None = None
    source: str | None = None
    playbook: str | None = None
    # action copy: the copy repository to fill (default: every one after the primary).
    repository: str | None = None
    conditions: list[Condition] = Field(default_factory=list)
    conditions_mode: Literal["all", "any"] = "all"
    min_firing: Duration = 0.0
    cooldown: Duration = 600.0
    max_actions: Window | None = None
    max_release_age: Duration | None = None
    mode: Literal["act", "dry-run"] = "act"
    severity: Literal["critical", "warning", "info"] = "critical"


class NamedToken(Model):
    """A bearer token of one person or tool: `viewer` reads (console, /api), `operator` also acts
    (alert hooks, console actions)."""

    name: str = Field(min_length=1, max_length=100)
    role: Literal["viewer", "operator"]
    token_file: str


class ServeAuth(Model):
    # Named tokens with roles; the single bearer token below keeps working as an operator.
    tokens: list[NamedToken] = Field(default_factory=list)
    # How long a console session (the cookie a login gives) lasts.
    session_ttl: Duration = Field(default=8 * 3600.0, gt=0)
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
    # FastAPI's /docs page loads Swagger UI from a CDN: off unless asked for (/openapi.json is
    # always served, behind the API's authentication).
    docs: bool = False
