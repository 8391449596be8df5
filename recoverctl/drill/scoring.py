"""Scoring: measured RTO/RPO against targets and the checks, giving the verdict and its reason.

Measured RTO = wall time from drill start until every check has passed.
Measured RPO = drill start - the recovered point's last commit time when recovering to the latest
point (the data an incident right now would lose), or the current archive exposure (drill start -
newest archived WAL or backup) for drills to an earlier point. docs/drills.md is the reference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from recoverctl.catalog.recovery import exposure_at
from recoverctl.units import human_duration


@dataclass
class Score:
    verdict: str  # pass / fail
    reasons: list[str]

    @property
    def reason(self) -> str | None:
        return "; ".join(self.reasons) if self.reasons else None


def measured_rpo(
    *,
    recovery_kind: str,
    drill_start: float,
    recovered_commit_ts: float | None,
    snapshot_time: float | None,
    last_archived_at: float | None,
) -> tuple[float | None, str]:
    """Return (rpo_s, basis) as defined in docs/drills.md; rpo_s None when nothing can be measured.

    `last_archived_at` is the source's recovery point as the catalog has it
    (`catalog.recovery.recovery_point(...).last_archived_at`)."""
    if recovery_kind == "latest":
        if recovered_commit_ts is not None:
            return max(0.0, drill_start - recovered_commit_ts), "recovered last commit"
        if snapshot_time is not None:
            # No transaction was replayed after the backup: the backup's end is the newest state.
            return max(0.0, drill_start - snapshot_time), "snapshot time (no commit replayed)"
        return None, "unknown"
    # The source's RPO exposure at drill start, measured like `status` measures it now.
    newest, exposure = exposure_at(drill_start, last_archived_at, snapshot_time)
    if exposure is None:
        return None, "unknown"
    basis = "archive exposure (last archived WAL)" if newest == last_archived_at else "newest backup"
    return exposure, basis


def score(
    *,
    checks: list[dict[str, Any]],
    rto_s: float | None,
    rpo_s: float | None,
    rto_target_s: float,
    rpo_target_s: float,
    failure: str | None = None,
) -> Score:
    """Given what was measured, return the verdict with one reason per miss (each naming both numbers)."""
    reasons: list[str] = []
    if failure:
        reasons.append(failure)
    for c in checks:
        if not c["ok"]:
            first = str(c["output"]).strip().splitlines()[0] if str(c["output"]).strip() else "failed"
            reasons.append(f"check '{c['name']}' failed: {first}")
    if failure is None:
        if rto_s is None:
            reasons.append("RTO was not measured")
        elif rto_s > rto_target_s:
            reasons.append(
                f"RTO {rto_s:.1f}s ({human_duration(rto_s)}) exceeds the target "
                f"{rto_target_s:.0f}s ({human_duration(rto_target_s)})"
            )
        if rpo_s is None:
            reasons.append("RPO could not be measured (no commit time, archive status or backup time)")
        elif rpo_s > rpo_target_s:
            reasons.append(
                f"RPO {rpo_s:.1f}s ({human_duration(rpo_s)}) exceeds the target "
                f"{rpo_target_s:.0f}s ({human_duration(rpo_target_s)})"
            )
    return Score("fail" if reasons else "pass", reasons)
