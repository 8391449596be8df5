"""Twilio SMS and voice calls over the REST API (form-encoded, basic auth with SID and token)."""

from __future__ import annotations

from xml.sax.saxutils import escape

import httpx

from recoverctl.config import TwilioChannel, secret_value
from recoverctl.errors import ConfigError
from recoverctl.notify.base import Message, Receipt
from recoverctl.notify.transport import post

SMS_LIMIT = 1500


def sms_text(message: Message) -> str:
    return f"{message.title}: {message.summary}"[:SMS_LIMIT]


def twiml(message: Message) -> str:
    """Return the TwiML a call speaks: the alert, said twice so a half-awake listener catches it."""
    about = f" on {message.subject}" if message.subject else ""
    said = escape(f"recoverctl {message.severity} alert{about}. {message.summary}"[:600])
    return f'<Response><Say>{said}</Say><Pause length="1"/><Say>{said}</Say></Response>'


class TwilioNotifier:
    def __init__(self, name: str, cfg: TwilioChannel):
        self.name = name
        self.type: str = cfg.type
        token = secret_value(cfg.auth_token, cfg.auth_token_file, f"the Twilio auth token of '{name}'")
        if not token:
            raise ConfigError(
                f"notification channel '{name}': no Twilio auth token",
                hint="set auth_token: ${TWILIO_AUTH_TOKEN} or auth_token_file",
            )
        self.sender = cfg.sender
        self.to = list(cfg.to)
        resource = "Messages" if cfg.type == "sms" else "Calls"
        self.url = f"{cfg.base_url.rstrip('/')}/2010-04-01/Accounts/{cfg.account_sid}/{resource}.json"
        self.client = httpx.Client(timeout=cfg.timeout, auth=(cfg.account_sid, token))
        # Numbers already reached for a message: a retry after a partial failure must not page twice.
        self._reached: dict[tuple[float, str], set[str]] = {}

    def send(self, message: Message) -> Receipt:
        """Text or call every number; return the Receipt; raise DeliveryError for the first failure."""
        key = (message.at, message.incident_key)
        reached = self._reached.setdefault(key, set())
        status: int | None = None
        for number in self.to:
            if number in reached:
                continue
            form = {"To": number, "From": self.sender}
            if self.type == "sms":
                form["Body"] = sms_text(message)
            else:
                form["Twiml"] = twiml(message)
            r = post(self.client, self.url, f"Twilio {self.type} to {number} ('{self.name}')", data=form)
            status = r.status_code
            reached.add(number)
        self._reached.pop(key, None)
        return Receipt(http_status=status, detail=f"{len(self.to)} number(s)")

    def close(self) -> None:
        self.client.close()
