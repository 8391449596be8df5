"""Retention from the config: the `scheduler init` schedule's `forget --prune` runs and keeps what
the policy says (pins always win); `config check` refuses schedules that can never succeed."""

from __future__ import annotations

import dataclasses
import os
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any

import yaml

from recoverctl.repo import Repository
from recoverctl.storage.local import LocalStorage
from tests.conftest import ROOT, Cli

FAST_KDF = {"name": "scrypt", "n": 2**10, "r": 8, "p": 1}
HOUR, DAY = 3600.0, 86400.0


def _init_config(cli: Cli, tmp_path: Path) -> dict[str, Any]:
    """The YAML `scheduler init` prints, completed with a repository and the source it names."""
    printed = cli("scheduler", "init", check=0).stdout
    cfg: dict[str, Any] = yaml.safe_load(printed)
    # weekly-drill runs the playbooks beside the config: give it the shipped nightly one.
    (cli.home / "playbooks").mkdir(exist_ok=True)
    shutil.copy(ROOT / "playbooks" / "main-nightly.yaml", cli.home / "playbooks")
    cfg["repository"] = {"url": str(tmp_path / "repo"), "pack_size_mib": 1}
    cfg["sources"] = {
        "main": {"type": "postgres", "host": "127.0.0.1", "port": 1},
        "site": {"type": "files", "paths": [str(tmp_path / "site")]},
    }
    return cfg


