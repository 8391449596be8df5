"""The `notifications:` section: channels (Slack, email, Twilio, PagerDuty, webhook, status page)
and routes."""

from __future__ import annotations

import re
import string
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


# Component states of a status page (Atlassian Statuspage's names; the generic webhook uses them too).
ComponentState = Literal["operational", "degraded_performance", "partial_outage", "major_outage"]
_MESSAGE_FIELDS = {"service", "summary", "state"}


def _default_messages() -> dict[ComponentState, str]:
    return {
        "degraded_performance": "{service} is degraded; we are working on it.",
        "partial_outage": "{service} is partly unavailable; we are working on it.",
        "major_outage": "{service} is unavailable; we are working on it.",
        "operational": "{service} is operating normally again.",
    }


class StatusPageChannel(ChannelBase):
    """A public status page: a signed generic webhook, or Atlassian Statuspage's REST API.

    It covers the services named in `components` (service → component id, or any label for the
    webhook); a webhook with no components covers every service.
    """

    type: Literal["status_page"]
    mode: Literal["webhook", "statuspage"] = "webhook"
    # mode webhook
    url: str | None = None
    secret: SecretStr | None = None
    secret_file: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    # mode statuspage
    base_url: str = "https://api.statuspage.io"
    page_id: str | None = None
    api_key: SecretStr | None = None
    api_key_file: str | None = None
    incidents: bool = True  # also open, update and resolve a Statuspage incident
    components: dict[str, str] = Field(default_factory=dict)
    # Per state, the text shown to users; {service}, {summary} and {state} are filled in.
    messages: dict[ComponentState, str] = Field(default_factory=_default_messages)
    incident_name: str = "{service}: service disruption"
    # Post automatically when incidents about its services open, get worse and resolve: false
    # leaves the page to explicit `notify_status` calls.
    on_events: bool = True

    @model_validator(mode="after")
    def _check_mode_and_messages(self) -> StatusPageChannel:
        if self.mode == "webhook" and not self.url:
            raise ValueError("mode webhook needs 'url'")
        if self.mode == "statuspage":
            if not self.page_id:
                raise ValueError("mode statuspage needs 'page_id'")
            if not self.components:
                raise ValueError("mode statuspage needs 'components' (service: component id)")
            if self.api_key is None and self.api_key_file is None:
                raise ValueError(
                    "mode statuspage needs 'api_key' (e.g. ${STATUSPAGE_API_KEY}) or 'api_key_file'"
                )
        self.messages = {**_default_messages(), **self.messages}
        for template in [*self.messages.values(), self.incident_name]:
            names = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
            unknown = sorted(names - _MESSAGE_FIELDS)
            if unknown:
                raise ValueError(
                    f"message {template!r} names {', '.join(unknown)}: only {{service}}, {{summary}} "
                    "and {state} are filled in"
                )
        return self


Channel = Annotated[
    Union[  # noqa: UP007
        SlackChannel, EmailChannel, TwilioChannel, PagerDutyChannel, WebhookChannel, StatusPageChannel
    ],
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
