"""A files backup to off-site storage and back: the repository engine over S3 (moto) and SFTP (sshd)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Cli
from tests.fixtures.s3 import S3Server
from tests.inproc_cli import InProcessCli
from tests.repo_trees import digest, make_tree


@pytest.fixture(params=["s3", "sftp"])
def remote_cli(request: pytest.FixtureRequest, cli: Cli) -> tuple[InProcessCli, Any]:
    if request.param == "s3":
        server: S3Server = request.getfixturevalue("s3_server")
        bucket = server.create_bucket()
        server.configure(cli)
        cli.write_config({"repository": bucket.repository("prod")})
        listing: Any = lambda: bucket.keys("prod/")  # noqa: E731
    else:
        sshd = request.getfixturevalue("sshd_factory")()
        cli.write_config(
            {
                "repository": {
                    "url": sshd.url("prod"),
                    "sftp": {"key_file": str(sshd.key_file), "known_hosts": str(sshd.known_hosts)},
                }
            }
        )
        listing = lambda: [str(p) for p in (sshd.root / "prod").rglob("*") if p.is_file()]  # noqa: E731
    cli.env["RECOVERCTL_PASSWORD"] = "correct horse"
    return InProcessCli(cli), listing


def test_backup_and_restore_through_remote_storage(
    remote_cli: tuple[InProcessCli, Any], tmp_path: Path
) -> None:
    rc, listing = remote_cli
    rc("init", check=0)
    src = make_tree(tmp_path / "src", big=600_000)
    r = rc("backup", "files", str(src), "--json", check=0)
    summary = next(
        x for x in map(json.loads, filter(None, r.stdout.splitlines())) if x["message_type"] == "summary"
    )
    # The packs really are on the remote side, under the repository prefix.
    assert any("prod/data/" in k for k in listing())
    snaps = rc("snapshots", "--json", check=0).json()
    assert [s["id"] for s in snaps] == [summary["snapshot_id"]]
    out = tmp_path / "out"
    rc("restore", "latest", "--target", str(out), "--verify", check=0)
    assert digest(out / str(src).lstrip("/")) == digest(src)
