"""A critical alert reaches on-call and the status page: serve → notify job → event → the
runbook's default routes (Slack #alerts, told once of the incident) + Statuspage (component
degraded, incident opened)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
import yaml

from recoverctl.catalog import Catalog
from recoverctl.catalog import tables as t
from tests.fixtures.http_receiver import HttpReceiver
from tests.fixtures.net import wait_until
from tests.integration.test_serve import NOTIFY, TOKEN, _config, am_payload


def test_critical_alert_degrades_the_status_page_and_pages_slack_alerts(
    cli: Any, serve_factory: Any, http_receiver: HttpReceiver
) -> None:
    rx = http_receiver
    _config(cli, [NOTIFY])
    data = yaml.safe_load(cli.config_path.read_text())
    data["notifications"] = {  # no routes: the runbook's apply
        "channels": {
            "slack-alerts": {"type": "slack", "webhook_url": rx.url("/slack")},
            "status": {
                "type": "status_page",
                "mode": "statuspage",
                "base_url": rx.url(),
                "page_id": "pg",
                "api_key": "sp-key",
                "components": {"web": "cweb"},
                "messages": {"degraded_performance": "Some requests to {service} fail; we are on it."},
            },
        },
    }
    cli.write_config(data)
    srv = serve_factory(cli, token=TOKEN)
    decision = srv.post("/hooks/alertmanager", am_payload("fp-status", severity="critical")).json()
    assert decision["decisions"][0]["decision"] == "acted"

    (slack,) = rx.wait_for("/slack", 1, timeout=60)
    assert "HighErrorRate" in slack.json()["text"]
    (component,) = rx.wait_for("/v1/pages/pg/components/cweb", 1, timeout=30)
    assert component.json() == {"component": {"status": "degraded_performance"}}
    (incident,) = rx.wait_for("/v1/pages/pg/incidents", 1, timeout=30)
    body = incident.json()["incident"]
    assert (body["status"], body["body"]) == ("investigating", "Some requests to web fail; we are on it.")
    assert incident.headers["authorization"] == "OAuth sp-key"

    # The alert.notify event and the incident's level-1 escalation are one message on #alerts.
    catalog = Catalog(cli.env["RECOVERCTL_CATALOG"])
    try:

        def settled() -> bool:
            with catalog.begin() as conn:
                delivered = conn.execute(
                    sa.select(t.events.c.delivered).where(t.events.c.kind == "alert.notify")
                ).scalar()
                level1 = conn.execute(
                    sa.select(t.incident_escalations.c.state).where(t.incident_escalations.c.level == 1)
                ).scalar()
            return bool(delivered) and level1 == "sent"

        wait_until(settled, timeout=30, what="the event delivered and level 1 escalated")
    finally:
        catalog.close()
    assert len(rx.at("/slack")) == 1