def _history(cli: Cli, tmp_path: Path) -> tuple[Repository, list[tuple[str, float]]]:
    """One real backup of `site`, then copies of its snapshot dated back over 200 days:
    hourly for three days, then daily. Return the repository and (id, age in seconds) pairs."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("hello")
    cli("backup", "files", str(site), "--source", "site", check=0)
    repo = Repository.open(LocalStorage(tmp_path / "repo"), "pw")
    (real,) = repo.list_snapshots()
    now = time.time()
    ages = [h * HOUR + 60 for h in range(1, 72)] + [d * DAY for d in range(3, 200)]
    made = [(real.id, now - real.time)]
    for age in ages:
        copy = dataclasses.replace(real, time=now - age, id="")
        made.append((repo.save_snapshot(copy), age))
    return repo, made


def test_scheduler_init_retention_runs_from_the_schedule_and_keeps_what_it_says(
    cli: Cli, tmp_path: Path
) -> None:
    cli.env["RECOVERCTL_PASSWORD"] = "pw"
    cli.write_config(_init_config(cli, tmp_path))
    Repository.init(LocalStorage(tmp_path / "repo"), "pw", kdf=FAST_KDF, pack_size_mib=1)
    cli("config", "check", check=0)
    repo, made = _history(cli, tmp_path)
    by_age = sorted(made, key=lambda m: m[1])
    drill_pinned = next(sid for sid, age in made if age == 150 * DAY)
    release_pinned = next(sid for sid, age in made if age == 199 * DAY)
    with sqlite3.connect(cli.home / "catalog.db") as db:
        db.executemany(
            "insert into pins (snapshot_id, reason, owner, created_at) values (?, ?, ?, 0)",
            [(drill_pinned, "drill", "main-nightly"), (release_pinned[:12], "release", "api v1")],
        )

    run = cli("--json", "run-job", "daily-forget-prune", "--now", check=0).json()
    assert run["state"] == "succeeded" and run["exit_code"] == 0, run

    left = {s.id for s in repo.list_snapshots()}
    kept = [(sid, age) for sid, age in by_age if sid in left]
    # hourly 48: every one of the newest 48 hourly snapshots
    assert all(sid in left for sid, _ in by_age[:48])
    # daily 30 + weekly 13: some daily ones beyond the hourly window, none unpinned past 13 weeks
    assert any(3 * DAY <= age <= 29 * DAY for _, age in kept)
    assert any(35 * DAY <= age <= 91 * DAY for _, age in kept)
    assert [sid for sid, age in kept if age > 98 * DAY] == [drill_pinned, release_pinned]
    assert len(kept) <= 48 + 30 + 13 + 2 < len(made)
    # A second run finds nothing more to forget.
    again = cli("--json", "forget", "--dry-run", check=0).json()
    assert again["rules_from"] == "config" and again["removed"] == []
    reasons = {d["id"]: d["reasons"] for d in again["decisions"]}
    assert reasons[drill_pinned] == ["pinned: drill (main-nightly)"]
    assert reasons[release_pinned] == ["pinned: release (api v1)"]


def test_per_source_rules_and_sources_without_rules(cli: Cli, tmp_path: Path) -> None:
    cli.env["RECOVERCTL_PASSWORD"] = "pw"
    docs, logs = tmp_path / "docs", tmp_path / "logs"
    for d in (docs, logs):
        d.mkdir()
        (d / "f").write_text(d.name)
    cfg = {
        "repository": {"url": str(tmp_path / "repo"), "pack_size_mib": 1},
        "sources": {
            "docs": {"type": "files", "paths": [str(docs)]},
            "logs": {"type": "files", "paths": [str(logs)]},
        },
        "retention": {"sources": {"logs": {"keep_last": 1}}},
    }
    cli.write_config(cfg)
    Repository.init(LocalStorage(tmp_path / "repo"), "pw", kdf=FAST_KDF, pack_size_mib=1)
    for _ in range(2):
        for name, path in (("docs", docs), ("logs", logs)):
            cli("backup", "files", str(path), "--source", name, check=0)
    out = cli("--json", "forget", check=0).json()
    by_source: dict[str, list[bool]] = {}
    for d in out["decisions"]:
        by_source.setdefault(d["source"], []).append(d["keep"])
    assert sorted(by_source["logs"]) == [False, True]
    assert by_source["docs"] == [True, True]  # no rule for 'docs' and no default: kept whole
    assert any("no retention rule for source 'docs'" in r for d in out["decisions"] for r in d["reasons"])
    # Options on the command line replace the config for that run.
    assert cli("--json", "forget", "--keep-last", "1", "--dry-run", check=0).json()["rules_from"] == "options"

    cfg["retention"] = {"sources": {"nope": {"keep_last": 1}}}
    cli.write_config(cfg)
    assert "retention: Value error, sources names 'nope'" in cli("config", "check", check=2).stderr
    cfg["retention"] = {"default": {"keep_daily": 0}}
    cli.write_config(cfg)
    assert "retention.default: Value error, keeps nothing" in cli("config", "check", check=2).stderr


def test_config_check_refuses_schedules_that_can_never_succeed(cli: Cli, tmp_path: Path) -> None:
    base = _init_config(cli, tmp_path)
    cli.write_config(base)
    cli("config", "check", check=0)
    # Without a playbook beside the config, the default weekly drill could never run.
    shutil.rmtree(cli.home / "playbooks")
    assert "schedule 'weekly-drill'" in cli("config", "check", check=2).stderr

    def job(name: str, line: str) -> dict[str, str]:
        return {"name": name, "cron": "0 3 * * *", "job": line}

    bad = {k: v for k, v in base.items() if k != "retention"}
    bad["services"] = {"api": {"target": "docker", "image": "api", "container": "api"}}
    bad["schedules"] = [
        job("prune", "forget --prune"),
        job("ghost-source", "backup postgres --source nope --type full"),
        job("ghost-service", "rollback web --dry-run"),
        job("typo", "bakup files /srv"),
        job("bad-option", "forget --keep-dayly 7"),
        job("no-playbook", f"drill run {tmp_path / 'none.yaml'}"),
        job("fine", "forget --keep-daily 7 --prune"),
        job("fine-label", f"backup files {tmp_path} --source any-label"),
        {**job("disabled", "forget"), "enabled": False},
    ]
    path = cli.write_config(bad)
    r = cli("--json", "config", "check", check=2)
    err = r.error_json()
    assert err["exit_code"] == 2 and str(path) in err["message"]
    lines = err["details"]["errors"]
    named = [line.split("'")[1] for line in lines]
    assert named == ["prune", "ghost-source", "ghost-service", "typo", "bad-option", "no-playbook"], lines
    assert "needs a 'retention:' block" in lines[0]
    assert "source 'nope', which is not in sources: (configured: main, site)" in lines[1]
    assert "service 'web', which is not in services: (configured: api)" in lines[2]
    assert "No such command 'bakup'" in lines[3]
    assert "No such option" in lines[4] and "--keep-dayly" in lines[4]
    assert "cannot read playbook" in lines[5]
    text = cli("config", "check", check=2).stderr
    assert "can never succeed" in text and "Traceback" not in text
    assert not os.path.exists(tmp_path / "repo")  # checking ran nothing
