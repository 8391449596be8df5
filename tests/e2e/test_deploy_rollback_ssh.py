"""Deploy and roll back over SSH on three real sshd hosts (loopback ports) serving with busybox httpd."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Cli
from tests.fixtures.net import free_port
from tests.fixtures.sshd import SshdFactory, SshServer

pytestmark = pytest.mark.e2e

# Runs on each host: restart busybox httpd on that host's port, serving the `current` release.
RESTART = (
    'cd "$RECOVERCTL_RELEASES_DIR/.."; '
    'if [ -f httpd.pid ]; then old=$(cat httpd.pid); kill "$old" 2>/dev/null; '
    'for i in $(seq 40); do kill -0 "$old" 2>/dev/null || break; sleep 0.05; done; fi; '
    'busybox httpd -f -p "127.0.0.1:$(cat port)" -h current/www </dev/null >/dev/null 2>&1 & '
    "echo $! > httpd.pid; "
    'echo "$RECOVERCTL_VERSION" >> restarts.log'
)


@pytest.fixture
def fleet(sshd_factory: SshdFactory) -> Iterator[list[tuple[SshServer, int]]]:
    hosts = []
    for _ in range(3):
        server = sshd_factory()
        port = free_port()
        (server.root / "app").mkdir()
        (server.root / "app" / "port").write_text(str(port))
        hosts.append((server, port))
    yield hosts
    for server, _ in hosts:
        pid_file = server.root / "app" / "httpd.pid"
        if pid_file.exists():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid_file.read_text()), signal.SIGTERM)


def _artifacts(tmp_path: Path, *versions: str) -> Path:
    for v in versions:
        www = tmp_path / "artifacts" / v / "www"
        www.mkdir(parents=True)
        (www / "health").write_text("ok\n")
        (www / "version").write_text(f"{v}\n")
    return tmp_path / "artifacts"


def ssh_service(
    sshd_factory: SshdFactory, fleet: list[tuple[SshServer, int]], artifacts: Path, **extra: Any
) -> dict[str, Any]:
    """Return the `api` service on these hosts: each keeps releases under <root>/app and serves its
    health on the paired port; `extra` overrides or adds settings."""
    return {
        "target": "ssh",
        "user": "root",
        "key_file": str(sshd_factory.key_file),
        "known_hosts": str(sshd_factory.known_hosts),
        "releases_dir": "/srv/api/releases",
        "hosts": [
            {
                "host": s.host,
                "port": s.port,
                "releases_dir": str(s.root / "app" / "releases"),
                "health_url": f"http://127.0.0.1:{port}/health",
            }
            for s, port in fleet
        ],
        "artifact": f"{artifacts}/{{version}}",
        "restart_command": RESTART,
        "health": {"successes": 2, "interval": "0.1s", "timeout": "10s"},
        **extra,
    }


def _config(cli: Cli, sshd_factory: SshdFactory, fleet: list[tuple[SshServer, int]], artifacts: Path) -> None:
    cli.write_config({"services": {"api": ssh_service(sshd_factory, fleet, artifacts)}})


def _served(port: int) -> str | None:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/version", timeout=1).text.strip()
    except httpx.HTTPError:
        return None


def test_fleet_deploy_rollback_and_host_down(
    cli: Cli, sshd_factory: SshdFactory, fleet: list[tuple[SshServer, int]], tmp_path: Path
) -> None:
    _config(cli, sshd_factory, fleet, _artifacts(tmp_path, "v1", "v2"))
    cli("deploy", "api", "v1", check=0)
    cli("deploy", "api", "v2", check=0)
    assert [_served(port) for _, port in fleet] == ["v2", "v2", "v2"]

    out = cli("rollback", "api", "--yes", "--json", check=0).json()
    assert out["result"] == "succeeded" and (out["from_version"], out["to_version"]) == ("v2", "v1")
    verify = next(s for s in out["steps"] if s["name"] == "verify")
    assert len(verify["output"]["health"]) == 3 and all(h["ok"] for h in verify["output"]["health"])
    for server, port in fleet:
        app = server.root / "app"
        assert os.readlink(app / "current") == str(app / "releases" / "v1")
        assert (app / "restarts.log").read_text().split() == ["v1", "v2", "v1"]
        assert _served(port) == "v1"

    # One host down: the rollback pre-flight refuses before anything is switched.
    down, _ = fleet[1]
    down.stop()
    r = cli("rollback", "api", "--to", "v2", "--yes", check=1)
    assert f"127.0.0.1:{down.port}" in r.stderr and "pre-flight" in r.stderr
    assert [_served(port) for _, port in fleet] == ["v1", "v1", "v1"]
    # A deploy with one host down reports that host: exit 3, nothing switched.
    r = cli("deploy", "api", "v2", check=3)
    assert f"127.0.0.1:{down.port}" in r.stderr
    assert f"127.0.0.1:{fleet[0][0].port}" not in r.stderr
    assert [os.readlink(s.root / "app" / "current").endswith("v1") for s, _ in fleet] == [True] * 3


def test_wrong_host_key_and_missing_release_refused(
    cli: Cli, sshd_factory: SshdFactory, fleet: list[tuple[SshServer, int]], tmp_path: Path
) -> None:
    _config(cli, sshd_factory, fleet, _artifacts(tmp_path, "v1", "v2"))
    cli("deploy", "api", "v1", check=0)
    cli("deploy", "api", "v2", check=0)
    # v1 disappeared from one host: exit 10 naming the host and what it has.
    victim = fleet[2][0]
    (victim.root / "app" / "releases" / "v1" / "www" / "health").unlink()
    (victim.root / "app" / "releases" / "v1" / "www" / "version").unlink()
    (victim.root / "app" / "releases" / "v1" / "www").rmdir()
    (victim.root / "app" / "releases" / "v1").rmdir()
    r = cli("rollback", "api", "--yes", check=10)
    assert f"127.0.0.1:{victim.port} (has: v2)" in r.stderr

    # A host key that does not match known_hosts: refused, nothing switched.
    known = sshd_factory.known_hosts.read_text().splitlines()
    other = fleet[0][0].host_key_line.split(" ", 1)[1]
    known = [f"[127.0.0.1]:{fleet[1][0].port} {other}" if f":{fleet[1][0].port} " in k else k for k in known]
    sshd_factory.known_hosts.write_text("\n".join(known) + "\n")
    r = cli("rollback", "api", "--to", "v1", "--yes", check=1)
    assert f"127.0.0.1:{fleet[1][0].port} (host key mismatch" in r.stderr
    assert [_served(port) for _, port in fleet] == ["v2", "v2", "v2"]
