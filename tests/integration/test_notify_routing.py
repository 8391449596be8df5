"""The runbook's default routes: what goes where without `notifications.routes`, and what
`config check` says is unserved."""

from __future__ import annotations

from typing import Any

from recoverctl.catalog import Catalog
from recoverctl.config import parse_config
from recoverctl.notify.delivery import deliver_pending
from recoverctl.notify.routing import channels_for, unserved_routes
from tests.conftest import Cli
from tests.fixtures.http_receiver import HttpReceiver


def _channels(rx: HttpReceiver, smtp_port: int = 1) -> dict[str, Any]:
    twilio = {"account_sid": "AC1", "auth_token": "tok", "from": "+15550001111", "base_url": rx.url()}
    return {
        "slack-alerts": {"type": "slack", "webhook_url": rx.url("/alerts")},
        "ops-room": {"type": "slack", "webhook_url": rx.url("/monitoring"), "channel": "#monitoring"},
        "random": {"type": "slack", "webhook_url": rx.url("/random")},
        "sms": {"type": "sms", **twilio, "to": ["+15550002222"]},
        "call": {"type": "voice", **twilio, "to": ["+15550002222"]},
        "pd": {"type": "pagerduty", "routing_key": "K", "base_url": rx.url()},
        "mail": {
            "type": "email",
            "host": "127.0.0.1",
            "port": smtp_port,
            "security": "none",
            "from": "a@example.test",
            "to": ["oncall@example.test"],
        },
    }


def test_without_routes_the_runbook_routes_apply(http_receiver: HttpReceiver) -> None:
    cfg = parse_config({"notifications": {"channels": _channels(http_receiver)}}, env={})
    assert channels_for(cfg, "critical") == ["sms", "call", "slack-alerts", "pd"]
    assert channels_for(cfg, "warning") == ["mail", "ops-room"]
    assert channels_for(cfg, "info") == ["mail", "ops-room"]
    assert unserved_routes(cfg) == []

    # Routes given in the config win, even when they leave the runbook's channels out.
    explicit = parse_config(
        {"notifications": {"channels": _channels(http_receiver), "routes": {"critical": ["random"]}}}, env={}
    )
    assert channels_for(explicit, "critical") == ["random"] and channels_for(explicit, "warning") == []
    assert "critical → SMS: routes.critical names none of sms" in unserved_routes(explicit)
    assert "warning → email: routes.warning names none of mail" in unserved_routes(explicit)


def test_critical_event_reaches_sms_voice_slack_alerts_and_pagerduty(
    http_receiver: HttpReceiver, smtp_factory: Any, tmp_path: Any
) -> None:
    rx = http_receiver
    smtp = smtp_factory()
    cfg = parse_config({"notifications": {"channels": _channels(rx, smtp.port)}}, env={})
    catalog = Catalog(f"sqlite:///{tmp_path / 'c.db'}")
    catalog.emit_event("rollback.failed", "critical", "web", "rollback of web failed")
    catalog.emit_event("drill.failed", "warning", "main", "drill missed its RTO")
    catalog.emit_event("backup.succeeded", "info", "main", "backup done")
    report = deliver_pending(cfg, catalog)
    catalog.close()
    assert (report.events, report.collected_for_summary, report.failed) == (3, 1, 0)
    assert [d.channel for d in report.deliveries] == ["sms", "call", "slack-alerts", "pd", "mail", "ops-room"]
    assert len(rx.at("/2010-04-01/Accounts/AC1/Messages.json")) == 1
    assert len(rx.at("/2010-04-01/Accounts/AC1/Calls.json")) == 1
    assert "rollback of web failed" in rx.at("/alerts")[0].json()["text"]
    assert len(rx.at("/v2/change/enqueue")) + len(rx.at("/v2/enqueue")) == 1
    assert "drill missed its RTO" in rx.at("/monitoring")[0].json()["text"]
    assert rx.at("/random") == []
    (mail,) = smtp.messages
    assert mail.message["Subject"].startswith("[WARNING] drill.failed")


def test_config_check_names_unserved_runbook_routes(cli: Cli, http_receiver: HttpReceiver) -> None:
    channels = _channels(http_receiver)
    cli.write_config({"notifications": {"channels": {"slack-alerts": channels["slack-alerts"]}}})
    out = cli("--json", "config", "check", check=0).json()
    assert out["unserved_routes"] == [
        "critical → SMS: no twilio channel configured (type: sms)",
        "critical → voice: no twilio channel configured (type: voice)",
        "warning → email: no email channel configured",
        "warning → Slack #monitoring: no slack channel posting to #monitoring (channel: '#monitoring')",
        "info → daily summary by email: no email channel configured",
    ]
    text = cli("config", "check", check=0).stdout
    assert "unserved runbook route: critical → voice: no twilio channel configured" in text
