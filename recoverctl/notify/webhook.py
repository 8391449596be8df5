"""Generic JSON webhook, signed with HMAC-SHA256 when a secret is configured.

Receivers verify `X-Recoverctl-Signature: sha256=<hex>` computed over
`<X-Recoverctl-Timestamp>.<raw body>` with the shared secret, and reject stale timestamps.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

import httpx

from recoverctl.config import WebhookChannel, secret_value
from recoverctl.notify.base import Message, Receipt
from recoverctl.notify.transport import post

SIGNATURE_HEADER = "X-Recoverctl-Signature"
TIMESTAMP_HEADER = "X-Recoverctl-Timestamp"


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """Return the signature header value for `body` sent at `timestamp`."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def payload(message: Message) -> dict[str, Any]:
    return {
        "event_id": message.event_id,
        "kind": message.kind,
        "severity": message.severity,
        "subject": message.subject,
        "summary": message.summary,
        "details": message.details,
        "dedup_key": message.incident_key,
        "action": message.action,
        "at": message.at,
        "text": message.body(),
    }


class WebhookNotifier:
    type = "webhook"

    def __init__(self, name: str, cfg: WebhookChannel):
        self.name = name
        self.url = cfg.url
        self.secret = secret_value(cfg.secret, cfg.secret_file, f"the webhook secret of channel '{name}'")
        self.headers = dict(cfg.headers)
        self.client = httpx.Client(timeout=cfg.timeout)

    def send(self, message: Message) -> Receipt:
        """Post the signed JSON; return the Receipt; raise DeliveryError."""
        body = json.dumps(payload(message), default=str, separators=(",", ":")).encode()
        headers = {**self.headers, "Content-Type": "application/json", "User-Agent": "recoverctl"}
        if self.secret:
            ts = str(int(time.time()))
            headers[TIMESTAMP_HEADER] = ts
            headers[SIGNATURE_HEADER] = sign(self.secret, ts, body)
        r = post(self.client, self.url, f"webhook '{self.name}'", content=body, headers=headers)
        return Receipt(http_status=r.status_code)

    def close(self) -> None:
        self.client.close()
