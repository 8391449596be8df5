"""From the first alert to the post-incident report: a real Alertmanager fires HighErrorRate for
service=web → `recoverctl serve` rolls web back (Docker) and opens ONE incident → level 1 goes to
a local Slack receiver and the status page says web is degraded, level 2 (no acknowledgement) to
an email list on a local SMTP server and repeats → `incidents ack` stops it → Alertmanager's
resolved notification with the verified rollback resolves it and the status page says
operational → the drafted report lists every step in order."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from recoverctl.catalog import Catalog
from recoverctl.catalog import tables as t
from tests.fixtures.docker_engine import DockerEngine
from tests.fixtures.http_receiver import HttpReceiver
from tests.fixtures.net import free_port, wait_until

pytestmark = pytest.mark.e2e

TOKEN = "e2e-incident-token-0123456789abcdef"


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
    name = f"rc-incident-web-{port}"
    yield port, name
    docker_engine.remove_containers(name)


def _config(port: int, container: str, token_file: Path, rx: HttpReceiver, smtp_port: int) -> str:
    return f"""
serve:
  auth:
    bearer_token_file: {token_file}
  poll_interval: 0.1s
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
notifications:
  channels:
    slack-alerts: {{type: slack, webhook_url: "{rx.url("/slack")}"}}
    status: {{type: status_page, url: "{rx.url("/status")}", components: {{web: web-frontend}}}}
    email-oncall:
      type: email
      host: 127.0.0.1
      port: {smtp_port}
      security: none
      from: recoverctl@example.test
      to: [oncall@example.test]
  routes:
    critical: [slack-alerts]
escalation:
  - level: 1
    after: 0s
    routes: [slack-alerts]
  - level: 2
    after: 5s
    routes: [email-oncall]
    repeat: 10s
