"""The Notifier protocol and the message every channel renders in its own format."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

Severity = Literal["critical", "warning", "info"]
SEVERITIES: tuple[Severity, ...] = ("critical", "warning", "info")

# Kinds that describe a change to production rather than a problem: PagerDuty gets a change event.
_CHANGE_PREFIXES = ("deploy.", "release.", "rollback.")


@dataclass(frozen=True)
class Message:
    """One thing to tell people about, channel-neutral.

    `text`/`html` replace the generated body (summaries); `dedup_key` is stable per incident so a
    retry or a later resolve refers to the same incident.
    """

    severity: str
    kind: str
    summary: str
    subject: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    dedup_key: str | None = None
    at: float = field(default_factory=time.time)
    event_id: int | None = None
    text: str | None = None
    html: str | None = None

    @property
    def incident_key(self) -> str:
        return self.dedup_key or f"recoverctl/{self.kind.rsplit('.', 1)[0]}/{self.subject or '-'}"

    @property
    def action(self) -> Literal["trigger", "resolve", "change"]:
        """Return what an incident tracker should do with this message."""
        if self.details.get("resolve") or self.kind.endswith((".resolved", ".recovered")):
            return "resolve"
        if self.kind.startswith(_CHANGE_PREFIXES) and self.severity != "critical":
            return "change"
        return "trigger"

    @property
    def title(self) -> str:
        about = f" {self.subject}" if self.subject else ""
        return f"[{self.severity.upper()}] {self.kind}{about}"

    @property
    def when(self) -> str:
        return datetime.fromtimestamp(self.at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")

    @property
    def links(self) -> list[str]:
        links = self.details.get("links") or []
        if isinstance(links, str):
            links = [links]
        url = self.details.get("url")
        return [str(x) for x in ([url] if url else []) + list(links)]

    def body(self) -> str:
        """Return the plain-text body: the summary, then details, then links."""
        if self.text:
            return self.text
        lines = [self.title, self.summary, f"time: {self.when}"]
        for k, v in self.details.items():
            if k not in ("links", "url", "resolve"):
                lines.append(f"{k}: {v}")
        lines += self.links
        return "\n".join(lines)


@dataclass
class Receipt:
    """A successful delivery: the last HTTP status (if any) and how many attempts it took."""

    http_status: int | None = None
    detail: str = ""
    attempts: int = 1


class DeliveryError(Exception):
    """A delivery attempt failed; `retryable` says whether trying again may help."""

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        http_status: int | None = None,
        retry_after: float | None = None,
    ):
        super().__init__(message)
        self.retryable = retryable
        self.http_status = http_status
        self.retry_after = retry_after
        self.attempts = 1


class Notifier(Protocol):
    name: str
    type: str

    def send(self, message: Message) -> Receipt:
        """Deliver `message`; return a Receipt; raise DeliveryError."""
        ...

    def close(self) -> None: ...
