"""`recoverctl copy` to real storage: a local primary copied to S3 (moto) and SFTP (sshd),
restored from the copies after the primary is gone, resumed after kill -9, refused with a wrong
passphrase."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.conftest import Cli, CliResult
from tests.fixtures.net import wait_until
from tests.fixtures.s3 import S3Bucket, S3Server
from tests.fixtures.sshd import SshServer
from tests.inproc_cli import InProcessCli
from tests.repo_trees import digest, make_tree


def _secret(path: Path, value: str) -> str:
    path.write_text(value + "\n")
    path.chmod(0o600)
    return str(path)


def _config(cli: Cli, tmp_path: Path, copies: dict[str, dict[str, Any]]) -> dict[str, Any]:
    data = {
        "repositories": {
            "local": {"url": str(tmp_path / "primary"), "pack_size_mib": 1},
            **{
                name: {**repo, "password_file": _secret(tmp_path / f"{name}.pw", f"{name} passphrase")}
                for name, repo in copies.items()
            },
        }
    }
    cli.write_config(data)
    cli.env["RECOVERCTL_PASSWORD"] = "primary passphrase"
    return data


def _copies(r: CliResult) -> list[dict[str, Any]]:
    """Return the `copies` of `copy --json` (after the progress status lines)."""
    doc = "\n".join(line for line in r.stdout.splitlines() if not line.startswith('{"message_type"'))
    copies: list[dict[str, Any]] = json.loads(doc)["copies"]
    return copies


def _s3_sizes(bucket: S3Bucket, prefix: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for page in bucket.client().get_paginator("list_objects_v2").paginate(Bucket=bucket.name, Prefix=prefix):
        out.update({o["Key"]: o["Size"] for o in page.get("Contents", [])})
    return out


def test_copy_to_s3_and_sftp_then_restore_from_each_without_the_primary(
    cli: Cli, s3_server: S3Server, s3_bucket: S3Bucket, sshd: SshServer, tmp_path: Path
) -> None:
    s3_server.configure(cli)
    sftp_options = {"key_file": str(sshd.key_file), "known_hosts": str(sshd.known_hosts)}
    _config(
        cli,
        tmp_path,
        {
            "s3copy": {**s3_bucket.repository("copy"), "pack_size_mib": 1},
            "sftpcopy": {"url": sshd.url("copy"), "sftp": sftp_options, "pack_size_mib": 1},
        },
    )
    rc = InProcessCli(cli)
    src = make_tree(tmp_path / "src", big=3_000_000)
    rc("init", check=0)
    rc("init", "--repo", "s3copy", check=0)
    rc("init", "--repo", "sftpcopy", check=0)
    rc("backup", "files", str(src), check=0)

    plan = _copies(rc("--json", "copy", "--dry-run", check=0))
    assert [(c["name"], c["snapshots_to_copy"], c["dry_run"]) for c in plan] == [
        ("s3copy", 1, True),
        ("sftpcopy", 1, True),
    ]
    assert not [k for k in s3_bucket.keys("copy/") if k.startswith(("copy/data/", "copy/snapshots/"))]

    first = {c["name"]: c for c in _copies(rc("--json", "copy", check=0))}
    for c in first.values():
        assert c["snapshots_copied"] == 1 and c["blobs_sent"] > 0 and c["bytes_uploaded"] > 3_000_000

    # A second snapshot shares almost everything: only the new file (and its trees) travels.
    (src / "docs" / "added.txt").write_text("added after the first copy\n")
    rc("backup", "files", str(src), check=0)
    copies = {c["name"]: c for c in json.loads(rc("--json", "status").stdout)["copies"]}
    assert copies["s3copy"]["snapshots_missing"] == 1 and copies["s3copy"]["status"] == "amber"
    second = {c["name"]: c for c in _copies(rc("--json", "copy", check=0))}
    for c in second.values():
        assert c["snapshots_copied"] == 1 and c["snapshots_present"] == 1
        assert c["blobs_read"] == 1 and c["bytes_uploaded"] < 100_000
    again = _copies(rc("--json", "copy", check=0))
    assert all(c["snapshots_copied"] == 0 and c["bytes_uploaded"] == 0 for c in again)
    status = json.loads(rc("--json", "status").stdout)["copies"]
    assert [(c["name"], c["status"], c["snapshots_missing"]) for c in status] == [
        ("s3copy", "green", 0),
        ("sftpcopy", "green", 0),
    ]

    shutil.rmtree(tmp_path / "primary")
    for name in ("s3copy", "sftpcopy"):
        out = tmp_path / f"out-{name}"
        rc("restore", "latest", "--repo", name, "--target", str(out), "--verify", check=0)
        assert digest(out / str(src).lstrip("/")) == digest(src)
        rc("verify", "--repo", name, "--read-data", check=0)
    snaps = rc("--json", "snapshots", "--repo", "sftpcopy", check=0).json()
    assert len(snaps) == 2 and all(s["metadata"]["copied_from"]["snapshot"] for s in snaps)


def test_a_copy_killed_mid_way_resumes_without_sending_again_what_arrived(
    cli: Cli, s3_server: S3Server, s3_bucket: S3Bucket, tmp_path: Path
) -> None:
    s3_server.configure(cli)
    _config(cli, tmp_path, {"s3copy": {**s3_bucket.repository("copy"), "pack_size_mib": 1, "parallelism": 1}})
    rc = InProcessCli(cli)
    src = tmp_path / "src"
    src.mkdir()
    for i in range(48):
        (src / f"f{i:02}.bin").write_bytes(os.urandom(512 * 1024))
    rc("init", check=0)
    rc("init", "--repo", "s3copy", check=0)
    rc("backup", "files", str(src), check=0)

    proc = subprocess.Popen(
        [sys.executable, "-m", "recoverctl", "copy"],
        env=cli.env,
        cwd=cli.home,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: len(_s3_sizes(s3_bucket, "copy/data/")) >= 6, timeout=60, what="packs arriving")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    arrived = _s3_sizes(s3_bucket, "copy/data/")
    assert arrived and not _s3_sizes(s3_bucket, "copy/snapshots/"), "killed before the snapshot"

    result = _copies(rc("--json", "copy", check=0))[0]
    after = _s3_sizes(s3_bucket, "copy/data/")
    assert set(arrived) <= set(after)  # nothing that arrived was sent or removed again
    sent_now = {k: v for k, v in after.items() if k not in arrived}
    assert result["packs_uploaded"] == len(sent_now)
    assert result["bytes_uploaded"] == sum(sent_now.values())
    # Every blob is stored once: the two runs together sent what one uninterrupted copy sends.
    assert sum(after.values()) < 24 * 1024 * 1024 * 1.02

    shutil.rmtree(tmp_path / "primary")
    rc("restore", "latest", "--repo", "s3copy", "--target", str(tmp_path / "out"), check=0)
    assert digest(tmp_path / "out" / str(src).lstrip("/")) == digest(src)


def test_a_wrong_passphrase_for_the_copy_is_refused_before_anything_is_written(
    cli: Cli, tmp_path: Path
) -> None:
    _config(cli, tmp_path, {"offsite": {"url": str(tmp_path / "copy")}})
    rc = InProcessCli(cli)
    src = make_tree(tmp_path / "src", big=100_000)
    rc("init", check=0)
    rc("init", "--repo", "offsite", check=0)
    rc("backup", "files", str(src), check=0)
    before = sorted(p.relative_to(tmp_path / "copy") for p in (tmp_path / "copy").rglob("*"))

    _secret(tmp_path / "offsite.pw", "not the passphrase")
    err = rc("--json", "copy", check=12).error_json()
    assert "wrong passphrase" in err["message"] and str(tmp_path / "copy") in err["message"]
    assert sorted(p.relative_to(tmp_path / "copy") for p in (tmp_path / "copy").rglob("*")) == before

    # No passphrase source at all: a usage error naming the setting, not the primary's variable.
    repositories = {"local": str(tmp_path / "primary"), "offsite": str(tmp_path / "copy")}
    cli.write_config({"repositories": repositories})
    err = rc("--json", "copy", check=2).error_json()
    assert "no passphrase for repository 'offsite'" in err["message"]
    assert "repositories.offsite.password_file" in err["hint"]


def test_repository_and_repositories_together_are_a_config_error(cli: Cli, tmp_path: Path) -> None:
    cli.write_config({"repository": str(tmp_path / "a"), "repositories": {"b": str(tmp_path / "b")}})
    err = InProcessCli(cli)("--json", "config", "check", check=2).error_json()
    assert "not both" in err["message"]


def test_the_copy_job_kind_and_the_default_schedule(cli: Cli, tmp_path: Path) -> None:
    from unittest import mock

    import yaml

    from recoverctl.actions.job_kinds import execute_kind
    from recoverctl.catalog import Catalog
    from recoverctl.config import load_config, parse_config
    from recoverctl.scheduler.defaults import DEFAULT_SCHEDULE_YAML

    default = parse_config(yaml.safe_load(DEFAULT_SCHEDULE_YAML), env={})
    assert next(s for s in default.schedules if s.name == "hourly-copy").job == "copy"

    _config(cli, tmp_path, {"offsite": {"url": str(tmp_path / "copy")}})
    rc = InProcessCli(cli)
    rc("init", check=0)
    rc("init", "--repo", "offsite", check=0)
    rc("backup", "files", str(make_tree(tmp_path / "src", big=10_000)), check=0)
    with mock.patch.dict(os.environ, cli.env, clear=True):
        cfg = load_config()
        catalog = Catalog.from_config(cfg)
        try:
            result = execute_kind(cfg, catalog, "copy", {"action": "copy", "target": "*"})
        finally:
            catalog.close()
    assert result["result"] == "succeeded" and result["copies"][0]["snapshots_copied"] == 1
    # A single repository: `copy` (as the default schedule runs it) says so and succeeds.
    cli.write_config({"repository": str(tmp_path / "primary")})
    assert "only one repository" in rc("copy", check=0).stdout


def test_drills_run_from_a_copy_and_alternate_repositories_by_iso_week(cli: Cli, tmp_path: Path) -> None:
    import datetime as dt

    import yaml

    from recoverctl.config import parse_config

    data = _config(cli, tmp_path, {"offsite": {"url": str(tmp_path / "copy")}})
    src = make_tree(tmp_path / "src", big=200_000)
    cli.write_config({**data, "sources": {"docs": {"type": "files", "paths": [str(src)]}}})
    rc = InProcessCli(cli)
    rc("init", check=0)
    rc("init", "--repo", "offsite", check=0)
    rc("backup", "files", str(src), "--source", "docs", check=0)
    playbook = tmp_path / "docs.yaml"
    playbook.write_text(
        yaml.safe_dump({"drill": {"name": "docs", "source": "docs", "targets": {"rto": "1h", "rpo": "1h"}}})
    )

    def drill(repo: str, code: int) -> str:
        result = rc("--json", "drill", "run", str(playbook), "--repo", repo, check=code).json()
        return str(result["verdict"])

    # Nothing copied yet: the drill from the copy fails, which is what the drill is for.
    assert drill("offsite", 13) == "fail"
    rc("copy", check=0)
    shutil.rmtree(tmp_path / "primary" / "data")
    assert drill("offsite", 0) == "pass" and drill("local", 13) == "fail"

    cfg = parse_config(data, env={})
    week = dt.datetime(2026, 12, 7, tzinfo=dt.UTC)  # ISO week 50
    assert cfg.drill_rotation(week.timestamp()) == "local"
    assert cfg.drill_rotation((week + dt.timedelta(days=7)).timestamp()) == "offsite"
    assert parse_config({"repository": str(tmp_path / "x")}, env={}).drill_rotation(week.timestamp()) is None
