"""Status pages: tell users a service is degraded, down, or operational again.

Two modes (docs/notifications.md, "Status pages"):

- `webhook`: POST a JSON body `{service, component, state, message, kind, severity, event_id,
  incident_key, at}` to `url`. With a secret it is signed like the webhook channel:
  `X-Recoverctl-Timestamp: <unix seconds>` and `X-Recoverctl-Signature: sha256=<hex>`, the
  HMAC-SHA256 of `<timestamp>.<raw body>` with the shared secret.
- `statuspage`: Atlassian Statuspage's REST API v1 (`Authorization: OAuth <api key>`):
  `PATCH /v1/pages/{page}/components/{component}` sets the component's status, and (with
  `incidents: true`) an incident is opened with `POST /v1/pages/{page}/incidents`, updated or
  resolved with `PATCH /v1/pages/{page}/incidents/{id}`. Which incident is ours is read back
  from `GET /v1/pages/{page}/incidents/unresolved` (its name and component), so a retry or a
  second runner updates the incident instead of opening another, and no incident id has to be
  kept anywhere.

A message reaches a status page when it carries a state (`STATE_DETAIL`, set by
`notify.delivery.notify_status`). Incidents are what change it (`incidents.escalation.post_status`:
degraded when one opens about a service, operational when it resolves); single events never do,
so one incident tells users one story however many events it collects.
"""

from __future__ import annotations

import json
import time
from typing import Any, cast, get_args

import httpx

from recoverctl.config import StatusPageChannel, secret_value
from recoverctl.config.notifications import ComponentState
from recoverctl.notify.base import DeliveryError, Message, Receipt
from recoverctl.notify.transport import request
from recoverctl.notify.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign

STATES: tuple[ComponentState, ...] = get_args(ComponentState)
# Message.details keys: the state to show, and a text replacing the channel's message template.
STATE_DETAIL = "status_page_state"
TEXT_DETAIL = "status_page_message"


def state_for(message: Message) -> ComponentState | None:
    """Given a message, return the component state it tells a status page, or None."""
    explicit = message.details.get(STATE_DETAIL)
    return cast(ComponentState, explicit) if explicit in STATES else None


def is_probe(message: Message) -> bool:
    """Return True for `notify test`: a status page is checked, never changed, by a test."""
    return message.kind == "notify.test"


def covers(cfg: StatusPageChannel, message: Message) -> bool:
    """Return True when the page is to be sent `message`: a test, or a state of a service it covers."""
    if is_probe(message):
        return True
    if state_for(message) is None or not message.subject:
        return False
    return not cfg.components or message.subject in cfg.components


def page_text(cfg: StatusPageChannel, message: Message, state: ComponentState) -> str:
    """Return what users read: the message's own text, else the channel's template for `state`."""
    own = message.details.get(TEXT_DETAIL)
    if own:
        return str(own)
    return cfg.messages[state].format(service=message.subject, summary=message.summary, state=state)


