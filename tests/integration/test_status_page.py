"""The status_page channel against a loopback receiver: the signed webhook and the Statuspage API."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from recoverctl.catalog import Catalog, incidents
from recoverctl.catalog import tables as t
from recoverctl.config import Config, parse_config
from recoverctl.incidents.escalation import post_status
from recoverctl.notify.delivery import deliver_pending, notify_status
from tests.conftest import Cli
from tests.fixtures.http_receiver import HttpReceiver, Reply

FAST_RETRY = {"attempts": 3, "initial": "0.05s", "maximum": "0.2s"}


@pytest.fixture
def catalog(tmp_path: Path) -> Iterator[Catalog]:
    c = Catalog(f"sqlite:///{tmp_path / 'catalog.db'}")
    yield c
    c.close()


def _config(page: dict[str, Any], **channels: Any) -> Config:
    page = {"type": "status_page", "retry": FAST_RETRY, **page}
    return parse_config({"notifications": {"channels": {"status": page, **channels}, "routes": {}}}, env={})


def _statuspage(rx: HttpReceiver, key: str, components: dict[str, str]) -> dict[str, Any]:
    return {
        "mode": "statuspage",
        "base_url": rx.url(),
        "page_id": "pg1",
        "api_key": key,
        "components": components,
    }


def _rows(catalog: Catalog) -> list[Any]:
    with catalog.begin() as conn:
        return list(conn.execute(sa.select(t.notifications).order_by(t.notifications.c.id)).all())


def test_webhook_is_signed_and_follows_the_service_state(
    catalog: Catalog, http_receiver: HttpReceiver, tmp_path: Path
) -> None:
    secret = tmp_path / "page.secret"
    secret.write_text("page-secret\n")
    cfg = _config(
        {
            "url": http_receiver.url("/status"),
            "secret_file": str(secret),
            "headers": {"X-Team": "ops"},
            "components": {"web": "web-frontend"},
            "messages": {"major_outage": "{service} is down ({state}); we are on it."},
        }
    )
    # Incidents drive the page: web's opens (degraded), its rollback fails (outage), it resolves.
    catalog.emit_event("alert.escalated", "critical", "web", "HighErrorRate on 'web': action withheld")
    catalog.emit_event("backup.failed", "critical", "main", "backup failed")  # about a source
    catalog.emit_event("rollback.failed", "critical", "api", "rollback of api failed")  # not covered
    assert post_status(cfg, catalog) == [(1, "degraded_performance")]
    catalog.emit_event("rollback.failed", "critical", "web", "rollback of web failed at step start")
    catalog.emit_event("rollback.succeeded", "warning", "web", "web rolled back from 2 to 1")
    assert deliver_pending(cfg, catalog).deliveries == []  # events never reach the page
    assert post_status(cfg, catalog) == [(1, "major_outage")]
    assert post_status(cfg, catalog) == []  # each state once
    incidents.resolve(catalog, 1, "alice", "fixed")
    assert post_status(cfg, catalog) == [(1, "operational")]
    assert post_status(cfg, catalog) == []

    degraded, down, up = http_receiver.at("/status")
    assert (degraded.json()["state"], degraded.json()["message"]) == (
        "degraded_performance",
        "web is degraded; we are working on it.",
    )
    for req in (degraded, down, up):
        ts = req.headers["x-recoverctl-timestamp"]
        mac = hmac.new(b"page-secret", ts.encode() + b"." + req.body, hashlib.sha256).hexdigest()
        assert req.headers["x-recoverctl-signature"] == f"sha256={mac}"
        assert req.headers["content-type"] == "application/json" and req.headers["x-team"] == "ops"
    assert {k: down.json()[k] for k in ("service", "component", "state", "message", "incident_key")} == {
        "service": "web",
        "component": "web-frontend",
        "state": "major_outage",
        "message": "web is down (major_outage); we are on it.",
        "incident_key": "recoverctl/incident/1",
    }
    assert (up.json()["state"], up.json()["message"]) == ("operational", "web is operating normally again.")
    assert [(r.channel_type, r.status, r.attempts, r.http_status) for r in _rows(catalog)] == [
        ("status_page", "sent", 1, 200)
    ] * 3


def test_statuspage_api_opens_updates_and_resolves_one_incident(
    catalog: Catalog, http_receiver: HttpReceiver
) -> None:
    rx = http_receiver
    cfg = _config(_statuspage(rx, "sp-key", {"web": "cmpweb"}))
    catalog.emit_event("alert.escalated", "critical", "web", "HighErrorRate on 'web'")
    catalog.emit_event("alert.notify", "warning", "web", "SlowRequests on 'web'")  # joins it
    deliver_pending(cfg, catalog)
    post_status(cfg, catalog)
    (patch,) = rx.at("/v1/pages/pg1/components/cmpweb")
    assert patch.method == "PATCH" and patch.json() == {"component": {"status": "degraded_performance"}}
    assert patch.headers["authorization"] == "OAuth sp-key"
    (listing,) = rx.at("/v1/pages/pg1/incidents/unresolved")
    assert listing.method == "GET"
    (opened,) = rx.at("/v1/pages/pg1/incidents")
    assert opened.method == "POST" and opened.headers["authorization"] == "OAuth sp-key"
    assert opened.json() == {
        "incident": {
            "name": "web: service disruption",
            "status": "investigating",
            "body": "web is degraded; we are working on it.",
            "component_ids": ["cmpweb"],
            "components": {"cmpweb": "degraded_performance"},
        }
    }

    # The page now lists the open incident: a worse state updates it, recovery resolves it.
    ours = [{"id": "inc9", "name": "web: service disruption", "components": [{"id": "cmpweb"}]}]
    other = [{"id": "inc1", "name": "planned maintenance", "components": [{"id": "cmpweb"}]}]
    rx.script("/v1/pages/pg1/incidents/unresolved", *[Reply(200, json.dumps(other + ours))] * 2)
    catalog.emit_event("rollback.failed", "critical", "web", "rollback failed")
    post_status(cfg, catalog)
    incidents.resolve(catalog, 1, "alice", "rolled back by hand")
    post_status(cfg, catalog)
    assert [r.json()["component"]["status"] for r in rx.at("/v1/pages/pg1/components/cmpweb")] == [
        "degraded_performance",
        "major_outage",
        "operational",
    ]
    updated, resolved = rx.at("/v1/pages/pg1/incidents/inc9")
    assert updated.method == resolved.method == "PATCH"
    assert updated.json()["incident"]["status"] == "identified"
    assert updated.json()["incident"]["components"] == {"cmpweb": "major_outage"}
    assert resolved.json()["incident"] == {
        "body": "web is operating normally again.",
        "components": {"cmpweb": "operational"},
        "status": "resolved",
    }
    assert len(rx.at("/v1/pages/pg1/incidents")) == 1, "one incident, never a second"
    assert rx.at("/v1/pages/pg1/incidents/inc1") == []


def test_a_bad_answer_is_retried_then_reported(catalog: Catalog, http_receiver: HttpReceiver) -> None:
    rx = http_receiver
    cfg = _config({**_statuspage(rx, "k", {"web": "cmpweb", "api": "cmpapi"}), "incidents": False})
    rx.script("/v1/pages/pg1/components/cmpweb", Reply(503, "busy"))
    rx.script("/v1/pages/pg1/components/cmpapi", Reply(401, '{"error": "invalid api key"}'))
    catalog.emit_event("rollback.failed", "critical", "web", "rollback failed")
    catalog.emit_event("rollback.failed", "critical", "api", "rollback failed")
    assert post_status(cfg, catalog) == [(1, "major_outage"), (2, "major_outage")]
    api = _rows(catalog)[1]
    assert api.error is not None and "invalid api key" in api.error
    assert len(rx.at("/v1/pages/pg1/components/cmpweb")) == 2
    assert len(rx.at("/v1/pages/pg1/components/cmpapi")) == 1
    assert [(r.status, r.attempts, r.http_status) for r in _rows(catalog)] == [
        ("sent", 2, 200),
        ("failed", 1, 401),
    ]


def test_notify_status_drives_pages_that_ignore_events(catalog: Catalog, http_receiver: HttpReceiver) -> None:
    cfg = _config({"url": http_receiver.url("/status"), "on_events": False})
    catalog.emit_event("rollback.failed", "critical", "web", "rollback failed")
    assert deliver_pending(cfg, catalog).deliveries == [] and post_status(cfg, catalog) == []
    (d,) = notify_status(cfg, catalog, "web", "partial_outage", "Checkout is slow", incident_key="incident:4")
    assert d.status == "sent"
    (req,) = http_receiver.at("/status")
    body = req.json()
    assert (body["service"], body["state"], body["message"], body["incident_key"]) == (
        "web",
        "partial_outage",
        "Checkout is slow",
        "incident:4",
    )
    assert "x-recoverctl-signature" not in req.headers  # no secret configured
    with pytest.raises(ValueError, match="unknown status page state"):
        notify_status(cfg, catalog, "web", "on_fire")


def test_notify_test_checks_the_page_without_changing_it(cli: Cli, http_receiver: HttpReceiver) -> None:
    rx = http_receiver
    page = {
        "type": "status_page",
        "mode": "statuspage",
        "base_url": rx.url(),
        "page_id": "pg1",
        "api_key": "k",
        "components": {"web": "cmpweb", "api": "cmpgone"},
    }
    cli.write_config({"notifications": {"channels": {"status": page}}})
    rx.script("/v1/pages/pg1/components", Reply(200, json.dumps([{"id": "cmpweb"}, {"id": "cmpdb"}])))
    out = cli("--json", "notify", "test", "--channel", "status", check=1).json()
    (result,) = out["results"]
    assert result["status"] == "failed" and "has no component cmpgone" in result["error"]
    assert [r.method for r in rx.requests] == ["GET"]


def test_config_refuses_an_incomplete_page() -> None:
    from recoverctl.errors import ConfigError

    with pytest.raises(ConfigError, match="mode statuspage needs 'page_id'"):
        _config({"mode": "statuspage", "api_key": "k", "components": {"web": "c"}})
    with pytest.raises(ConfigError, match="names body"):
        _config({"url": "http://127.0.0.1:1/", "messages": {"operational": "{body}"}})


def test_a_page_named_in_routes_is_told_by_incidents_only(
    catalog: Catalog, http_receiver: HttpReceiver
) -> None:
    page = {"type": "status_page", "url": http_receiver.url("/status"), "retry": FAST_RETRY}
    cfg = parse_config(
        {"notifications": {"channels": {"status": page}, "routes": {"critical": ["status"]}}}, env={}
    )
    catalog.emit_event("backup.failed", "critical", "main", "backup failed")
    catalog.emit_event("rollback.failed", "critical", "web", "rollback failed")
    assert deliver_pending(cfg, catalog).deliveries == []
    assert post_status(cfg, catalog) == [(2, "major_outage")]
    (req,) = http_receiver.at("/status")
    assert (req.json()["service"], req.json()["state"]) == ("web", "major_outage")
