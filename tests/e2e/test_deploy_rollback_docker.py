"""Deploy and roll back a real container on a real Docker engine (demo images built FROM scratch)."""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tests.conftest import Cli
from tests.fixtures.docker_engine import DockerEngine, container_state
from tests.fixtures.net import free_port, wait_until

pytestmark = pytest.mark.e2e


def _get(url: str) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=1)
    except httpx.HTTPError:
        return None


def _version(port: int) -> str | None:
    r = _get(f"http://127.0.0.1:{port}/version")
    return r.text.strip() if r is not None and r.status_code == 200 else None


def _service(port: int, container: str, **health: Any) -> dict[str, Any]:
    return {
        "target": "docker",
        "image": "demo-web",
        "container": container,
        "network_mode": "host",
        "env": {"PORT": str(port)},
        "health": {
            "url": f"http://127.0.0.1:{port}/health",
            "successes": 3,
            "interval": "0.2s",
            "timeout": "10s",
            **health,
        },
    }


@pytest.fixture
def web(docker_engine: DockerEngine, demo_web_images: dict[str, str]) -> Iterator[tuple[int, str]]:
    port = free_port()
    name = f"rc-web-{port}"
    yield port, name
    docker_engine.remove_containers(name)


def _events(cli: Cli) -> list[dict[str, Any]]:
    engine = sa.create_engine(cli.env["RECOVERCTL_CATALOG"])
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT kind, severity, subject, summary FROM events ORDER BY id")).all()
    engine.dispose()
    return [dict(r._mapping) for r in rows]


def test_must_work_config_as_written(
    cli: Cli, docker_engine: DockerEngine, demo_web_images: dict[str, str]
) -> None:
    """The issue's minimal service verbatim (port 18080 is the image's default), the whole story."""
    cli.write_config(
        """
services:
  web:
    target: docker
    image: demo-web
    container: demo-web
    network_mode: host
    health:
      url: http://127.0.0.1:18080/health
      successes: 3
      interval: 0.2s
      timeout: 10s
"""
    )
    try:
        cli("deploy", "web", "v1", check=0)
        assert _version(18080) == "v1"

        # v2 answers 500: refused, v1 resumes serving, release failed, exit 13.
        r = cli("deploy", "web", "v2", check=13)
        assert "failed verification" in r.stderr and "v1 was started again" in r.stderr
        assert _version(18080) == "v1"

        cli("deploy", "web", "v2", "--no-verify", check=0)
        assert _get("http://127.0.0.1:18080/health").status_code == 500  # type: ignore[union-attr]

        plan = cli("rollback", "web", "--dry-run", "--json", check=0).json()
        assert plan["result"] == "planned" and plan["to_version"] == "v1"
        assert plan["plan"]["steps"][0] == "lock" and plan["rollback_id"] is None
        # No TTY and no --yes: refused before anything happens.
        r = cli("rollback", "web", check=2)
        assert "--yes" in r.stderr

        started = time.monotonic()
        r = cli("rollback", "web", "--yes", "--json", check=0)
        wall = time.monotonic() - started
        out = r.json()
        assert out["result"] == "succeeded"
        assert (out["from_version"], out["to_version"]) == ("v2", "v1")  # never the failed v2
        assert [s["name"] for s in out["steps"]] == [
            "lock",
            "stop_current",
            "schema",
            "start_target",
            "verify",
            "notify",
            "record",
        ]
        assert [s["outcome"] for s in out["steps"]] == ["ok", "ok", "skipped", "ok", "ok", "ok", "ok"]
        assert isinstance(out["duration_s"], float)
        assert _version(18080) == "v1"
        print(
            f"\nrollback wall time (CLI process, incl. python start): {wall:.2f}s, "
            f"action duration_s: {out['duration_s']:.2f}s"
        )
        releases = cli("releases", "web", "--json", check=0).json()
        assert [(x["version"], x["status"]) for x in releases] == [
            ("v2", "rolled-back"),
            ("v2", "failed"),
            ("v1", "live"),
        ]
        kinds = [e["kind"] for e in _events(cli)]
        assert kinds == ["deploy.succeeded", "deploy.failed", "deploy.succeeded", "rollback.succeeded"]

        # Nothing older than v1 that is good: exit 10 listing what exists; nothing stopped.
        r = cli("rollback", "web", "--dry-run", check=10)
        assert "no previous good release" in r.stderr and "v1 (live)" in r.stderr
        assert _version(18080) == "v1"
    finally:
        docker_engine.remove_containers("demo-web")


