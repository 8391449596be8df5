"""The escalation levels in force, and which (level, repeat) notifications are due at a moment."""

from __future__ import annotations

import math
from dataclasses import dataclass

from recoverctl.config import RUNBOOK_LEVELS, Config, EscalationLevel
from recoverctl.notify.routing import channels_for


@dataclass(frozen=True)
class Level:
    """A level in force: when it starts after opening, where it goes, how often it repeats."""

    level: int
    after: float
    routes: list[str]
    repeat: float | None = None


@dataclass(frozen=True)
class Step:
    """One escalation notification: level `level`, its `repeat`-th repetition (0 = the first)."""

    level: int
    repeat: int
    due_at: float
    routes: list[str]


def _management(cfg: Config) -> list[str]:
    """The runbook's level 3 goes to management: the email channels, else the critical route."""
    emails = [name for name, ch in cfg.notifications.channels.items() if ch.type == "email"]
    return emails or runbook_route(cfg, "critical")


def runbook_route(cfg: Config, severity: str) -> list[str]:
    """Return the channels `severity` goes to: the one routing rule deliveries use
    (`notify.routing.channels_for`: `notifications.routes`, or the runbook's without them)."""
    return channels_for(cfg, severity)


def levels(cfg: Config, severity: str) -> list[Level]:
    """Given the config and an incident's severity, return the levels in force, in order: the
    configured `escalation:` list, or the runbook's (level 1 to the severity's route, level 2 to
    the critical route as well, level 3 to management), routes as `runbook_route` gives them."""
    configured: list[EscalationLevel] | None = cfg.escalation
    if configured is not None:
        return [Level(x.level, x.after, list(x.routes), x.repeat) for x in configured]
    critical = runbook_route(cfg, "critical")
    own = runbook_route(cfg, severity) or critical
    wider = own + [r for r in critical if r not in own]
    by_level = {1: own, 2: wider, 3: _management(cfg)}
    return [Level(n, after, by_level[n]) for n, after in RUNBOOK_LEVELS]


def due_steps(in_force: list[Level], opened_at: float, now: float) -> list[Step]:
    """Return the notifications due at `now` for an incident opened at `opened_at`: every level
    whose time has come once (a level passed by the next one is not repeated any more), and the
    newest repetition of the current level (missed repetitions collapse into one)."""
    steps: list[Step] = []
    for i, lv in enumerate(in_force):
        start = opened_at + lv.after
        if start > now:
            break
        end = opened_at + in_force[i + 1].after if i + 1 < len(in_force) else math.inf
        current = now < end
        repeat = 0
        if current and lv.repeat:
            repeat = int((now - start) // lv.repeat)
        steps.append(Step(lv.level, 0, start, lv.routes))
        if repeat:
            steps.append(Step(lv.level, repeat, start + repeat * lv.repeat, lv.routes))  # type: ignore[operator]
    return steps
