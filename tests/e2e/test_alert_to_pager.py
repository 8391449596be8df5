"""An Alertmanager alert reaches on-call: serve → notify job → event → Slack + PagerDuty."""

from __future__ import annotations

from typing import Any

import yaml

from recoverctl.catalog import tables as t
from tests.fixtures.http_receiver import HttpReceiver
from tests.integration.test_serve import NOTIFY, TOKEN, _config, _rows, am_payload


def test_alert_is_paged_through_the_notification_routes(
    cli: Any, serve_factory: Any, http_receiver: HttpReceiver
) -> None:
    rx = http_receiver
    _config(cli, [NOTIFY])
    data = yaml.safe_load(cli.config_path.read_text())
    data["notifications"] = {
        "channels": {
            "slack-alerts": {"type": "slack", "webhook_url": rx.url("/slack")},
            "pd": {"type": "pagerduty", "routing_key": "RK", "base_url": rx.url()},
        },
        "routes": {"critical": ["slack-alerts", "pd"]},
    }
    cli.write_config(data)
    srv = serve_factory(cli, token=TOKEN)
    decision = srv.post("/hooks/alertmanager", am_payload("fp-page")).json()["decisions"][0]
    assert decision["decision"] == "acted"

    (slack,) = rx.wait_for("/slack", 1, timeout=60)
    assert "alert.notify web" in slack.json()["text"] and "HighErrorRate" in slack.json()["text"]
    (pd,) = rx.wait_for("/v2/enqueue", 1, timeout=30)
    body = pd.json()
    assert body["event_action"] == "trigger" and body["routing_key"] == "RK"
    assert body["dedup_key"].startswith("alert:")
    events = [e for e in _rows(cli, t.events) if e.kind == "alert.notify"]
    assert len(events) == 1 and events[0].delivered
    sent = [n for n in _rows(cli, t.notifications) if n.event_id == events[0].id]
    assert sorted((n.channel, n.status) for n in sent) == [("pd", "sent"), ("slack-alerts", "sent")]
