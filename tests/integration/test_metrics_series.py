"""The series the runbook rules read, on a real `serve`'s /metrics: repository size and verify age
from real verifies, drill RTO/RPO against their targets from a real drill, the verify schedule's
allowance from the config."""

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
from tests.inproc_cli import InProcessCli

pytestmark = pytest.mark.integration

FAST_KDF = {"name": "scrypt", "n": 2**10, "r": 8, "p": 1}
TOKEN = "metrics-series-token-0123456789"


def _samples(srv: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = srv.client.get("/metrics")
    assert r.status_code == 200
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


def _config(tmp_path: Path, src: Path) -> dict[str, Any]:
    (tmp_path / "token").write_text(TOKEN)
    return {
        "repository": {"url": str(tmp_path / "repo"), "pack_size_mib": 1},
        "sources": {
            "docs": {"type": "files", "paths": [str(src)]},
            "uploads": {"type": "files", "paths": [str(src)], "tier": "critical"},
        },
        "schedules": [
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
        ],
        "serve": {"auth": {"bearer_token_file": str(tmp_path / "token")}},
    }


def test_metrics_show_repository_size_verify_age_and_drill_targets(
    cli: Cli, serve_factory: Any, tmp_path: Path
) -> None:
    icli = InProcessCli(cli)
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.bin").write_bytes(os.urandom(1_200_000))
    icli.write_config(_config(tmp_path, src))
    cli.env["RECOVERCTL_PASSWORD"] = "pw"
    Repository.init(LocalStorage(tmp_path / "repo"), "pw", kdf=FAST_KDF, pack_size_mib=1)
    icli("backup", "files", "--source", "docs", "--json", check=0)
    icli("verify", "--json", check=0)
    on_disk = sum(p.stat().st_size for p in (tmp_path / "repo").rglob("*") if p.is_file())
    playbook = tmp_path / "docs.yaml"
    playbook.write_text(
        yaml.safe_dump(
            {
                "drill": {
                    "name": "docs-nightly",
                    "source": "docs",
                    "recovery_point": "latest",
                    "targets": {"rto": "30m", "rpo": "2h"},
                    "where": {"temp_dir": str(tmp_path)},
                }
            }
        )
    )
    drill = icli("drill", "run", str(playbook), "--json", check=0).json()
    repo_status = icli("status", "--json", check=None).json()["repository"]
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
    packs = [p for p in (tmp_path / "repo" / "data").rglob("*") if p.is_file()]
    pack = max(packs, key=lambda p: p.stat().st_size)
    pack.write_bytes(pack.read_bytes()[:-100])
    icli("verify", "--read-data", "--json", check=13)
    m = _samples(srv)
    assert m[("recoverctl_last_verify_success", repo)] == 0.0
    assert m[("recoverctl_last_verify_timestamp_seconds", repo)] == verified_at
    assert m[("recoverctl_repository_size_bytes", repo)] == on_disk - 100
    assert m[("recoverctl_repository_size_timestamp_seconds", repo)] > verified_at
