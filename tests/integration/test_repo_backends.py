"""Round trips on S3 (moto server) and SFTP (sshd) repositories, and backend failures mid-backup."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.conftest import Cli
from tests.fixtures.s3 import S3Bucket, S3Server
from tests.fixtures.sshd import SshServer
from tests.inproc_cli import InProcessCli
from tests.repo_trees import digest, make_tree


def summary(stdout: str) -> dict[str, Any]:
    return [json.loads(x) for x in stdout.splitlines() if '"summary"' in x][-1]


def round_trip(cli: InProcessCli, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", big=1_500_000)
    cli("init", check=0)
    first = summary(cli("backup", "files", str(src), "--json", check=0).stdout)
    again = summary(cli("backup", "files", str(src), "--json", check=0).stdout)
    assert again["files_unmodified"] == first["files_new"] and again["bytes_read"] == 0
    cli("restore", "latest", "--target", str(tmp_path / "out"), "--verify", check=0)
    assert digest(tmp_path / "out" / str(src).lstrip("/")) == digest(src)
    cli("verify", "--read-data", check=0)


def test_s3_round_trip_and_failures(
    cli: Cli, s3_server: S3Server, s3_bucket: S3Bucket, tmp_path: Path
) -> None:
    s3_server.configure(cli)
    cli.write_config(
        {
            "repository": {
                **s3_bucket.repository("repo"),
                "pack_size_mib": 1,
                "retry": {"initial": 0.01, "maximum": 0.05},
            }
        }
    )
    cli.env["RECOVERCTL_PASSWORD"] = "pw"
    rc = InProcessCli(cli)
    round_trip(rc, tmp_path)
    stored = s3_bucket.keys("repo/data/")
    assert stored and all(k.startswith("repo/data/") for k in stored)

    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "f").write_text("more")
    # A burst of 5xx-like failures on pack uploads is retried; the backup succeeds.
    rc("backup", "files", str(extra), env={"RECOVERCTL_FAULTS": "put:transient:3@data/"}, check=0)
    before = len(rc("snapshots", "--json", check=0).json())
    # A persistent failure: clean exit 1, and no snapshot is written.
    (extra / "g").write_text("even more")
    r = rc("backup", "files", str(extra), "--json", env={"RECOVERCTL_FAULTS": "put:error:*@data/"}, check=1)
    assert "data/" in r.error_json()["message"]
    assert len(rc("snapshots", "--json", check=0).json()) == before


def test_sftp_round_trip(cli: Cli, sshd: SshServer, tmp_path: Path) -> None:
    cli.write_config(
        {
            "repository": {
                "url": sshd.url("repo"),
                "pack_size_mib": 1,
                "sftp": {"key_file": str(sshd.key_file), "known_hosts": str(sshd.known_hosts)},
            }
        }
    )
    cli.env["RECOVERCTL_PASSWORD"] = "pw"
    round_trip(InProcessCli(cli), tmp_path)
