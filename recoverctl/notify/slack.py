"""Slack incoming webhook: `text` for notifications and fallbacks, `blocks` for the rich layout."""

from __future__ import annotations

from typing import Any

import httpx

from recoverctl.config import SlackChannel, read_secret_file
from recoverctl.errors import ConfigError
from recoverctl.notify.base import Message, Receipt
from recoverctl.notify.transport import post

_ICONS = {"critical": ":rotating_light:", "warning": ":warning:", "info": ":information_source:"}


def payload(message: Message, channel: str | None = None) -> dict[str, Any]:
    """Given a message, return the Slack webhook JSON body."""
    icon = _ICONS.get(message.severity, "")
    text = f"{icon} {message.title}: {message.summary}".strip()
    fields = [
        {"type": "mrkdwn", "text": f"*Severity*\n{message.severity}"},
        {"type": "mrkdwn", "text": f"*Event*\n{message.kind}"},
        {"type": "mrkdwn", "text": f"*Service/source*\n{message.subject or '-'}"},
        {"type": "mrkdwn", "text": f"*When*\n{message.when}"},
    ]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": message.title[:150]}},
        {"type": "section", "text": {"type": "mrkdwn", "text": (message.text or message.summary)[:2900]}},
        {"type": "section", "fields": fields},
    ]
    if message.links:
        links = " · ".join(f"<{u}>" for u in message.links)
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": links}]})
    body: dict[str, Any] = {"text": text, "blocks": blocks}
    if channel:
        body["channel"] = channel
    return body


class SlackNotifier:
    type = "slack"

    def __init__(self, name: str, cfg: SlackChannel):
        self.name = name
        url = cfg.webhook_url or (
            read_secret_file(cfg.webhook_url_file, f"the Slack webhook URL of channel '{name}'")
            if cfg.webhook_url_file
            else None
        )
        if not url:
            raise ConfigError(
                f"notification channel '{name}': no webhook_url", hint="set webhook_url or webhook_url_file"
            )
        self.url = url
        self.channel = cfg.channel
        self.client = httpx.Client(timeout=cfg.timeout)

    def send(self, message: Message) -> Receipt:
        """Post the message; return the Receipt; raise DeliveryError."""
        r = post(
            self.client, self.url, f"Slack webhook of '{self.name}'", json=payload(message, self.channel)
        )
        return Receipt(http_status=r.status_code)

    def close(self) -> None:
        self.client.close()
