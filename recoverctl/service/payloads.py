"""Typed webhook payloads: Alertmanager (v4), Grafana-managed alerting (v1) and recoverctl's generic event.

Unknown fields are tolerated (senders add fields over time, e.g. `truncatedAlerts`); the fields
recoverctl reads are validated. Each payload converts to `AlertIn` for the intake action.
`parse_body` is the one JSON parser for every hook body.
"""

from __future__ import annotations

import json
import re
from itertools import accumulate
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from recoverctl.actions.alert_intake import AlertIn

Status = Literal["firing", "resolved"]
# Bounded so a hostile sender cannot make one request expensive to decide.
MAX_ALERTS = 1000
# The payloads nest 4 levels (body → alerts → alert → labels); extra fields get room to spare.
# Far below the recursion limit, so neither the parser nor the error report can overflow the stack.
MAX_JSON_DEPTH = 32

# A string runs to its closing quote, or to the end of an invalid body: possessive, and never
# restarted inside a string, so the scan stays linear whatever the body holds.
_JSON_STRING = re.compile(r'"(?:[^"\\]++|\\.)*+(?:"|\\?\Z)', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


def nesting_depth(text: str) -> int:
    """Return the deepest array/object nesting of a JSON text (brackets inside strings do not count).

    Exact for valid JSON; for invalid JSON the parser fails anyway, at or before the point where
    this count could be off.
    """
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text))
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0)


def _refuse_constant(name: str) -> Any:
    # NaN and Infinity are not JSON (RFC 8259) though Python's parser accepts them.
    raise ValueError(f"{name} is not valid JSON")


def parse_body(body: bytes, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Return the JSON value of a hook body; raise ValueError saying why it is refused (a 400).

    The body must be UTF-8 (RFC 8259) and nest at most `max_depth` levels: the depth is checked
    before parsing, so a deeply nested body costs two regular-expression passes, never a
    RecursionError.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"body is not UTF-8 JSON: {e}") from None
    depth = nesting_depth(text)
    if depth > max_depth:
        raise ValueError(f"body nests {depth} levels deep; at most {max_depth} are accepted")
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except ValueError as e:
        raise ValueError(f"body is not JSON: {e}") from None


class _Tolerant(BaseModel):
    model_config = ConfigDict(extra="allow")


class AlertmanagerAlert(_Tolerant):
    status: Status
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: str | None = None
    endsAt: str | None = None
    generatorURL: str | None = None
    fingerprint: str | None = None


class AlertmanagerWebhook(_Tolerant):
    """Alertmanager's webhook_config body (version 4)."""

    version: str = "4"
    groupKey: str
    status: Status
    receiver: str | None = None
    alerts: list[AlertmanagerAlert] = Field(max_length=MAX_ALERTS)
    groupLabels: dict[str, str] = Field(default_factory=dict)
    commonLabels: dict[str, str] = Field(default_factory=dict)
    commonAnnotations: dict[str, str] = Field(default_factory=dict)
    externalURL: str | None = None
    truncatedAlerts: int = 0

    def to_alerts(self, source: str = "alertmanager") -> list[AlertIn]:
        return [
            AlertIn(
                source=source,
                status=a.status,
                labels=a.labels,
                annotations=a.annotations,
                fingerprint=a.fingerprint,
                starts_at=a.startsAt,
                group_key=self.groupKey,
            )
            for a in self.alerts
        ]


class GrafanaAlert(AlertmanagerAlert):
    values: dict[str, float | None] | None = None
    valueString: str | None = None


class GrafanaWebhook(_Tolerant):
    """Grafana-managed alerting webhook body (version 1): Alertmanager's shape plus values and state."""

    version: str = "1"
    groupKey: str | None = None
    status: Status
    state: str | None = None
    receiver: str | None = None
    alerts: list[GrafanaAlert] = Field(max_length=MAX_ALERTS)
    groupLabels: dict[str, str] = Field(default_factory=dict)
    commonLabels: dict[str, str] = Field(default_factory=dict)
    title: str | None = None
    message: str | None = None

    def to_alerts(self) -> list[AlertIn]:
        return [
            AlertIn(
                source="grafana",
                status=a.status,
                labels=a.labels,
                annotations=a.annotations,
                values=dict(a.values or {}),
                fingerprint=a.fingerprint,
                starts_at=a.startsAt,
                group_key=self.groupKey,
            )
            for a in self.alerts
        ]


class GenericEvent(_Tolerant):
    """A signed event from any other sender: one alert, identified by `id` (or its labels)."""

    alertname: str = Field(min_length=1, max_length=200)
    status: Status = "firing"
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    values: dict[str, float | None] = Field(default_factory=dict)
    id: str | None = Field(default=None, max_length=200)
    started_at: str | None = None

    def to_alerts(self) -> list[AlertIn]:
        return [
            AlertIn(
                source="generic",
                status=self.status,
                labels={**self.labels, "alertname": self.alertname},
                annotations=self.annotations,
                values=self.values,
                fingerprint=self.id,
                starts_at=self.started_at,
            )
        ]
