"""The series the runbook rules read, on a real `serve`'s /metrics: repository size and verify age
from real verifies, drill RTO/RPO against their targets from a real drill, the verify schedule's
allowance from the config; and a real Prometheus firing contrib/prometheus-rules.yml on them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from recoverctl.repo import Repository
from recoverctl.storage.local import LocalStorage
from tests.conftest import Cli
from tests.fixtures.net import wait_until
from tests.inproc_cli import InProcessCli

pytestmark = pytest.mark.integration

FAST_KDF = {"name": "scrypt", "n": 2**10, "r": 8, "p": 1}
TOKEN = "metrics-series-token-0123456789"
RULES = Path(__file__).resolve().parents[2] / "contrib" / "prometheus-rules.yml"


def _samples(srv: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = srv.client.get("/metrics")
    assert r.status_code == 200
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


DAILY_AND_SUNDAY_VERIFIES = [
    # Daily at 03:00 and Sundays at 12:00: the longest gap between verifies is a day.
    {"name": "verify-nightly", "cron": "0 3 * * *", "job": "verify", "timeout": "1h"},
    {
        "name": "verify-full",
        "cron": "0 12 * * 0",
        "job": "-v verify --read-data",
        "jitter": "10m",
        "timeout": "2h",
    },
    {"name": "backup-docs", "cron": "0 * * * *", "job": "backup files --source docs"},
]


def _world(
    cli: Cli, tmp_path: Path, schedules: list[dict[str, Any]], targets: dict[str, str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A repository with one backup of source 'docs', verified, and one drill of it against
    `targets`; a second source 'uploads' (critical tier) never drilled. Return the drill's
    result and `status --json`'s repository item."""
    icli = InProcessCli(cli)
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.bin").write_bytes(os.urandom(1_200_000))
    (tmp_path / "token").write_text(TOKEN)
    icli.write_config(
        {
            "repository": {"url": str(tmp_path / "repo"), "pack_size_mib": 1},
            "sources": {
                "docs": {"type": "files", "paths": [str(src)]},
                "uploads": {"type": "files", "paths": [str(src)], "tier": "critical"},
            },
            "schedules": schedules,
            "serve": {"auth": {"bearer_token_file": str(tmp_path / "token")}},
        }
    )
    cli.env["RECOVERCTL_PASSWORD"] = "pw"
    Repository.init(LocalStorage(tmp_path / "repo"), "pw", kdf=FAST_KDF, pack_size_mib=1)
    icli("backup", "files", "--source", "docs", "--json", check=0)
    icli("verify", "--json", check=0)
    playbook = tmp_path / "docs.yaml"
    body = {"name": "docs-nightly", "source": "docs", "recovery_point": "latest", "targets": targets}
    playbook.write_text(yaml.safe_dump({"drill": {**body, "where": {"temp_dir": str(tmp_path)}}}))
    drill = icli("drill", "run", str(playbook), "--json", check=None).json()
    return drill, icli("status", "--json", check=None).json()["repository"]


def _damage_a_pack(tmp_path: Path) -> None:
    packs = [p for p in (tmp_path / "repo" / "data").rglob("*") if p.is_file()]
    pack = max(packs, key=lambda p: p.stat().st_size)
    pack.write_bytes(pack.read_bytes()[:-100])


