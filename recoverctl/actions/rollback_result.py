"""What a rollback returns: its outcome and step timeline, or (dry run) its plan.

The `--json` keys are the ones `recoverctl rollback` has always printed; the error of a failed
rollback carries the same timeline as `details["rollback"]`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class StepOutcome:
    name: str
    outcome: str  # ok / skipped / failed / pending / running / planned
    seconds: float
    output: dict[str, Any] | None = None


@dataclass(frozen=True)
class RollbackResult:
    """A rollback that ran (or runs): `result` is succeeded, running or failed."""

    result: str
    rollback_id: int
    service: str
    from_version: str | None
    to_version: str | None
    schema_mode: str
    reason: str | None
    actor: str | None
    steps: list[StepOutcome]
    duration_s: float
    error: str | None
    plan: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RollbackResult:
        """Given `to_json()` output (e.g. an error's details["rollback"]), return the result."""
        return cls(**{**data, "steps": [StepOutcome(**s) for s in data["steps"]]})


@dataclass(frozen=True)
class RollbackPlanned:
    """A dry run: what `rollback` would do (`plan` is `plan_rollback`'s), nothing changed."""

    service: str
    from_version: str
    to_version: str
    schema_mode: str
    steps: list[str]
    plan: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "result": "planned",
            "dry_run": True,
            "rollback_id": None,
            "service": self.service,
            "from_version": self.from_version,
            "to_version": self.to_version,
            "schema_mode": self.schema_mode,
            "steps": [{"name": s, "outcome": "planned", "seconds": 0.0} for s in self.steps],
            "duration_s": 0.0,
            "plan": self.plan,
        }
