"""One alert as any webhook source delivers it, and the decision taken on it."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field


@dataclass
class AlertIn:
    """One alert as any webhook source delivers it, normalised."""

    source: str
    status: str  # firing / resolved
    labels: dict[str, str]
    annotations: dict[str, str] = field(default_factory=dict)
    values: dict[str, float | None] = field(default_factory=dict)
    fingerprint: str | None = None
    starts_at: str | None = None
    group_key: str | None = None

    @property
    def alertname(self) -> str | None:
        return self.labels.get("alertname")

    def stable_fingerprint(self) -> str:
        """Return the sender's fingerprint, or a hash of the labels when it sent none."""
        if self.fingerprint:
            return self.fingerprint
        canon = json.dumps(self.labels, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canon.encode()).hexdigest()[:16]

    def incident_key(self) -> str:
        return f"{self.source}:{self.stable_fingerprint()}:{self.starts_at or ''}"


@dataclass
class Decision:
    decision: str
    reason: str
    policy: str | None = None
    service: str | None = None
    job_id: int | None = None
    take_incident: bool = False
    escalate: bool = False
