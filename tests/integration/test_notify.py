"""Notification channels against loopback stand-ins: HTTP receivers and aiosmtpd."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from recoverctl.actions.deliver import PlannedDelivery, send_test
from recoverctl.catalog import Catalog
from recoverctl.catalog import tables as t
from recoverctl.config import load_config
from recoverctl.errors import ConfigError
from recoverctl.notify.delivery import deliver_pending
from tests.conftest import Cli
from tests.fixtures.http_receiver import HttpReceiver, Reply
from tests.fixtures.net import free_port

FAST_RETRY = {"attempts": 3, "initial": "0.05s", "maximum": "0.2s"}


def _notifications(cli: Cli) -> list[Any]:
    catalog = Catalog(cli.env["RECOVERCTL_CATALOG"])
    try:
        with catalog.begin() as conn:
            return list(conn.execute(sa.select(t.notifications).order_by(t.notifications.c.id)).all())
    finally:
        catalog.close()


def test_minimal_config_as_written_posts_slack_json(cli: Cli, http_receiver: HttpReceiver) -> None:
    cli.write_config(
        f"""
notifications:
  channels:
    slack-alerts:
      type: slack
      webhook_url: {http_receiver.url("/slack")}
  routes:
    critical: [slack-alerts]
sources:                  # config check refuses a schedule naming a source that is not here
  main:
    type: postgres
schedules:
  - name: hourly-incremental
    cron: "0 * * * *"
    job: backup postgres --source main --type incremental
