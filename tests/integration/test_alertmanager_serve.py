"""Real Alertmanager (two clustered replicas) delivering to `recoverctl serve` with a bearer token."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from recoverctl.catalog import Catalog
from recoverctl.catalog import tables as t
from tests.fixtures.net import wait_until

TOKEN = "alertmanager-token-0123456789"


def _decisions(cli: Any) -> list[Any]:
    catalog = Catalog(cli.env["RECOVERCTL_CATALOG"])
    try:
        with catalog.begin() as conn:
            return list(conn.execute(sa.select(t.alerts).order_by(t.alerts.c.id)).all())
    finally:
        catalog.close()


def _jobs(cli: Any) -> list[Any]:
    catalog = Catalog(cli.env["RECOVERCTL_CATALOG"])
    try:
        with catalog.begin() as conn:
            return list(conn.execute(sa.select(t.jobs)).all())
    finally:
        catalog.close()


def test_clustered_alertmanagers_produce_one_action_and_resolved_none(
    cli: Any, serve_factory: Any, alertmanager_factory: Any
) -> None:
    token_file = cli.home / "token"
    token_file.write_text(TOKEN + "\n")
    cli.write_config(
        {
            "serve": {"auth": {"bearer_token_file": str(token_file)}, "poll_interval": "0.1s"},
            "policies": [
                {
                    "name": "page-on-errors",
                    "match": {"alertname": "HighErrorRate"},
                    "action": "notify",
                    "service_from_label": "service",
                    "cooldown": "10m",
                    "max_actions": {"count": 1, "window": "1h"},
                }
            ],
        }
    )
    srv = serve_factory(cli, token=TOKEN)
    hook = f"{srv.url}/hooks/alertmanager"
    am1 = alertmanager_factory(hook, str(token_file), clustered=True)
    am2 = alertmanager_factory(hook, str(token_file), peers=[am1.cluster_address])
    wait_until(lambda: am1.cluster_peers() == 2 and am2.cluster_peers() == 2, what="alertmanager cluster")

    labels = {"alertname": "HighErrorRate", "service": "web", "severity": "critical"}
    # Prometheus sends the same alert (same startsAt) to every replica.
    started = datetime.now(UTC) - timedelta(minutes=5)
    for am in (am1, am2):
        am.post_alert(labels, starts_at=started, annotations={"summary": "5xx at 9 %"})
    firing = wait_until(
        lambda: [d for d in _decisions(cli) if d.status == "firing"], timeout=60, what="a firing delivery"
    )
    jobs = wait_until(lambda: [j for j in _jobs(cli) if j.state == "succeeded"], what="the notify job to run")
    assert len(jobs) == 1 and jobs[0].payload["target"] == "web"
    assert firing[0].decision == "acted" and firing[0].group_key
    assert all(d.decision == "deduplicated" for d in firing[1:])

    for am in (am1, am2):
        am.post_alert(labels, starts_at=started, annotations={"summary": "5xx at 9 %"}, resolved=True)
    resolved = wait_until(
        lambda: [d for d in _decisions(cli) if d.status == "resolved"], timeout=60, what="a resolved delivery"
    )
    assert all(d.decision == "ignored" for d in resolved)
    assert len(_jobs(cli)) == 1
    print(f"deliveries: {len(firing)} firing, {len(resolved)} resolved")
