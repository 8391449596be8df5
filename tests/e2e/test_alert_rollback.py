"""Alert → rollback: real clustered Alertmanagers → `recoverctl serve` (bearer) → Docker demo service.

The issue's minimal `serve:` + `policies:` configuration, verbatim apart from paths: an
Alertmanager alert HighErrorRate{service="web"} rolls service web back from v2 to v1, exactly
once although two Alertmanager replicas receive it; the resolved notification does nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from recoverctl.catalog import Catalog
from recoverctl.catalog import tables as t
from tests.fixtures.docker_engine import DockerEngine
from tests.fixtures.net import free_port, wait_until

pytestmark = pytest.mark.e2e

TOKEN = "e2e-alert-token-0123456789abcdef"


def _version(port: int) -> str | None:
    try:
        r = httpx.get(f"http://127.0.0.1:{port}/version", timeout=1)
    except httpx.HTTPError:
        return None
    return r.text.strip() if r.status_code == 200 else None


def _rows(cli: Any, table: sa.Table) -> list[Any]:
    catalog = Catalog(cli.env["RECOVERCTL_CATALOG"])
    try:
        with catalog.begin() as conn:
            return list(conn.execute(sa.select(table).order_by(table.c.id)).all())
    finally:
        catalog.close()


@pytest.fixture
def web(docker_engine: DockerEngine, demo_web_images: dict[str, str]) -> Iterator[tuple[int, str]]:
    port = free_port()
    name = f"rc-alert-web-{port}"
    yield port, name
    docker_engine.remove_containers(name)


def test_alertmanager_cluster_rolls_web_back_exactly_once(
    cli: Any, web: tuple[int, str], serve_factory: Any, alertmanager_factory: Any
) -> None:
    port, container = web
    token_file = cli.home / "webhook-token"
    token_file.write_text(TOKEN + "\n")
    cli.write_config(
        f"""
serve:
  auth:
    bearer_token_file: {token_file}
policies:
  - name: rollback-on-errors
    match:
      alertname: HighErrorRate
    action: rollback
    service_from_label: service
    cooldown: 10m
    max_actions: {{count: 1, window: 1h}}
services:
  web:
    target: docker
    image: demo-web
    container: {container}
    network_mode: host
    env: {{PORT: "{port}"}}
    health:
      url: http://127.0.0.1:{port}/health
      successes: 3
      interval: 0.2s
      timeout: 20s
"""
    )
    cli("deploy", "web", "v1", check=0)
    cli("deploy", "web", "v2", "--no-verify", check=0)
    assert _version(port) is None  # v2 answers every request with 500

    srv = serve_factory(cli, token=TOKEN)
    hook = f"{srv.url}/hooks/alertmanager"
    am1 = alertmanager_factory(hook, str(token_file), clustered=True)
    am2 = alertmanager_factory(hook, str(token_file), peers=[am1.cluster_address])
    wait_until(lambda: am1.cluster_peers() == 2 and am2.cluster_peers() == 2, what="alertmanager cluster")

    labels = {"alertname": "HighErrorRate", "service": "web", "severity": "critical"}
    # Prometheus sends the same alert (same startsAt) to every replica.
    started = datetime.now(UTC) - timedelta(minutes=5)
    for am in (am1, am2):
        am.post_alert(labels, starts_at=started, annotations={"summary": "5xx at 12 %"})
    wait_until(lambda: _version(port) == "v1", timeout=120, what="v1 serving again after the rollback")
    jobs = wait_until(
        lambda: [j for j in _rows(cli, t.jobs) if j.state in ("succeeded", "failed")], what="the rollback job"
    )
    assert [(j.kind, j.state, j.payload["target"]) for j in jobs] == [("rollback", "succeeded", "web")]
    assert jobs[0].result["from_version"] == "v2" and jobs[0].result["to_version"] == "v1"
    rollbacks = _rows(cli, t.rollbacks)
    assert [(r.service, r.state, r.actor) for r in rollbacks] == [
        ("web", "succeeded", "alertmanager:rollback-on-errors")
    ]

    for am in (am1, am2):
        am.post_alert(labels, starts_at=started, annotations={"summary": "5xx at 12 %"}, resolved=True)
    resolved = wait_until(
        lambda: [a for a in _rows(cli, t.alerts) if a.status == "resolved"],
        timeout=60,
        what="resolved delivery",
    )
    assert all(a.decision == "ignored" for a in resolved)
    firing = [a for a in _rows(cli, t.alerts) if a.status == "firing"]
    assert firing[0].decision == "acted"
    assert all(a.decision == "deduplicated" for a in firing[1:])
    assert len(_rows(cli, t.jobs)) == 1 and len(_rows(cli, t.rollbacks)) == 1
    assert _version(port) == "v1"
    decisions = cli("alerts", "--json", check=0).json()
    assert {d["decision"] for d in decisions} <= {"acted", "deduplicated", "ignored"}, decisions
    assert [d["job_id"] for d in decisions if d["decision"] == "acted"] == [jobs[0].id]