"""
    )
    cli("config", "check", check=0)
    cli("notify", "test", "--channel", "slack-alerts", "--severity", "critical", check=0)
    (req,) = http_receiver.at("/slack")
    body = req.json()
    assert req.headers["content-type"] == "application/json"
    assert "CRITICAL" in body["text"] and "test notification" in body["text"]
    assert body["blocks"][0]["type"] == "header"
    assert any(f["text"] == "*Severity*\ncritical" for f in body["blocks"][2]["fields"])
    (row,) = _notifications(cli)
    assert (row.channel, row.channel_type, row.status, row.attempts, row.http_status) == (
        "slack-alerts",
        "slack",
        "sent",
        1,
        200,
    )


def _all_channels(rx: HttpReceiver, smtp_port: int, secret_file: Path) -> dict[str, Any]:
    twilio = {"account_sid": "AC123", "auth_token": "tw-token", "from": "+15550001111", "base_url": rx.url()}
    return {
        "channels": {
            "slack": {"type": "slack", "webhook_url": rx.url("/slack"), "retry": FAST_RETRY},
            "sms": {"type": "sms", **twilio, "to": ["+15550002222", "+4917012345678"], "retry": FAST_RETRY},
            "call": {"type": "voice", **twilio, "to": ["+15550002222"], "retry": FAST_RETRY},
            "pd": {"type": "pagerduty", "routing_key": "R0UTING", "base_url": rx.url(), "retry": FAST_RETRY},
            "hook": {
                "type": "webhook",
                "url": rx.url("/hook"),
                "secret_file": str(secret_file),
                "headers": {"X-Team": "ops"},
                "retry": FAST_RETRY,
            },
            "mail": {
                "type": "email",
                "host": "127.0.0.1",
                "port": smtp_port,
                "security": "none",
                "username": "alerts",
                "password": "s3cret",
                "from": "recoverctl@example.test",
                "to": ["oncall@example.test", "ops@example.test"],
                "retry": FAST_RETRY,
            },
        },
        "routes": {"critical": ["sms", "call", "slack", "pd", "hook"], "warning": ["mail", "slack"]},
    }


def test_every_channel_sends_a_correctly_formed_request(
    cli: Cli, http_receiver: HttpReceiver, smtp_factory: Any, tmp_path: Path
) -> None:
    smtp = smtp_factory(credentials=("alerts", "s3cret"))
    secret = tmp_path / "hook.secret"
    secret.write_text("hook-secret\n")
    cli.write_config({"notifications": _all_channels(http_receiver, smtp.port, secret)})

    out = cli("--json", "notify", "test", "--severity", "critical", check=0).json()
    assert [r["channel"] for r in out["results"]] == ["sms", "call", "slack", "pd", "hook"]
    assert {r["status"] for r in out["results"]} == {"sent"}

    expected_auth = "Basic " + base64.b64encode(b"AC123:tw-token").decode()
    sms = http_receiver.at("/2010-04-01/Accounts/AC123/Messages.json")
    assert [r.form()["To"] for r in sms] == ["+15550002222", "+4917012345678"]
    for r in sms:
        assert r.headers["authorization"] == expected_auth
        assert r.headers["content-type"] == "application/x-www-form-urlencoded"
        assert r.form()["From"] == "+15550001111" and "CRITICAL" in r.form()["Body"]
    (call,) = http_receiver.at("/2010-04-01/Accounts/AC123/Calls.json")
    assert call.headers["authorization"] == expected_auth
    assert call.form()["Twiml"].startswith("<Response><Say>recoverctl critical alert")

    (pd,) = http_receiver.at("/v2/enqueue")
    body = pd.json()
    assert body["routing_key"] == "R0UTING" and body["event_action"] == "trigger"
    assert body["dedup_key"].startswith("recoverctl/notify.test/")
    assert body["payload"]["severity"] == "critical" and body["payload"]["summary"]

    (hook,) = http_receiver.at("/hook")
    ts = hook.headers["x-recoverctl-timestamp"]
    mac = hmac.new(b"hook-secret", ts.encode() + b"." + hook.body, hashlib.sha256).hexdigest()
    assert hook.headers["x-recoverctl-signature"] == f"sha256={mac}"
    assert hook.headers["x-team"] == "ops"
    assert hook.json()["severity"] == "critical" and hook.json()["kind"] == "notify.test"

    # Warning goes to email + Slack; the mail is text + HTML and the server saw the login.
    cli("notify", "test", "--severity", "warning", check=0)
    (mail,) = smtp.messages
    assert smtp.logins == ["alerts"]
    assert sorted(mail.rcpt_tos) == ["oncall@example.test", "ops@example.test"]
    assert mail.message["Subject"].startswith("[WARNING] notify.test")
    assert mail.message.get_body(("plain",)).get_content().startswith("[WARNING]")
    assert "<h2" in mail.message.get_body(("html",)).get_content()
    assert len(http_receiver.at("/slack")) == 2


def test_starttls_with_a_private_ca(cli: Cli, smtp_factory: Any) -> None:
    smtp = smtp_factory(credentials=("u", "p"), starttls=True)
    mail = {
        "type": "email",
        "host": "127.0.0.1",
        "port": smtp.port,
        "security": "starttls",
        "ca_file": smtp.ca_file,
        "username": "u",
        "password": "p",
        "from": "a@example.test",
        "to": ["b@example.test"],
    }
    cli.write_config({"notifications": {"channels": {"mail": mail}}})
    cli("notify", "test", "--channel", "mail", check=0)
    assert len(smtp.messages) == 1 and smtp.logins == ["u"]


def test_retries_on_503_and_429_but_not_400(cli: Cli, http_receiver: HttpReceiver) -> None:
    rx = http_receiver
    rx.script("/flaky", Reply(503, "busy"))
    rx.script("/throttled", Reply(429, "slow down", {"Retry-After": "1"}))
    rx.script("/broken", Reply(400, "invalid_payload"))
    channels = {
        name: {"type": "slack", "webhook_url": rx.url(f"/{name}"), "retry": FAST_RETRY}
        for name in ("flaky", "throttled", "broken")
    }
    cli.write_config({"notifications": {"channels": channels, "routes": {"critical": list(channels)}}})
    r = cli("--json", "notify", "test", "--severity", "critical", check=3)
    results = {x["channel"]: x for x in r.json()["results"]}

    assert len(rx.at("/flaky")) == 2 and results["flaky"]["status"] == "sent"
    assert results["flaky"]["attempts"] == 2
    first, second = rx.at("/throttled")
    assert second.at - first.at >= 0.95, "Retry-After: 1 must be honoured"
    assert results["throttled"]["status"] == "sent"
    assert len(rx.at("/broken")) == 1
    assert results["broken"]["status"] == "failed" and results["broken"]["http_status"] == 400
    assert "invalid_payload" in results["broken"]["error"]
    assert "recoverctl notify" not in r.stderr or "partial" not in r.stderr
    rows = {row.channel: row for row in _notifications(cli)}
    assert (rows["broken"].status, rows["broken"].attempts, rows["broken"].http_status) == ("failed", 1, 400)
    assert (rows["flaky"].status, rows["flaky"].attempts) == ("sent", 2)


def test_smtp_down_is_recorded_and_other_channels_still_deliver(
    cli: Cli, http_receiver: HttpReceiver
) -> None:
    mail = {
        "type": "email",
        "host": "127.0.0.1",
        "port": free_port(),  # nothing listens here
        "security": "none",
        "from": "a@example.test",
        "to": ["b@example.test"],
        "retry": {"attempts": 2, "initial": "0.05s"},
    }
    slack = {"type": "slack", "webhook_url": http_receiver.url("/slack")}
    cli.write_config(
        {
            "notifications": {
                "channels": {"mail": mail, "slack": slack},
                "routes": {"warning": ["mail", "slack"]},
            }
        }
    )
    r = cli("--json", "notify", "test", "--severity", "warning", check=3)
    assert r.error_json()["exit_code"] == 3
    assert len(http_receiver.at("/slack")) == 1
    rows = {row.channel: row for row in _notifications(cli)}
    assert rows["mail"].status == "failed" and rows["mail"].attempts == 2
    assert "ConnectionRefused" in rows["mail"].error
    assert rows["slack"].status == "sent"


def test_events_are_routed_by_severity_with_stable_dedup_keys(cli: Cli, http_receiver: HttpReceiver) -> None:
    rx = http_receiver
    cli.write_config(
        {
            "notifications": {
                "channels": {
                    "alerts": {"type": "slack", "webhook_url": rx.url("/alerts")},
                    "monitoring": {"type": "slack", "webhook_url": rx.url("/monitoring")},
                    "pd": {"type": "pagerduty", "routing_key": "K", "base_url": rx.url()},
                },
                "routes": {"critical": ["alerts", "pd"], "warning": ["monitoring"], "info": ["monitoring"]},
            }
        }
    )
    catalog = Catalog(cli.env["RECOVERCTL_CATALOG"])
    catalog.emit_event("backup.failed", "critical", "main", "backup of main failed: disk full", {"run": 7})
    catalog.emit_event("backup.failed", "critical", "main", "backup of main failed again", {"run": 8})
    catalog.emit_event("drill.slow", "warning", "main", "drill RTO at 80% of target")
    catalog.emit_event("backup.succeeded", "info", "main", "backup of main done")
    catalog.emit_event(
        "deploy.succeeded", "warning", "api", "api 1.4.2 deployed", {"url": "https://ci.example/1"}
    )
    out = cli("--json", "notify", "deliver", check=0).json()
    assert (out["events"], out["collected_for_summary"], out["failed"]) == (5, 1, 0)

    triggers = [r.json() for r in rx.at("/v2/enqueue")]
    assert [b["dedup_key"] for b in triggers] == ["recoverctl/backup/main", "recoverctl/backup/main"]
    assert {b["event_action"] for b in triggers} == {"trigger"}
    assert len(rx.at("/alerts")) == 2
    texts = [r.json()["text"] for r in rx.at("/monitoring")]
    assert texts[0].startswith(":warning: [WARNING] drill.slow main: drill RTO")
    assert texts[1].startswith(":warning: [WARNING] deploy.succeeded api: api 1.4.2 deployed")
    assert rx.at("/v2/change/enqueue") == []  # warnings are not routed to PagerDuty here

    catalog.emit_event(
        "backup.resolved", "critical", "main", "backup of main works again", None, "recoverctl/backup/main"
    )
    catalog.emit_event("rollback.succeeded", "critical", "api", "rolled back to 1.4.1")
    assert cli.config_path is not None
    cfg = load_config(str(cli.config_path), env={})
    deliver_pending(cfg, catalog)
    resolve, rollback = (r.json() for r in rx.at("/v2/enqueue")[2:])
    assert (resolve["event_action"], resolve["dedup_key"]) == ("resolve", "recoverctl/backup/main")
    assert rollback["event_action"] == "trigger"
    # Delivered events are not sent again.
    assert deliver_pending(cfg, catalog).events == 0 and len(rx.requests) == 10
    catalog.close()


def test_change_events_for_deploys(cli: Cli, http_receiver: HttpReceiver) -> None:
    rx = http_receiver
    cli.write_config(
        {
            "notifications": {
                "channels": {"pd": {"type": "pagerduty", "routing_key": "K", "base_url": rx.url()}},
                "routes": {"warning": ["pd"]},
            }
        }
    )
    catalog = Catalog(cli.env["RECOVERCTL_CATALOG"])
    catalog.emit_event(
        "rollback.succeeded", "warning", "api", "rolled back api to 1.4.1", {"links": ["https://x/1"]}
    )
    catalog.close()
    cli("notify", "deliver", check=0)
    (change,) = rx.at("/v2/change/enqueue")
    body = change.json()
    assert body["routing_key"] == "K" and "rolled back api" in body["payload"]["summary"]
    assert body["links"] == [{"href": "https://x/1", "text": "https://x/1"}]


def test_summary_is_sent_as_text_and_html_email(cli: Cli, smtp_factory: Any) -> None:
    smtp = smtp_factory()
    mail = {
        "type": "email",
        "host": "127.0.0.1",
        "port": smtp.port,
        "security": "none",
        "from": "a@example.test",
        "to": ["ops@example.test"],
    }
    cli.write_config(
        {
            "sources": {"main": {"type": "postgres"}},
            "notifications": {"channels": {"mail": mail}, "routes": {"info": ["mail"]}},
        }
    )
    catalog = Catalog(cli.env["RECOVERCTL_CATALOG"])
    ok = catalog.start_run("backup", "main", "/repo")
    catalog.finish_run(ok, "succeeded", bytes_added=5 * 1024 * 1024, bytes_read=10)
    bad = catalog.start_run("backup", "main", "/repo")
    catalog.finish_run(bad, "failed", error="connection refused")
    with catalog.begin() as conn:
        conn.execute(
            t.drills.insert().values(
                name="weekly",
                source="main",
                started_at=time.time(),
                verdict="pass",
                rto_s=600,
                rpo_s=120,
                rto_target_s=7200,
                rpo_target_s=3600,
            )
        )
    catalog.emit_event("backup.succeeded", "info", "main", "backup of main done")
    catalog.close()

    text = cli("summary", "daily", check=0).stdout
    assert "main: 1 done, 1 failed, 5.0 MiB added (last error: connection refused)" in text
    assert "weekly [main] pass: RTO 10m00s (target 2h00m)" in text
    assert "backup.succeeded main: backup of main done" in text
    assert "OK" in text.split("RPO exposure", 1)[1].split("\n")[1]

    out = cli("--json", "summary", "weekly", "--send", check=0).json()
    assert out["deliveries"][0]["status"] == "sent"
    (msg,) = smtp.messages
    assert msg.message["Subject"].startswith("[INFO] summary.weekly")
    assert "Restore drills" in msg.message.get_body(("plain",)).get_content()
    assert "<h3>Restore drills</h3>" in msg.message.get_body(("html",)).get_content()


def test_bad_channel_and_missing_route_are_usage_errors(cli: Cli) -> None:
    cli.write_config(
        {"notifications": {"channels": {"s": {"type": "slack", "webhook_url": "http://127.0.0.1:1/"}}}}
    )
    assert "unknown notification channel 'nope'" in cli("notify", "test", "--channel", "nope", check=2).stderr
    assert cli.config_path is not None
    cfg = load_config(str(cli.config_path), env={})
    catalog = Catalog(cli.env["RECOVERCTL_CATALOG"])
    with pytest.raises(ConfigError, match="no channels are routed"):
        send_test(cfg, catalog, None, "critical", dry_run=False)
    dry = send_test(cfg, catalog, "s", "warning", dry_run=True)
    assert dry.results == [PlannedDelivery("s", "slack")]
    assert asdict(dry)["results"] == [{"channel": "s", "channel_type": "slack", "status": "would-send"}]
    assert _notifications(cli) == []
    catalog.close()


def test_min_interval_suppresses_a_burst(tmp_path: Path, http_receiver: HttpReceiver) -> None:
    from recoverctl.config import parse_config
    from recoverctl.notify import Message
    from recoverctl.notify.delivery import send_to_channels

    slack = {"type": "slack", "webhook_url": http_receiver.url("/s"), "min_interval": "1h"}
    cfg = parse_config({"notifications": {"channels": {"s": slack}}}, env={})
    catalog = Catalog(f"sqlite:///{tmp_path / 'c.db'}")
    msg = Message(severity="warning", kind="backup.failed", summary="x", subject="main")
    (first,) = send_to_channels(cfg, catalog, msg, ["s"])
    (second,) = send_to_channels(cfg, catalog, msg, ["s"])
    assert (first.status, second.status) == ("sent", "suppressed")
    assert len(http_receiver.at("/s")) == 1
    with catalog.begin() as conn:
        assert [r.status for r in conn.execute(sa.select(t.notifications)).all()] == ["sent", "suppressed"]
    catalog.close()
