"""The `notifications:` section: channels (Slack, email, Twilio, PagerDuty, webhook) and routes."""

from __future__ import annotations

import re
from typing import Annotated, Literal, Union

from pydantic import (
    Field,
    SecretStr,
    model_validator,
)

from recoverctl.config.base import Duration, Model

_E164_RE = re.compile(r"^\+[1-9]\d{1,14}$")


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
