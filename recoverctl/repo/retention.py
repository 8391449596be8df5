"""Retention policy: which snapshots to keep, and by which rule (restic semantics).

Snapshots are grouped by (kind, source, paths); each group is judged on its own. keep-last N
keeps the newest N; keep-hourly/daily/weekly/monthly/yearly N keep the newest snapshot of each of
the last N periods that have one; keep-within D keeps everything within D of the group's newest
snapshot. Pinned snapshots are always kept.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from recoverctl.repo.snapshot import Snapshot


@dataclass
class Policy:
    last: int = 0
    hourly: int = 0
    daily: int = 0
    weekly: int = 0
    monthly: int = 0
    yearly: int = 0
    within: float = 0.0  # seconds

    def empty(self) -> bool:
        return not any(
            (self.last, self.hourly, self.daily, self.weekly, self.monthly, self.yearly, self.within)
        )


@dataclass
class Decision:
    snapshot: Snapshot
    keep: bool
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.snapshot.id,
            "time": self.snapshot.time,
            "kind": self.snapshot.kind,
            "source": self.snapshot.source,
            "paths": self.snapshot.paths,
            "keep": self.keep,
            "reasons": self.reasons,
        }


def _bucket(kind: str) -> Callable[[dt.datetime], tuple[int, ...]]:
    if kind == "hourly":
        return lambda d: (d.year, d.month, d.day, d.hour)
    if kind == "daily":
        return lambda d: (d.year, d.month, d.day)
    if kind == "weekly":
        return lambda d: tuple(d.isocalendar()[:2])
    if kind == "monthly":
        return lambda d: (d.year, d.month)
    return lambda d: (d.year,)


def group_key(s: Snapshot) -> tuple[str, str, tuple[str, ...]]:
    return (s.kind, s.source or "", tuple(sorted(s.paths)))


PolicyFor = Callable[[str | None], Policy | None]


def apply_policy(
    snapshots: list[Snapshot], policy: Policy | PolicyFor, pinned: dict[str, str]
) -> list[Decision]:
    """Return a decision per snapshot (newest first within each group).

    `policy` is one policy for every group, or a function giving the policy for a group's source;
    a group it gives None for is kept whole.
    """
    groups: dict[tuple[str, str, tuple[str, ...]], list[Snapshot]] = {}
    for s in snapshots:
        groups.setdefault(group_key(s), []).append(s)
    out: list[Decision] = []
    for snaps in groups.values():
        snaps = sorted(snaps, key=lambda s: s.time, reverse=True)
        decisions = [Decision(s, False) for s in snaps]
        group_policy = policy if isinstance(policy, Policy) else policy(snaps[0].source)
        if group_policy is None:
            for d in decisions:
                d.keep = True
                d.reasons.append(f"no retention rule for source '{d.snapshot.source or '(none)'}'")
            out.extend(decisions)
            continue
        _keep_by_rules(decisions, group_policy)
        for d in decisions:
            reason = pinned.get(d.snapshot.id)
            if reason is not None:
                d.reasons.append(f"pinned: {reason}")
            d.keep = bool(d.reasons)
        out.extend(decisions)
    return out


def _keep_by_rules(decisions: list[Decision], policy: Policy) -> None:
    """Add the reasons each rule of `policy` keeps a snapshot for (decisions newest first)."""
    for i, d in enumerate(decisions):
        if i < policy.last:
            d.reasons.append(f"last {policy.last}")
    for kind in ("hourly", "daily", "weekly", "monthly", "yearly"):
        n = getattr(policy, kind)
        if not n:
            continue
        key = _bucket(kind)
        seen: set[tuple[int, ...]] = set()
        for d in decisions:
            b = key(dt.datetime.fromtimestamp(d.snapshot.time, dt.UTC))
            if b in seen:
                continue
            if len(seen) >= n:
                break
            seen.add(b)
            d.reasons.append(f"{kind} {n}")
    if policy.within and decisions:
        newest = decisions[0].snapshot.time
        for d in decisions:
            if newest - d.snapshot.time <= policy.within:
                d.reasons.append(f"within {policy.within:g}s")
