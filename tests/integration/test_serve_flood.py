"""`recoverctl serve` under hostile traffic: an unauthenticated flood is tallied, throttled and
audited in a handful of rows while legitimate alerts keep being accepted; signed requests need a
fresh timestamp and are never accepted twice."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import yaml

from recoverctl.service.auth import sign
from tests.integration.test_serve import HMAC_KEY, NOTIFY, TOKEN, _config, _rows, am_payload

FLOOD = 500


def test_unauthenticated_flood_is_aggregated_and_legit_alerts_still_pass(
    cli: Any, serve_factory: Any
) -> None:
    from recoverctl.catalog import tables as t

    # A long interval: the only write of the tallies is the one at shutdown, so the row count
    # below does not depend on how long the flood takes on a busy machine.
    # A short pause before each 429 (default 0.25 s) keeps the test quick.
    _config(
        cli,
        [{**NOTIFY, "cooldown": 0, "max_actions": None}],
        rejections={"flush_every": "1h", "delay": "0.02s"},
    )
    srv = serve_factory(cli, token=TOKEN)
    hook = srv.url + "/hooks/alertmanager"
    flood_statuses: list[int] = []
    started = threading.Event()

    attacker = httpx.Client(timeout=30, limits=httpx.Limits(max_connections=20))

    def bad(i: int) -> int:
        started.set()
        headers = {"Authorization": "Bearer wrong"} if i % 2 else {}
        return attacker.post(hook, json=am_payload(f"evil{i}"), headers=headers).status_code

    with attacker, ThreadPoolExecutor(max_workers=20) as pool:
        flood = pool.map(bad, range(FLOOD))
        started.wait(10)
        legit = [srv.post("/hooks/alertmanager", am_payload(f"ok{i}", service=f"svc{i}")) for i in range(10)]
        flood_statuses = list(flood)

    assert [r.status_code for r in legit] == [202] * 10
    assert {r.json()["decisions"][0]["decision"] for r in legit} == {"acted"}
    assert set(flood_statuses) <= {401, 429} and len(flood_statuses) == FLOOD
    # The default burst is 20: most of the flood is answered 429 without costing any write.
    assert flood_statuses.count(429) >= FLOOD - 20 - 60, flood_statuses.count(401)
    # The API's authentication failures are counted and throttled the same way.
    assert srv.client.get("/api/alerts").status_code == 429
    metrics = srv.client.get("/metrics").text
    assert 'outcome="rate_limited",source="alertmanager"' in metrics
    # Nothing of the flood is in the catalog yet: refusals are tallied in memory...
    assert not [a for a in _rows(cli, t.alerts) if a.decision == "rejected"]

    srv.stop()  # ...and written when the server stops (SIGTERM, graceful).
    everything = [a for a in _rows(cli, t.audit_log) if a.action == "webhook.rejected"]
    api = [(a.outcome, a.details["count"]) for a in everything if a.target == "/api"]
    assert api == [("rate_limited", 1)]
    audit = [a for a in everything if a.target == "/hooks/alertmanager"]
    assert len(audit) + len(api) == len(everything)
    assert 1 <= len(audit) <= 6, [(a.outcome, a.details) for a in audit]
    assert sum(a.details["count"] for a in audit) == FLOOD
    assert {a.outcome for a in audit} == {"unauthorized", "rate_limited"}
    assert all(a.details["peer"] == "127.0.0.1" and a.actor == "webhook:127.0.0.1" for a in audit)
    rejected = [a for a in _rows(cli, t.alerts) if a.decision == "rejected" and a.source == "alertmanager"]
    assert len(rejected) == len(audit)
    assert sum(int(a.labels["count"]) for a in rejected) == FLOOD
    assert any("requests from 127.0.0.1 refused (rate_limited)" in a.reason for a in rejected)
    # The legitimate alerts were decided one by one.
    assert len([a for a in _rows(cli, t.alerts) if a.decision == "acted"]) == 10


def _generic(srv: Any, body: bytes, timestamp: str | None, signature: str | None = None) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if timestamp is not None:
        headers["X-Grafana-Alerting-Signature-Timestamp"] = timestamp
    headers["X-Grafana-Alerting-Signature"] = signature or sign(HMAC_KEY.encode(), body, timestamp)
    result: httpx.Response = srv.client.post("/hooks/generic", content=body, headers=headers)
    return result


def test_signed_generic_webhooks_need_a_fresh_timestamp_and_replays_are_refused(
    cli: Any, serve_factory: Any
) -> None:
    _config(cli, [NOTIFY])
    srv = serve_factory(cli, token=TOKEN)
    body = json.dumps({"alertname": "HighErrorRate", "labels": {"service": "web"}, "id": "sig-1"}).encode()

    missing = _generic(srv, body, None)
    assert missing.status_code == 401 and "X-Grafana-Alerting-Signature-Timestamp" in missing.json()["detail"]
    stale = _generic(srv, body, str(int(time.time()) - 600))
    assert stale.status_code == 401 and "stale" in stale.json()["detail"]
    now = str(int(time.time()))
    valid = _generic(srv, body, now)
    assert valid.status_code == 202, valid.text
    assert valid.json()["decisions"][0]["decision"] == "acted"
    replay = _generic(srv, body, now, sign(HMAC_KEY.encode(), body, now))
    assert replay.status_code == 401 and "replayed" in replay.json()["detail"]
    # The timestamp is signed: moving it without the key breaks the signature.
    moved = _generic(srv, body, str(int(now) + 1), sign(HMAC_KEY.encode(), body, now))
    assert moved.status_code == 401 and "does not match" in moved.json()["detail"]


def test_senders_without_timestamps_can_opt_out(cli: Any, serve_factory: Any) -> None:
    _config(cli, [NOTIFY])
    cfg = yaml.safe_load(cli.config_path.read_text())
    cfg["serve"]["auth"]["require_timestamp"] = False
    cli.write_config(cfg)
    srv = serve_factory(cli, token=TOKEN)
    body = json.dumps({"alertname": "HighErrorRate", "labels": {"service": "web"}, "id": "nots"}).encode()
    assert _generic(srv, body, None).status_code == 202