"""


def _escalations(cli: Any) -> list[tuple[int, int, str]]:
    return [(r.level, r.repeat, r.state) for r in _rows(cli, t.incident_escalations)]


def test_alert_to_incident_escalation_ack_resolution_and_report(
    cli: Any,
    web: tuple[int, str],
    serve_factory: Any,
    alertmanager_factory: Any,
    http_receiver: HttpReceiver,
    smtp_factory: Any,
    tmp_path: Path,
) -> None:
    port, container = web
    smtp = smtp_factory()
    token_file = cli.home / "webhook-token"
    token_file.write_text(TOKEN + "\n")
    cli.write_config(_config(port, container, token_file, http_receiver, smtp.port))
    cli("deploy", "web", "v1", check=0)
    cli("deploy", "web", "v2", "--no-verify", check=0)

    srv = serve_factory(cli, token=TOKEN)
    am = alertmanager_factory(f"{srv.url}/hooks/alertmanager", str(token_file))
    labels = {"alertname": "HighErrorRate", "service": "web", "severity": "critical"}
    started = datetime.now(UTC) - timedelta(minutes=5)
    am.post_alert(labels, starts_at=started, annotations={"summary": "5xx at 12 %"})

    wait_until(lambda: _version(port) == "v1", timeout=120, what="v1 serving again after the rollback")
    listed = cli("incidents", "--json", check=0).json()
    assert [(i["id"], i["service"], i["kind"]) for i in listed] == [(1, "web", "alert")]
    assert listed[0]["state"] == "open"

    def slack_escalations() -> list[str]:
        texts = [r.json()["text"] for r in http_receiver.at("/slack")]
        return [x for x in texts if "escalated to level 1" in x]

    wait_until(slack_escalations, timeout=30, what="level 1 at the Slack receiver")
    # No acknowledgement: level 2 after 5 s, then its first repeat 10 s later, by email.
    wait_until(lambda: len(smtp.messages) >= 2, timeout=60, what="level 2 and its repeat by email")
    first_mail = smtp.messages[0].message.get_body(preferencelist=("plain",))
    assert "escalated to level 2" in first_mail.get_content()
    cli("incidents", "ack", "1", "--by", "alice", check=0)
    at_ack = _escalations(cli)

    am.post_alert(labels, starts_at=started, annotations={"summary": "5xx at 12 %"}, resolved=True)
    resolved = wait_until(
        lambda: (i := cli("incidents", "show", "1", "--json", check=0).json())["state"] == "resolved" and i,
        timeout=90,
        what="the incident resolved by the resolved alert and the verified rollback",
    )
    assert _escalations(cli) == at_ack  # the acknowledgement stopped the escalation
    assert at_ack[:3] == [(1, 0, "sent"), (2, 0, "sent"), (2, 1, "sent")]
    assert len(slack_escalations()) == 1
    # Everyone the escalation reached hears that it is resolved: Slack once, the email list once.
    notice = wait_until(
        lambda: [r for r in http_receiver.at("/slack") if "incident #1 resolved" in r.json()["text"]],
        what="the resolution notice on Slack",
    )
    assert len(notice) == 1
    wait_until(
        lambda: len(smtp.messages) == len([e for e in at_ack if e[0] == 2]) + 1, what="the email notice"
    )
    last_mail = smtp.messages[-1].message.get_body(preferencelist=("plain",)).get_content()
    assert "incident #1 resolved by recoverctl" in last_mail
    assert len(_rows(cli, t.incidents)) == 1 and len(_rows(cli, t.rollbacks)) == 1
    assert resolved["acknowledged_by"] == "alice" and resolved["resolved_by"] == "recoverctl"
    # Users read one story on the status page: degraded when it opened, operational when resolved,
    # whatever the events in between (the rollback's own events never drive the page).
    told = wait_until(lambda: len(http_receiver.at("/status")) >= 2 and http_receiver.at("/status"))
    assert [(r.json()["state"], r.json()["incident_key"]) for r in told] == [
        ("degraded_performance", "recoverctl/incident/1"),
        ("operational", "recoverctl/incident/1"),
    ]

    kinds = [e["kind"] for e in resolved["timeline"]]

    def first(kind: str) -> int:
        return next(i for i, k in enumerate(kinds) if k == kind)

    steps = [k.removeprefix("rollback.step.") for k in kinds if k.startswith("rollback.step.")]
    order = ["lock", "stop_current", "schema", "start_target", "verify", "notify", "record"]
    assert steps == [name for name in order if name in steps]  # every step, in order, once
    assert {"stop_current", "start_target", "verify", "notify", "record"} <= set(steps)
    assert first("alert.firing") < first("decision") < first("rollback.step.stop_current")
    assert first("rollback.step.verify") < first("rollback.succeeded") < first("acknowledged")
    assert first("escalation") < first("acknowledged") < first("alert.resolved") < first("resolved")
    assert kinds.count("resolved") == 1 and first("resolved") < first("resolution.notice")
    notes = [e for e in resolved["timeline"] if e["kind"] == "notification"]
    assert {n["details"]["channel"] for n in notes} == {"slack-alerts", "email-oncall"}
    assert all(n["details"]["outcome"] == "sent" and n["details"]["attempts"] >= 1 for n in notes)
    offsets = [e["offset_s"] for e in resolved["timeline"]]
    assert offsets == sorted(offsets)

    assert all(
        "duration_s" in e["details"] for e in resolved["timeline"] if e["kind"].startswith("rollback.step.")
    )

    md = tmp_path / "incident-1.md"
    cli("incidents", "report", "1", "--format", "md", "-o", str(md), check=0)
    text = md.read_text()
    assert "DRAFT" in text and "v2 → v1 (succeeded)" in text and "HighErrorRate" in text
    for kind in (
        "alert.firing",
        "decision",
        "rollback.step.verify",
        "notification",
        "acknowledged",
        "resolved",
    ):
        assert f"| {kind} |" in text
    html = cli("incidents", "report", "1", "--format", "html", check=0).stdout
    assert html.startswith("<!DOCTYPE html>") and "<link" not in html and "src=" not in html
    report = cli("incidents", "report", "1", "--format", "json", check=0).stdout
    assert '"time_to_acknowledge_s"' in report and '"draft": true' in report