def test_bad_input_exits_10_and_stops_nothing(cli: Cli, docker_engine: DockerEngine, web: Any) -> None:
    port, name = web
    # The registry is a closed loopback port: a pull must fail clearly (and never leave 127/8).
    offline = {**_service(port, f"{name}-x"), "image": f"127.0.0.1:{free_port()}/demo-web"}
    cli.write_config({"services": {"web": _service(port, name), "offline": offline}})
    r = cli("rollback", "nope", "--yes", check=10)
    assert "configured services: offline, web" in r.stderr
    r = cli("deploy", "offline", "v1", check=10)
    assert "is not in the Docker engine and pulling it failed" in r.stderr

    # v0 was deployed by another tool; its image is gone from the engine.
    cli("release", "record", "web", "v0", check=0)
    cli("deploy", "web", "v1", check=0)
    cli("deploy", "web", "v2", "--no-verify", check=0)
    r = cli("rollback", "web", "--to", "v9", "--yes", check=10)
    assert "v2 (live)" in r.stderr and "v1 (good)" in r.stderr
    r = cli("rollback", "web", "--to", "v0", "--yes", check=10)
    assert "'demo-web:v0'" in r.stderr and "demo-web:v1" in r.stderr
    # Refused before anything was stopped: v2 still serves.
    assert _get(f"http://127.0.0.1:{port}/health").status_code == 500  # type: ignore[union-attr]
    assert container_state(docker_engine, name)["Running"]  # type: ignore[index]


def test_engine_unreachable_is_clear(cli: Cli, web: Any) -> None:
    port, name = web
    svc = _service(port, name)
    svc["docker_host"] = f"tcp://127.0.0.1:{free_port()}"
    cli.write_config({"services": {"web": svc}})
    r = cli("deploy", "web", "v1", check=1)
    assert "Docker engine at 'tcp://127.0.0.1:" in r.stderr and "unreachable" in r.stderr


def test_health_never_passes_fails_rollback_with_13(cli: Cli, docker_engine: DockerEngine, web: Any) -> None:
    port, name = web
    cli.write_config({"services": {"web": _service(port, name, timeout="2s")}})
    cli("deploy", "web", "v1", check=0)
    cli("deploy", "web", "v2", "--no-verify", check=0)
    # The v1 image now answers on another port than the health URL: health can never pass.
    cli.write_config(
        {
            "services": {
                "web": {
                    **_service(port, name, timeout="2s"),
                    "health": {"url": f"http://127.0.0.1:{free_port()}/health", "timeout": "1.5s"},
                }
            }
        }
    )
    r = cli("rollback", "web", "--yes", "--json", check=13)
    out = r.json()
    assert out["result"] == "failed"
    assert [s["outcome"] for s in out["steps"]][:5] == ["ok", "ok", "skipped", "ok", "failed"]
    err = r.error_json()
    assert err["exit_code"] == 13 and "failed verification" in err["message"]
    releases = cli("releases", "web", "--json", check=0).json()
    assert [(x["version"], x["status"]) for x in releases] == [("v2", "rolled-back"), ("v1", "failed")]
    events = _events(cli)
    assert events[-1]["kind"] == "rollback.failed" and events[-1]["severity"] == "critical"


def test_crash_after_stop_then_resume(cli: Cli, docker_engine: DockerEngine, web: Any) -> None:
    port, name = web
    cli.write_config({"services": {"web": _service(port, name)}})
    cli("deploy", "web", "v1", check=0)
    cli("deploy", "web", "v2", "--no-verify", check=0)
    r = cli("rollback", "web", "--yes", env={"RECOVERCTL_FAULT_CRASH_AFTER_STEP": "stop_current"})
    assert r.code == -9, r.stderr
    assert container_state(docker_engine, name) is None  # stopped, nothing started
    # A plain rollback now refuses (the service is half way), pointing at --resume.
    r = cli("rollback", "web", "--yes", check=11)
    assert "--resume" in r.stderr
    out = cli("rollback", "web", "--resume", "--yes", "--json", check=0).json()
    assert out["result"] == "succeeded" and out["to_version"] == "v1"
    assert [s["outcome"] for s in out["steps"]] == ["ok", "ok", "skipped", "ok", "ok", "ok", "ok"]
    assert _version(port) == "v1"
    cli("rollback", "web", "--resume", "--yes", check=10)


class _GateHandler(http.server.BaseHTTPRequestHandler):
    open_gate = threading.Event()
    hits = 0

    def do_GET(self) -> None:
        type(self).hits += 1
        self.send_response(200 if self.open_gate.is_set() else 503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_concurrent_rollback_exits_11(cli: Cli, docker_engine: DockerEngine, web: Any) -> None:
    port, name = web
    gate_port = free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", gate_port), _GateHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        cli.write_config({"services": {"web": _service(port, name)}})
        cli("deploy", "web", "v1", check=0)
        cli("deploy", "web", "v2", "--no-verify", check=0)
        # The first rollback waits in `verify` on a health URL the test controls.
        cli.write_config(
            {
                "services": {
                    "web": _service(port, name, url=f"http://127.0.0.1:{gate_port}/health", timeout="60s")
                }
            }
        )
        first = subprocess.Popen(
            [sys.executable, "-m", "recoverctl", "rollback", "web", "--yes", "--json"],
            env=cli.env,
            cwd=cli.home,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        wait_until(lambda: _GateHandler.hits > 0, timeout=60, what="first rollback to reach verify")
        r = cli("rollback", "web", "--yes", check=11)
        assert "is locked" in r.stderr and "rollback #" in r.stderr
        cli("deploy", "web", "v3", check=11)
        _GateHandler.open_gate.set()
        out, err = first.communicate(timeout=60)
        assert first.returncode == 0, err
        assert json.loads(out)["result"] == "succeeded"
    finally:
        server.shutdown()
        server.server_close()
