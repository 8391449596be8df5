"""The ecosystem files load in the real tools: amtool, promtool; the rules fire and route as the
runbook says; the dashboard and rules use real series."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from recoverctl.alerting.alert import AlertIn
from recoverctl.alerting.policy import conditions_hold, match_policy
from recoverctl.config import parse_config
from tests.fixtures.net import wait_until

ROOT = Path(__file__).resolve().parents[2]
CONTRIB = ROOT / "contrib"
MONITORING = ROOT / "docs" / "monitoring.md"
# The runbook's "When to Rollback" as alerts: the only ones the rollback webhook receives.
ROLLBACK_TRIGGERS = {"HighErrorRate", "HighLatency", "TargetDown", "PerformanceDegradation"}


def _alerts() -> list[dict[str, Any]]:
    groups = yaml.safe_load((CONTRIB / "prometheus-rules.yml").read_text())["groups"]
    return [r for g in groups for r in g["rules"] if "alert" in r]


def _receivers(labels: dict[str, str]) -> set[str]:
    r = subprocess.run(
        [
            "amtool",
            "config",
            "routes",
            "test",
            f"--config.file={CONTRIB / 'alertmanager.yml'}",
            *(f"{k}={v}" for k, v in labels.items()),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    return set(r.stdout.strip().split(","))


def test_alertmanager_example_passes_amtool() -> None:
    r = subprocess.run(
        ["amtool", "check-config", str(CONTRIB / "alertmanager.yml")], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


def test_prometheus_rules_pass_promtool() -> None:
    r = subprocess.run(
        ["promtool", "check", "rules", str(CONTRIB / "prometheus-rules.yml")], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"SUCCESS: {len(_alerts())} rules found" in r.stdout


def test_every_rule_fires_and_stays_silent_as_its_unit_tests_say() -> None:
    r = subprocess.run(
        ["promtool", "test", "rules", str(CONTRIB / "prometheus-rules.test.yml")],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout
    # The runbook rules this file added have cases; the older ones are plain comparisons.
    tested = set(re.findall(r"alertname: (\w+)", (CONTRIB / "prometheus-rules.test.yml").read_text()))
    assert tested >= {
        *("PerformanceDegradation", "RecoverctlWalPushFailing", "RecoverctlRepositoryGrowth"),
        *("RecoverctlDrillOverRto", "RecoverctlDrillOverRpo"),
        *("RecoverctlVerifyOverdue", "RecoverctlVerifyFailed"),
    }


@pytest.mark.parametrize("rule", _alerts(), ids=lambda r: "-".join([r["alert"], *r["labels"].values()]))
def test_every_alert_has_a_level_a_runbook_section_and_routes_as_the_runbook_says(
    rule: dict[str, Any],
) -> None:
    name, labels = rule["alert"], rule["labels"]
    assert labels["severity"] in ("critical", "warning")
    headings = set(re.findall(r"^### (\w+)$", MONITORING.read_text(), re.M))
    assert name in headings and rule["annotations"]["runbook"] == f"docs/monitoring.md#{name.lower()}"
    own = name.startswith("Recoverctl")
    assert (labels.get("team") == "recoverctl") == own
    # The labels the alert carries when it fires: its rule's, its name, and the series' own
    # (application series carry `service`; so may a source named like a service).
    firing = {**labels, "alertname": name, "service": "web"}
    people = "page" if labels["severity"] == "critical" else "notify"
    expected = {people, "recoverctl"} if name in ROLLBACK_TRIGGERS else {people}
    assert _receivers(firing) == expected


def test_the_documented_degradation_policy_acts_on_what_the_rule_sends() -> None:
    text = MONITORING.read_text()
    block = text.split("### PerformanceDegradation", 1)[1].split("```yaml", 1)[1].split("```", 1)[0]
    cfg = parse_config(
        {
            **yaml.safe_load(block),
            "services": {"web": {"target": "docker", "image": "web", "container": "web"}},
        },
        env={},
    )
    labels = {"alertname": "PerformanceDegradation", "service": "web", "signal": "latency"}
    # The annotation promtool's test case shows the rule sending: 105 % worse.
    worse = AlertIn("alertmanager", "firing", labels, annotations={"degradation": "1.0526315789473686"})
    policy = match_policy(cfg.policies, worse)
    assert policy is not None and policy.action == "rollback"
    assert conditions_hold(worse, policy)[0]
    mild = AlertIn("alertmanager", "firing", labels, annotations={"degradation": "0.2"})
    assert not conditions_hold(mild, policy)[0]
    own = AlertIn("alertmanager", "firing", {"alertname": "RecoverctlVerifyOverdue", "team": "recoverctl"})
    assert match_policy(cfg.policies, own) is None


def test_dashboard_and_rules_only_use_series_serve_exports() -> None:
    from recoverctl.service import metrics

    source = Path(metrics.__file__).read_text()
    exported = set(re.findall(r'"(recoverctl_[a-z_]+)"', source))
    # Counters gain _total, histograms _bucket in the exposition.
    names = exported | {f"{n}_total" for n in exported} | {f"{n}_bucket" for n in exported}
    dashboard = json.loads((CONTRIB / "grafana-dashboard.json").read_text())
    exprs = [tgt["expr"] for p in dashboard["panels"] for tgt in p["targets"]]
    exprs.append((CONTRIB / "prometheus-rules.yml").read_text())
    used = {m for e in exprs for m in re.findall(r"recoverctl_[a-z_]+", e)}
    assert used and used <= names, used - names


def _shipped_alertmanager_config(hook: str, token_file: Path) -> dict[str, Any]:
    """contrib/alertmanager.yml as shipped, pointed at a test `serve` and its token, with
    sub-second grouping so notifications leave at once; the routing tree is untouched."""
    config: dict[str, Any] = yaml.safe_load((CONTRIB / "alertmanager.yml").read_text())
    (hook_config,) = next(r for r in config["receivers"] if r["name"] == "recoverctl")["webhook_configs"]
    hook_config["url"] = hook
    hook_config["http_config"]["authorization"]["credentials_file"] = str(token_file)
    routes = [config["route"], *config["route"]["routes"]]
    for route in routes:
        for key in ("group_wait", "group_interval"):
            if key in route:
                route[key] = "200ms"
    return config


def test_the_shipped_alertmanager_route_sends_only_rollback_triggers_to_serve(
    cli: Any, serve_factory: Any, alertmanager_factory: Any
) -> None:
    token = "contrib-route-token-0123456789"
    token_file = cli.home / "token"
    token_file.write_text(token + "\n")
    # A policy that matches every alert: any alert that reached serve would be decided.
    cli.write_config(
        {
            "serve": {"auth": {"bearer_token_file": str(token_file)}, "poll_interval": "0.1s"},
            "policies": [{"name": "everything", "match": {}, "action": "notify", "service": "web"}],
        }
    )
    srv = serve_factory(cli, token=token)
    am = alertmanager_factory(
        None, None, config=_shipped_alertmanager_config(f"{srv.url}/hooks/alertmanager", token_file)
    )
    sent = [
        {
            "alertname": "RecoverctlVerifyFailed",
            "team": "recoverctl",
            "severity": "critical",
            "repository": "r",
        },
        {
            "alertname": "RecoverctlWalPushFailing",
            "team": "recoverctl",
            "severity": "warning",
            "source": "web",
        },
        {"alertname": "ElevatedLatency", "service": "web", "severity": "warning"},
        {
            "alertname": "PerformanceDegradation",
            "service": "web",
            "severity": "critical",
            "signal": "latency",
        },
    ]
    for labels in sent:
        am.post_alert(labels, annotations={"degradation": "1.05"})

    def routed() -> dict[str, set[str]] | None:
        groups = httpx.get(f"{am.url}/api/v2/alerts/groups", timeout=5).json()
        by_alert: dict[str, set[str]] = {}
        for g in groups:
            for a in g["alerts"]:
                by_alert.setdefault(a["labels"]["alertname"], set()).add(g["receiver"]["name"])
        return by_alert if len(by_alert) == len(sent) else None

    assert wait_until(routed, timeout=30, what="alertmanager to group every alert") == {
        "RecoverctlVerifyFailed": {"page"},
        "RecoverctlWalPushFailing": {"notify"},
        "ElevatedLatency": {"notify"},
        "PerformanceDegradation": {"recoverctl", "page"},
    }
    decided = wait_until(
        lambda: srv.client.get("/api/alerts", headers=srv.headers()).json(), timeout=30, what="a delivery"
    )
    assert [(d["alertname"], d["decision"]) for d in decided] == [("PerformanceDegradation", "acted")]
