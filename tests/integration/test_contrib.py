"""The ecosystem files load in the real tools: amtool, promtool; the dashboard uses real series."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONTRIB = ROOT / "contrib"


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
    assert "SUCCESS: 10 rules found" in r.stdout


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
