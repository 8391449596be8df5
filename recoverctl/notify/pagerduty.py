"""PagerDuty Events API v2: trigger/resolve alerts with a stable dedup_key, change events for deploys."""

from __future__ import annotations

import socket
from datetime import UTC, datetime
from typing import Any

import httpx

from recoverctl.config import PagerDutyChannel, secret_value
from recoverctl.errors import ConfigError
from recoverctl.notify.base import Message, Receipt
from recoverctl.notify.transport import post

_PD_SEVERITY = {"critical": "critical", "warning": "warning", "info": "info"}


def alert_payload(message: Message, routing_key: str) -> dict[str, Any]:
    """Return the Events API v2 body (trigger or resolve) for `message`."""
    body: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": "resolve" if message.action == "resolve" else "trigger",
        "dedup_key": message.incident_key,
    }
    if body["event_action"] == "trigger":
        body["payload"] = {
            "summary": f"{message.title}: {message.summary}"[:1024],
            "source": message.subject or socket.gethostname(),
            "severity": _PD_SEVERITY.get(message.severity, "error"),
            "timestamp": datetime.fromtimestamp(message.at, UTC).isoformat(),
            "component": message.subject,
            "group": message.kind.split(".", 1)[0],
            "class": message.kind,
            "custom_details": message.details,
        }
        if message.links:
            body["links"] = [{"href": u, "text": u} for u in message.links]
    return body


def change_payload(message: Message, routing_key: str) -> dict[str, Any]:
    """Return the Change Events body for a deploy or rollback."""
    body: dict[str, Any] = {
        "routing_key": routing_key,
        "payload": {
            "summary": f"{message.kind} {message.subject or ''}: {message.summary}"[:1024],
            "source": message.subject or socket.gethostname(),
            "timestamp": datetime.fromtimestamp(message.at, UTC).isoformat(),
            "custom_details": message.details,
        },
    }
    if message.links:
        body["links"] = [{"href": u, "text": u} for u in message.links]
    return body


class PagerDutyNotifier:
    type = "pagerduty"

    def __init__(self, name: str, cfg: PagerDutyChannel):
        self.name = name
        key = secret_value(cfg.routing_key, cfg.routing_key_file, f"the PagerDuty routing key of '{name}'")
        if not key:
            raise ConfigError(
                f"notification channel '{name}': no routing key",
                hint="set routing_key: ${PAGERDUTY_ROUTING_KEY} or routing_key_file",
            )
        self.routing_key = key
        self.base_url = cfg.base_url.rstrip("/")
        self.client = httpx.Client(timeout=cfg.timeout)

    def send(self, message: Message) -> Receipt:
        """Enqueue an alert or change event; return the Receipt; raise DeliveryError."""
        if message.action == "change":
            url, body = f"{self.base_url}/v2/change/enqueue", change_payload(message, self.routing_key)
        else:
            url, body = f"{self.base_url}/v2/enqueue", alert_payload(message, self.routing_key)
        r = post(self.client, url, f"PagerDuty events API of '{self.name}'", json=body)
        return Receipt(http_status=r.status_code, detail=message.incident_key)

    def close(self) -> None:
        self.client.close()
