"""Typed webhook payloads: Alertmanager (v4), Grafana-managed alerting (v1) and recoverctl's generic event.

Unknown fields are tolerated (senders add fields over time, e.g. `truncatedAlerts`); the fields
recoverctl reads are validated. Each payload converts to `AlertIn` for the intake action.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from recoverctl.actions.alert_intake import AlertIn

Status = Literal["firing", "resolved"]
# Bounded so a hostile sender cannot make one request expensive to decide.
MAX_ALERTS = 1000


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