class StatusPageNotifier:
    type = "status_page"

    def __init__(self, name: str, cfg: StatusPageChannel):
        self.name = name
        self.cfg = cfg
        self.client = httpx.Client(timeout=cfg.timeout)
        self.headers = {**cfg.headers, "User-Agent": "recoverctl"}
        self.secret: str | None = None
        if cfg.mode == "webhook":
            self.secret = secret_value(cfg.secret, cfg.secret_file, f"the status page secret of '{name}'")
        else:
            key = secret_value(cfg.api_key, cfg.api_key_file, f"the Statuspage API key of '{name}'")
            self.headers["Authorization"] = f"OAuth {key}"
            self.base = f"{cfg.base_url.rstrip('/')}/v1/pages/{cfg.page_id}"

    def send(self, message: Message) -> Receipt:
        """Post the service's state (or, for a test, check the page); return the Receipt;
        raise DeliveryError."""
        if is_probe(message):
            return self._probe(message)
        state = state_for(message)
        if state is None or not message.subject:
            raise DeliveryError(f"{message.kind} does not change a service's state", retryable=False)
        text = page_text(self.cfg, message, state)
        if self.cfg.mode == "webhook":
            return self._post_webhook(self._webhook_body(message, state, text))
        return self._update_statuspage(message.subject, state, text)

    # --- generic webhook ------------------------------------------------------------------------

    def _webhook_body(self, message: Message, state: ComponentState | None, text: str) -> dict[str, Any]:
        service = message.subject
        return {
            "service": service,
            "component": self.cfg.components.get(service) if service else None,
            "state": state,
            "message": text,
            "kind": message.kind,
            "severity": message.severity,
            "event_id": message.event_id,
            "incident_key": message.incident_key,
            "at": message.at,
        }

    def _post_webhook(self, payload: dict[str, Any]) -> Receipt:
        body = json.dumps(payload, default=str, separators=(",", ":")).encode()
        headers = {**self.headers, "Content-Type": "application/json"}
        if self.secret:
            ts = str(int(time.time()))
            headers[TIMESTAMP_HEADER] = ts
            headers[SIGNATURE_HEADER] = sign(self.secret, ts, body)
        assert self.cfg.url is not None  # the config model requires it in this mode
        r = request(
            self.client, "POST", self.cfg.url, f"status page '{self.name}'", content=body, headers=headers
        )
        return Receipt(http_status=r.status_code, detail=str(payload["state"]))

    # --- Atlassian Statuspage -------------------------------------------------------------------

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
        what = f"Statuspage {method} {path} ('{self.name}')"
        return request(self.client, method, self.base + path, what, json=body, headers=self.headers)

    def _update_statuspage(self, service: str, state: ComponentState, text: str) -> Receipt:
        component = self.cfg.components[service]
        r = self._call("PATCH", f"/components/{component}", {"component": {"status": state}})
        if not self.cfg.incidents:
            return Receipt(http_status=r.status_code, detail=f"component {component}: {state}")
        name = self.cfg.incident_name.format(service=service, summary="", state=state)
        incident = self._our_incident(component, name)
        fields: dict[str, Any] = {"body": text, "components": {component: state}}
        if state == "operational":
            if incident is None:
                return Receipt(http_status=r.status_code, detail=f"component {component}: operational")
            r = self._call("PATCH", f"/incidents/{incident}", {"incident": {**fields, "status": "resolved"}})
            return Receipt(http_status=r.status_code, detail=f"incident {incident} resolved")
        if incident is not None:
            r = self._call(
                "PATCH", f"/incidents/{incident}", {"incident": {**fields, "status": "identified"}}
            )
            return Receipt(http_status=r.status_code, detail=f"incident {incident} updated")
        opened = {**fields, "name": name, "status": "investigating", "component_ids": [component]}
        r = self._call("POST", "/incidents", {"incident": opened})
        return Receipt(http_status=r.status_code, detail=f"incident {_json(r).get('id')} opened")

    def _our_incident(self, component: str, name: str) -> str | None:
        """Return the id of the unresolved incident this channel opened for `component`, or None."""
        listed = _json(self._call("GET", "/incidents/unresolved"))
        for incident in listed if isinstance(listed, list) else []:
            ids = {c.get("id") for c in incident.get("components") or [] if isinstance(c, dict)}
            if incident.get("name") == name and (component in ids or not ids):
                return str(incident["id"])
        return None

    def _probe(self, message: Message) -> Receipt:
        if self.cfg.mode == "webhook":
            return self._post_webhook({**self._webhook_body(message, None, message.summary), "test": True})
        r = self._call("GET", "/components")
        listed = _json(r)
        known = {c.get("id") for c in listed if isinstance(c, dict)} if isinstance(listed, list) else set()
        missing = sorted(set(self.cfg.components.values()) - known)
        if missing:
            raise DeliveryError(
                f"Statuspage page {self.cfg.page_id} has no component {', '.join(missing)}",
                retryable=False,
                http_status=r.status_code,
            )
        return Receipt(http_status=r.status_code, detail=f"{len(known)} component(s) on the page")

    def close(self) -> None:
        self.client.close()


def _json(r: httpx.Response) -> Any:
    try:
        return r.json()
    except ValueError:
        return None