def test_metrics_show_repository_size_verify_age_and_drill_targets(
    cli: Cli, serve_factory: Any, tmp_path: Path
) -> None:
    drill, repo_status = _world(cli, tmp_path, DAILY_AND_SUNDAY_VERIFIES, {"rto": "30m", "rpo": "2h"})
    assert drill["verdict"] == "pass", drill
    on_disk = sum(p.stat().st_size for p in (tmp_path / "repo").rglob("*") if p.is_file())
    url = repo_status["url"]
    verified_at = repo_status["last_verify"]["finished_at"]

    srv = serve_factory(cli, token=TOKEN)
    m = _samples(srv)
    repo = (("repository", url),)
    assert m[("recoverctl_repository_size_bytes", repo)] == on_disk
    assert m[("recoverctl_repository_objects", repo)] == repo_status["objects"]
    assert m[("recoverctl_repository_size_timestamp_seconds", repo)] == verified_at
    assert m[("recoverctl_last_verify_timestamp_seconds", repo)] == verified_at
    assert m[("recoverctl_last_verify_success", repo)] == 1.0
    assert 0 <= m[("recoverctl_last_verify_age_seconds", repo)] < 600
    # One day between verifies, plus the longest jitter (10 min) and timeout (2 h) of the two.
    assert m[("recoverctl_verify_max_age_seconds", repo)] == 86400 + 600 + 7200
    # The drill's own targets (its playbook's) for docs; the critical tier's for the undrilled source.
    docs, uploads = (("source", "docs"),), (("source", "uploads"),)
    assert m[("recoverctl_drill_rto_target_seconds", docs)] == 1800
    assert m[("recoverctl_drill_rpo_target_seconds", docs)] == 7200
    assert m[("recoverctl_last_drill_rto_seconds", docs)] == drill["rto_s"]
    assert m[("recoverctl_drill_rto_target_seconds", uploads)] == 7200
    assert m[("recoverctl_drill_rpo_target_seconds", uploads)] == 3600
    assert ("recoverctl_last_drill_rto_seconds", uploads) not in m

    # A damaged pack: the next verify fails. Success drops to 0, the last *successful* verify's
    # time stays, and the size is the failed verify's fresh measurement.
    _damage_a_pack(tmp_path)
    InProcessCli(cli)("verify", "--read-data", "--json", check=13)
    m = _samples(srv)
    assert m[("recoverctl_last_verify_success", repo)] == 0.0
    assert m[("recoverctl_last_verify_timestamp_seconds", repo)] == verified_at
    assert m[("recoverctl_repository_size_bytes", repo)] == on_disk - 100
    assert m[("recoverctl_repository_size_timestamp_seconds", repo)] > verified_at


def _rule_expr(name: str) -> str:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    (expr,) = [r["expr"] for g in groups for r in g["rules"] if r.get("alert") == name]
    return str(expr)


def test_prometheus_fires_the_recoverctl_rules_on_what_serve_exports(
    cli: Cli, serve_factory: Any, prometheus_factory: Any, tmp_path: Path
) -> None:
    # Verify due every second (allowance: 1 s gap + 1 s timeout), a drill scored against a 1 ms
    # RTO target no restore meets, then a verify that finds damage.
    every_second = [{"name": "verify-always", "cron": "* * * * * *", "job": "verify", "timeout": "1s"}]
    drill, repo_status = _world(cli, tmp_path, every_second, {"rto": "0.001s", "rpo": "2h"})
    assert drill["verdict"] == "fail" and drill["rto_s"] > 0.001, drill
    _damage_a_pack(tmp_path)
    InProcessCli(cli)("verify", "--read-data", "--json", check=13)
    url = repo_status["url"]

    srv = serve_factory(cli, token=TOKEN)
    prom = prometheus_factory([f"127.0.0.1:{srv.port}"], [RULES])
    expected = {
        ("RecoverctlDrillOverRto", "docs", "firing"),
        ("RecoverctlDrillFailed", "docs", "firing"),
        ("RecoverctlVerifyFailed", url, "firing"),
        # Its condition holds (the last successful verify is older than 2 s); `for: 10m` keeps
        # it pending here.
        ("RecoverctlVerifyOverdue", url, "pending"),
    }

    def alerts() -> set[tuple[str, str, str]] | None:
        held = {
            (a["labels"]["alertname"], a["labels"].get("source") or a["labels"]["repository"], a["state"])
            for a in prom.alerts()
        }
        return held if expected <= held else None

    held = wait_until(alerts, timeout=60, what=f"the recoverctl alerts in {prom.url}")
    # Within its RPO target, never drilled, nothing degraded: no other alert.
    assert held == expected
    (overdue,) = prom.query(_rule_expr("RecoverctlVerifyOverdue"))
    assert overdue["metric"]["repository"] == url and float(overdue["value"][1]) > 2
