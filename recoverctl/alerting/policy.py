"""Policy evaluation on one alert, pure: the matching policy, its conditions on the alert's
values, how long the alert has fired, and the target its action names."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import TypeAdapter, ValidationError

from recoverctl.alerting.alert import AlertIn
from recoverctl.config import Condition, Config, Policy, parse_duration

_DATETIME = TypeAdapter(datetime)


def match_policy(policies: list[Policy], alert: AlertIn) -> Policy | None:
    """Return the first policy whose `match` labels all equal the alert's labels, or None."""
    for policy in policies:
        if all(alert.labels.get(k) == v for k, v in policy.match.items()):
            return policy
    return None


def parse_number(raw: object) -> float:
    """Given 0.07, '7%', '12.5', '130s' or '2m', return a float (percent as a fraction); raise ValueError."""
    if isinstance(raw, bool) or raw is None:
        raise ValueError(f"not a number: {raw!r}")
    if isinstance(raw, int | float):
        return float(raw)
    text = str(raw).strip()
    if text.endswith("%"):
        return float(text[:-1]) / 100.0
    try:
        return float(text)
    except ValueError:
        return parse_duration(text)


def lookup_value(alert: AlertIn, ref: str) -> float | None:
    """Given 'value:NAME', 'annotation:NAME', 'label:NAME' or NAME, return the number or None."""
    kind, _, name = ref.partition(":")
    if not name:
        kind, name = "", ref
    by_kind: dict[str, list[dict[str, Any]]] = {
        "value": [alert.values],
        "annotation": [alert.annotations],
        "label": [alert.labels],
        "": [alert.values, alert.annotations, alert.labels],
    }
    places = by_kind.get(kind, [])
    for place in places:
        if name in place and place[name] is not None:
            try:
                return parse_number(place[name])
            except ValueError:
                return None
    return None


_OPS = {
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    "==": lambda a, b: a == b,
}


def check_condition(alert: AlertIn, cond: Condition) -> tuple[bool, str]:
    """Return (holds, explanation) for one condition on the alert's values."""
    value = lookup_value(alert, cond.value_from)
    if value is None:
        return False, f"{cond.value_from} missing or not a number"
    what = cond.value_from
    if cond.baseline_from:
        baseline = lookup_value(alert, cond.baseline_from)
        if not baseline:
            return False, f"{cond.baseline_from} missing or zero"
        value = value / baseline - 1.0
        what = f"{cond.value_from} vs {cond.baseline_from}"
    holds = bool(_OPS[cond.op](value, cond.threshold))
    return holds, f"{what}={value:g} {'' if holds else 'not '}{cond.op} {cond.threshold:g}"


def conditions_hold(alert: AlertIn, policy: Policy) -> tuple[bool, str]:
    if not policy.conditions:
        return True, ""
    results = [check_condition(alert, c) for c in policy.conditions]
    ok = (all if policy.conditions_mode == "all" else any)(r[0] for r in results)
    return ok, "; ".join(r[1] for r in results)


def firing_seconds(alert: AlertIn, now: float) -> float | None:
    if not alert.starts_at:
        return None
    try:
        started = _DATETIME.validate_python(alert.starts_at)
    except ValidationError:
        return None
    return now - started.timestamp()


# The target of a copy job that fills every copy repository.
ALL_COPIES = "*"


def resolve_target(cfg: Config, policy: Policy, alert: AlertIn) -> tuple[str | None, str]:
    """Return (target, '') or (None, why it is ignored) for the policy's action."""
    label_value = alert.labels.get(policy.service_from_label) if policy.service_from_label else None
    if policy.service_from_label and label_value is None and policy.service is None:
        return None, f"alert has no '{policy.service_from_label}' label to name the service"
    service = label_value or policy.service
    if policy.action == "rollback":
        if service is None:
            return None, "policy names no service (set service or service_from_label)"
        if service not in cfg.services:
            return None, f"unknown service '{service}' (not in services:)"
        return service, ""
    if policy.action == "backup":
        source = policy.source or service
        if source is None or source not in cfg.sources:
            return None, f"unknown source '{source}' (not in sources:)"
        return source, ""
    if policy.action == "copy":
        names = cfg.copy_targets()
        if policy.repository is not None and policy.repository not in names:
            return (
                None,
                f"unknown copy repository '{policy.repository}' (copies: {', '.join(names) or 'none'})",
            )
        return policy.repository or ALL_COPIES, ""
    if policy.action == "drill":
        if not policy.playbook:
            return None, "policy names no playbook"
        return policy.playbook, ""
    return service or alert.alertname or "alert", ""
