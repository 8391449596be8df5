"""`drill history|report`, playbook errors and `status` through the CLI, on a real SQLite catalog."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

import pytest

from recoverctl.catalog import Catalog
from recoverctl.catalog import tables as t
from recoverctl.cli.main import main
from tests.conftest import Cli, CliResult

pytestmark = pytest.mark.integration


@pytest.fixture
def run(cli: Cli, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Any:
    """`recoverctl` in-process (the exit-code contract of main() included): these tests only read
    the catalog, and a subprocess per call costs seconds on a loaded machine."""

    def invoke(*args: str, check: int | None = None) -> CliResult:
        for k in list(os.environ):
            if k.startswith("RECOVERCTL_"):
                monkeypatch.delenv(k)
        for k, v in cli.env.items():
            monkeypatch.setenv(k, v)
        monkeypatch.chdir(cli.home)
        capsys.readouterr()
        with pytest.raises(SystemExit) as e:
            main(list(args))
        out, err = capsys.readouterr()
        result = CliResult(int(e.value.code or 0), out, err)
        if check is not None:
            assert result.code == check, f"{args} exited {result.code}: {err}"
        return result

    return invoke


def _catalog(cli: Cli) -> Catalog:
    return Catalog(cli.env["RECOVERCTL_CATALOG"])


def _add_drill(catalog: Catalog, **values: Any) -> int:
    row = {
        "name": "main-nightly",
        "source": "main",
        "started_at": time.time() - 60,
        "finished_at": time.time() - 30,
        "verdict": "pass",
        "rto_s": 30.0,
        "rpo_s": 120.0,
        "rto_target_s": 7200.0,
        "rpo_target_s": 3600.0,
        "recovery_point": "latest",
        "phases": {"select": 0.1, "fetch": 10.0, "recovery": 12.0, "startup": 0.5, "checks": 7.4},
        "checks": [
            {
                "name": "select count(*) from t",
                "kind": "sql",
                "ok": True,
                "output": "got 5, expected >= 1",
                "expected": ">= 1",
                "actual": 5,
            }
        ],
        "snapshot_id": "abc123",
        "bytes": 1000,
        "details": {"rpo_basis": "recovered last commit", "recovered_commit_ts": time.time() - 180},
    }
    row.update(values)
    with catalog.begin() as conn:
        return int(conn.execute(t.drills.insert().values(**row)).inserted_primary_key[0])  # type: ignore[index]


def test_history_and_reports(cli: Cli, run: Any, tmp_path: Path) -> None:
    cli.write_config({"sources": {"main": {"type": "postgres"}}})
    run("drill", "history", check=0)
    catalog = _catalog(cli)
    first = _add_drill(catalog, started_at=time.time() - 7200)
    failed = _add_drill(
        catalog,
        verdict="fail",
        rto_s=None,
        reason="check 'users' failed: got 0, expected >= 1",
        checks=[
            {
                "name": "users",
                "kind": "sql",
                "ok": False,
                "output": "got 0, expected >= 1",
                "expected": ">= 1",
                "actual": 0,
            }
        ],
    )
    hist = run("--json", "drill", "history", check=0).json()
    assert [h["id"] for h in hist] == [first, failed]
    assert hist[0]["rto_margin_s"] == 7170.0 and hist[0]["rpo_margin_s"] == 3480.0
    text = run("drill", "history", check=0).stdout
    assert "main-nightly" in text and "fail" in text

    md = run("drill", "report", str(failed), "--format", "md", check=0).stdout
    assert "FAIL" in md and "check 'users' failed: got 0, expected >= 1" in md
    assert "| ✘ | users | >= 1 | 0 |" in md
    out = tmp_path / "r.html"
    run("drill", "report", str(failed), "--format", "html", "-o", str(out), check=0)
    page = out.read_text()
    # The console's chart: both drills are points, the failed one has RPO only (no RTO).
    trend = json.loads(page.split('id="trend-data">', 1)[1].split("</script>", 1)[0])
    assert [(d["verdict"], d["rto_s"] is None) for d in trend["drills"]] == [("pass", False), ("fail", True)]
    # Self-contained: uPlot is inlined; the only URL is its licence banner's.
    assert "<script src" not in page and "<link" not in page
    assert re.findall(r"https?://[^\s\"')]*", page) == ["https://github.com/leeoniya/uPlot"]
    data = run("drill", "report", str(first), "--format", "json", check=0).json()
    assert data["drill"]["id"] == first and [h["id"] for h in data["history"]] == [first]
    err = run("--json", "drill", "report", "999", check=10).error_json()
    assert err["message"] == "no drill #999 in the catalog"


def test_run_rejects_bad_playbooks_with_exit_2(cli: Cli, run: Any) -> None:
    cli.write_config({"sources": {"main": {"type": "postgres"}}})
    bad = cli.home / "bad.yaml"
    bad.write_text("drill:\n  name: x\n  source: main\n  chekcs: []\n")
    r = run("drill", "run", str(bad), check=2)
    assert "did you mean 'checks'" in r.stderr and str(bad) in r.stderr
    other = cli.home / "other.yaml"
    other.write_text("drill:\n  name: x\n  source: nope\n")
    assert "unknown source 'nope'" in run("drill", "run", str(other), check=2).stderr
    assert "no drill playbooks found" in run("drill", "run", check=2).stderr


def test_status_colours_and_exit_codes(cli: Cli, run: Any) -> None:
    cli.write_config(
        {
            "sources": {"main": {"type": "postgres"}},
            "targets": {"critical": {"rto": "2h", "rpo": "30s"}},
            "schedules": [
                {"name": "main-full", "cron": "0 2 * * *", "job": "backup postgres main --type full"},
                {"name": "main-incr", "cron": "0 * * * *", "job": "backup postgres main --type incremental"},
            ],
        }
    )
    # Nothing recorded yet: no backup → red, exit 13.
    r = run("--json", "status", check=13)
    data = r.json()
    main = data["sources"][0]
    assert data["status"] == "red" and main["items"]["full_backup"]["status"] == "red"
    assert "no full backup recorded" in r.error_json()["message"]

    catalog = _catalog(cli)
    now = time.time()
    with catalog.begin() as conn:
        for kind in ("full", "incremental"):
            conn.execute(
                t.runs.insert().values(
                    kind="backup",
                    source="main",
                    started_at=now - 20,
                    finished_at=now - 10,
                    status="succeeded",
                    details={"type": kind},
                )
            )
        conn.execute(
            t.runs.insert().values(kind="verify", started_at=now - 5, finished_at=now, status="succeeded")
        )
        conn.execute(
            t.wal_status.insert().values(
                source="main",
                last_segment="000000010000000000000003",
                last_archived_at=now - 1,
                segments_total=3,
            )
        )
    _add_drill(catalog)
    data = run("status", "--json", check=0).json()  # --json after the subcommand works too
    main = data["sources"][0]
    assert data["status"] == "green", main["reasons"]
    assert main["items"]["full_backup"]["basis"] == "schedule 'main-full'"
    assert main["items"]["incremental_backup"]["expected_s"] == 3600
    assert main["items"]["drill"]["verdict"] == "pass"
    text = run("status", check=0).stdout
    assert "source main" in text and "green" in text

    # Archiving stopped long enough ago: RPO exposure past the 30 s target → red, exit 13.
    with catalog.begin() as conn:
        conn.execute(t.wal_status.update().values(last_archived_at=now - 95))
        conn.execute(t.runs.update().where(t.runs.c.kind == "backup").values(finished_at=now - 95))
    r = run("--json", "status", check=13)
    rpo = r.json()["sources"][0]["items"]["rpo"]
    assert rpo["status"] == "red" and rpo["target_s"] == 30
    assert "exceeds the target 30.0s (30s)" in rpo["reason"] and "RPO exposure" in rpo["reason"]
    assert "targets breached" in r.error_json()["message"]


def test_status_reports_services(cli: Cli, run: Any) -> None:
    cli.write_config(
        {
            "services": {
                "api": {"target": "docker", "image": "demo:v2", "container": "api"},
            }
        }
    )
    catalog = _catalog(cli)
    now = time.time()
    with catalog.begin() as conn:
        r1 = conn.execute(
            t.releases.insert().values(service="api", version="v1", created_at=now - 100, status="good")
        )
        r2 = conn.execute(
            t.releases.insert().values(service="api", version="v2", created_at=now - 50, status="rolled-back")
        )
        conn.execute(
            t.releases.insert().values(service="api", version="v1", created_at=now - 10, status="live")
        )
        conn.execute(
            t.rollbacks.insert().values(
                service="api",
                from_release=r2.inserted_primary_key[0],
                to_release=r1.inserted_primary_key[0],
                schema_mode="code-only",
                state="succeeded",
                started_at=now - 20,
                reason="error rate 7%",
            )
        )
    data = run("--json", "status", check=0).json()
    svc = data["services"][0]
    assert svc["release"]["version"] == "v1" and svc["release"]["status"] == "live"
    assert svc["last_rollback"]["state"] == "succeeded"
    assert svc["status"] == "green"
    # Repository never verified: amber, which is not a breach.
    assert data["repository"]["status"] == "amber" and data["status"] == "amber"


def test_status_exit_code_from_a_real_process(cli: Cli) -> None:
    cli.write_config({"sources": {"main": {"type": "postgres"}}})
    r = cli("status", "--json", check=13)
    assert r.json()["sources"][0]["items"]["full_backup"]["reason"] == "no full backup recorded"
    assert r.error_json()["exit_code"] == 13
