"""A release version becomes a directory name on SSH hosts: anything but a plain name is refused
where it enters (exit 2) and when it is read back from an altered catalog row (exit 13), before
any command reaches a host."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.conftest import Cli
from tests.e2e.test_deploy_rollback_ssh import _artifacts, _served, ssh_service
from tests.fixtures.net import free_port
from tests.fixtures.sshd import SshdFactory, SshServer

pytestmark = pytest.mark.e2e


def _sessions(server: SshServer) -> int:
    """Return how many logins the host has accepted so far."""
    return server.log_path.read_text().count("Accepted publickey")


def _config(cli: Cli, sshd_factory: SshdFactory, server: SshServer, port: int, artifacts: Path) -> None:
    app = server.root / "app"
    app.mkdir()
    (app / "port").write_text(str(port))
    service = ssh_service(sshd_factory, [(server, port)], artifacts, keep_releases=1)
    cli.write_config({"services": {"api": service}})


@pytest.fixture
def host(sshd_factory: SshdFactory, cli: Cli, tmp_path: Path) -> Iterator[tuple[SshServer, int]]:
    server = sshd_factory()
    port = free_port()
    _config(cli, sshd_factory, server, port, _artifacts(tmp_path, "v1", "v2", "v3"))
    yield server, port
    pid_file = server.root / "app" / "httpd.pid"
    if pid_file.exists():
        subprocess.run(["kill", pid_file.read_text().strip()], capture_output=True)


BAD = ["/etc", "..", "a/b", "", "x" * 300, "v1;id", "../../etc"]


def test_bad_versions_are_refused_before_anything_runs(cli: Cli, host: tuple[SshServer, int]) -> None:
    server, _ = host
    for bad in BAD:
        r = cli("deploy", "api", "--", bad, check=2)
        assert "invalid release version" in r.stderr, r.stderr
        r = cli("release", "record", "api", "--", bad, check=2)
        assert "invalid release version" in r.stderr
    r = cli("deploy", "api", "--", "-rf", check=2)
    assert "invalid release version '-rf'" in r.stderr and "starts with '-'" in r.stderr
    r = cli("rollback", "api", "--to", "../v1", "--yes", check=2)
    assert "invalid release version '../v1'" in r.stderr
    assert _sessions(server) == 0  # not even a connection
    assert cli("releases", "api", "--json", check=0).json() == []


def test_a_tampered_catalog_version_never_reaches_a_host(
    cli: Cli, host: tuple[SshServer, int], tmp_path: Path
) -> None:
    server, port = host
    cli("deploy", "api", "v1", check=0)
    cli("deploy", "api", "v2", check=0)
    # The catalog row of v1 now names a directory outside the releases directory.
    sentinel = tmp_path / "sentinel"
    sentinel.mkdir()
    (sentinel / "keep").write_text("must survive\n")
    engine = sa.create_engine(cli.env["RECOVERCTL_CATALOG"])
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE releases SET version = :v WHERE version = 'v1'"), {"v": str(sentinel)})
    engine.dispose()

    before = _sessions(server)
    r = cli("rollback", "api", "--yes", check=13)
    assert "in the catalog has an invalid version" in r.stderr and str(sentinel) in r.stderr
    assert _sessions(server) == before  # refused before any remote command
    assert _served(port) == "v2"

    # A deploy that retires old releases skips the altered row instead of deleting what it names.
    r = cli("deploy", "api", "v3", check=0)
    assert "not retiring release" in r.stderr
    assert (sentinel / "keep").read_text() == "must survive\n"
    assert _served(port) == "v3"
