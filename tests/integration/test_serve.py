"""`recoverctl serve` as a real process: bad input, dedup, cooldown, cap, crash-restart, 503, health."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
import yaml

from recoverctl.catalog import Catalog
from recoverctl.catalog import tables as t
from recoverctl.service.auth import sign
from tests.fixtures.net import wait_until

TOKEN = "integration-token-0123456789"
HMAC_KEY = "integration-hmac-key-0123456789"
STARTED = (datetime.now(UTC) - timedelta(minutes=10)).isoformat()


def _config(cli: Any, policies: list[dict[str, Any]], **serve: Any) -> None:
    (cli.home / "token").write_text(TOKEN + "\n")
    (cli.home / "hmac").write_text(HMAC_KEY)
    cli.write_config(
        {
            "serve": {
                "auth": {
                    "bearer_token_file": str(cli.home / "token"),
                    "hmac_secret_file": str(cli.home / "hmac"),
                },
                "poll_interval": "0.1s",
                **serve,
            },
            "services": {"web": {"target": "docker", "image": "demo-web", "container": "web"}},
            "policies": policies,
        }
    )


NOTIFY = {
    "name": "page-on-errors",
    "match": {"alertname": "HighErrorRate"},
    "action": "notify",
    "service_from_label": "service",
    "cooldown": "10m",
    "max_actions": {"count": 1, "window": "1h"},
}


def am_payload(
    fingerprint: str, status: str = "firing", service: str = "web", **labels: str
) -> dict[str, Any]:
    alert = {
        "status": status,
        "labels": {"alertname": "HighErrorRate", "service": service, **labels},
        "annotations": {"summary": "5xx above 5 %"},
        "startsAt": STARTED,
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus/graph",
        "fingerprint": fingerprint,
    }
    return {
        "version": "4",
        "groupKey": '{}:{alertname="HighErrorRate"}',
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "recoverctl",
        "groupLabels": {"alertname": "HighErrorRate"},
        "commonLabels": alert["labels"],
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": [alert],
    }


def _rows(cli: Any, table: sa.Table) -> list[Any]:
    catalog = Catalog(cli.env["RECOVERCTL_CATALOG"])
    try:
        with catalog.begin() as conn:
            return list(conn.execute(sa.select(table).order_by(table.c.id)).all())
    finally:
        catalog.close()


def test_bad_input_is_refused_and_recorded_without_jobs(cli: Any, serve_factory: Any) -> None:
    rollback = {
        "name": "rb",
        "match": {"alertname": "ServiceDown"},
        "action": "rollback",
        "service_from_label": "service",
    }
    _config(cli, [NOTIFY, rollback], max_body_bytes=2048)
    srv = serve_factory(cli, token=TOKEN)
    hook = "/hooks/alertmanager"
    assert srv.client.post(hook, content=b"{not json", headers=srv.headers()).status_code == 400
    assert srv.post(hook, {"status": "firing"}).status_code == 422
    assert srv.post(hook, {**am_payload("a"), "status": "exploded"}).status_code == 422
    assert srv.client.post(hook, json=am_payload("a")).status_code == 401
    assert srv.post(hook, am_payload("a"), headers={"Authorization": "Bearer wrong"}).status_code == 401
    big = am_payload("a")
    big["commonAnnotations"] = {"padding": "x" * 4096}
    assert srv.post(hook, big).status_code == 413

    body = json.dumps({"alertname": "HighErrorRate", "labels": {"service": "web"}, "id": "g1"}).encode()
    stale = str(int(time.time()) - 600)
    stale_headers = {
        "X-Grafana-Alerting-Signature": sign(HMAC_KEY.encode(), body, stale),
        "X-Grafana-Alerting-Signature-Timestamp": stale,
    }
    r = srv.client.post("/hooks/generic", content=body, headers=stale_headers)
    assert r.status_code == 401 and "stale" in r.json()["detail"]
    bad_sig = {"X-Grafana-Alerting-Signature": "00" * 32}
    assert srv.client.post("/hooks/generic", content=body, headers=bad_sig).status_code == 401

    unknown = srv.post(hook, am_payload("u", service="nope"))
    assert unknown.status_code == 202
    assert unknown.json()["decisions"][0]["decision"] == "acted"  # notify needs no configured service

    down = am_payload("u2", service="nope")
    down["alerts"][0]["labels"]["alertname"] = "ServiceDown"
    ignored = srv.post(hook, down).json()["decisions"][0]
    assert (
        ignored["decision"] == "ignored" and ignored["reason"] == "unknown service 'nope' (not in services:)"
    )

    health = srv.client.get("/health")
    assert health.status_code == 200, health.text
    srv.stop()  # refusals are tallied and written in groups, at the latest when serve stops
    out = cli("alerts", "--json", "--limit", "100", check=0).json()
    rejected = [d for d in out if d["decision"] == "rejected"]
    assert len(rejected) == 8  # 8 different reasons: one group each
    assert {
        "received_at",
        "source",
        "alertname",
        "service",
        "fingerprint",
        "decision",
        "reason",
        "job_id",
    } <= set(out[0])
    assert all(d["job_id"] is None for d in rejected)
    jobs = _rows(cli, t.jobs)
    assert len(jobs) == 1 and jobs[0].payload["target"] == "nope"  # only the notify accepted above


def test_replicas_repeats_resolved_cooldown_and_cap(cli: Any, serve_factory: Any) -> None:
    _config(cli, [NOTIFY])
    srv = serve_factory(cli, token=TOKEN)
    hook = "/hooks/alertmanager"
    decisions = [srv.post(hook, am_payload("fp-1")).json()["decisions"][0] for _ in range(3)]
    assert [d["decision"] for d in decisions] == ["acted", "deduplicated", "deduplicated"]
    job_id = decisions[0]["job_id"]
    assert all(d["job_id"] == job_id for d in decisions)
    job = srv.wait_job(job_id, ("succeeded",))
    assert job["attempts"] == 1 and job["result"]["event_id"]
    resolved = srv.post(hook, am_payload("fp-1", status="resolved")).json()["decisions"][0]
    assert resolved["decision"] == "ignored"
    other = srv.post(hook, am_payload("fp-2")).json()["decisions"][0]
    assert other["decision"] == "suppressed" and other["reason"].startswith("cooldown")
    # Grafana delivers the same trouble with its own fingerprint: a new incident, same service.
    grafana = {
        "version": "1",
        "status": "firing",
        "state": "alerting",
        "alerts": [
            {
                "status": "firing",
                "labels": {"alertname": "HighErrorRate", "service": "web"},
                "startsAt": STARTED,
                "fingerprint": "gf",
                "values": {"B": 0.09},
            }
        ],
    }
    g = srv.post("/hooks/grafana", grafana).json()["decisions"][0]
    assert g["source"] == "grafana" and g["decision"] == "suppressed"
    events = [e for e in _rows(cli, t.events) if e.kind == "alert.notify"]
    assert len(events) == 1 and events[0].subject == "web"
    metrics = srv.client.get("/metrics").text
    assert 'recoverctl_alert_decisions_total{decision="deduplicated"} 2.0' in metrics
    assert 'recoverctl_jobs{kind="notify",state="succeeded"} 1.0' in metrics
    assert 'recoverctl_webhook_requests_total{outcome="accepted",source="alertmanager"} 5.0' in metrics
    listed = srv.client.get("/api/alerts?decision=acted", headers=srv.headers()).json()
    assert [d["job_id"] for d in listed] == [job_id]
    assert srv.client.get("/api/alerts").status_code == 401


def test_killed_with_jobs_queued_restart_runs_each_exactly_once(cli: Any, serve_factory: Any) -> None:
    _config(cli, [{**NOTIFY, "cooldown": 0, "max_actions": None}])
    srv = serve_factory(cli, "--workers", "0", token=TOKEN)
    for i in range(4):
        d = srv.post("/hooks/alertmanager", am_payload(f"k{i}", service=f"svc{i}")).json()["decisions"][0]
        assert d["decision"] == "acted"
    srv.kill()
    assert {j.state for j in _rows(cli, t.jobs)} == {"queued"}
    port = srv.port
    srv = serve_factory(cli, port=port, token=TOKEN)
    wait_until(
        lambda: {j.state for j in _rows(cli, t.jobs)} == {"succeeded"}, what="jobs to run after restart"
    )
    jobs = _rows(cli, t.jobs)
    assert len(jobs) == 4 and all(j.attempts == 1 for j in jobs)
    events = [e for e in _rows(cli, t.events) if e.kind == "alert.notify"]
    assert sorted(e.subject for e in events) == ["svc0", "svc1", "svc2", "svc3"]
    # A second restart finds nothing left to do.
    srv.stop()
    done = cli("worker", "--once", "--json", check=0).json()
    assert done == []


def test_separate_worker_process_runs_jobs_and_health_reflects_it(cli: Any, serve_factory: Any) -> None:
    _config(cli, [NOTIFY])
    srv = serve_factory(cli, "--workers", "0", token=TOKEN)
    health = srv.client.get("/health")
    assert health.status_code == 503 and health.json()["checks"]["worker"]["ok"] is False
    d = srv.post("/hooks/alertmanager", am_payload("w1")).json()["decisions"][0]
    worker = subprocess.Popen(
        [sys.executable, "-m", "recoverctl", "worker", "--concurrency", "1"], env=cli.env, cwd=cli.home
    )
    try:
        srv.wait_job(d["job_id"], ("succeeded",))
        # The worker's heartbeat tells /health that jobs are being run.
        wait_until(lambda: srv.client.get("/health").status_code == 200, what="/health to see the worker")
    finally:
        worker.terminate()
        assert worker.wait(30) == 0


def test_non_loopback_bind_without_auth_is_refused(cli: Any) -> None:
    cli.write_config({"policies": [NOTIFY]})
    r = cli("--json", "serve", "--host", "0.0.0.0", "--port", "1", check=2)
    assert "without authentication" in r.error_json()["message"]


def test_catalog_outage_answers_503_then_recovers(cli: Any, serve_factory: Any, pg: Any) -> None:
    pg.psql("CREATE DATABASE recoverctl")
    cli.env["RECOVERCTL_CATALOG"] = f"postgresql://postgres@127.0.0.1:{pg.port}/recoverctl"
    _config(cli, [NOTIFY])
    srv = serve_factory(cli, "--workers", "0", token=TOKEN)
    pg.stop()
    r = srv.post("/hooks/alertmanager", am_payload("pg1"))
    assert r.status_code == 503 and "catalog unavailable" in r.json()["detail"]
    assert srv.client.get("/health").status_code == 503
    pg.start()
    r = wait_until(
        lambda: (x := srv.post("/hooks/alertmanager", am_payload("pg1"))).status_code == 202 and x,
        what="serve to reach the catalog again",
    )
    assert r.json()["decisions"][0]["decision"] == "acted"
    # Nothing was half-written while the catalog was down: one decision, one job.
    assert [a.decision for a in _rows(cli, t.alerts)] == ["acted"]
    assert len(_rows(cli, t.jobs)) == 1


def test_backup_policy_runs_a_real_backup(cli: Any, serve_factory: Any) -> None:
    site = cli.home / "site"
    site.mkdir()
    (site / "index.html").write_text("hello")
    cli.env["RECOVERCTL_PASSWORD"] = "alert-backup-passphrase"
    (cli.home / "token").write_text(TOKEN + "\n")
    cli.write_config(
        {
            "repository": str(cli.home / "repo"),
            "sources": {"site": {"type": "files", "paths": [str(site)]}},
            "serve": {"auth": {"bearer_token_file": str(cli.home / "token")}, "poll_interval": "0.1s"},
            "policies": [
                {
                    "name": "backup-before-disk-dies",
                    "match": {"alertname": "DiskFailing"},
                    "action": "backup",
                    "source": "site",
                }
            ],
        }
    )
    cli("init", check=0)
    srv = serve_factory(cli, token=TOKEN)
    body = {"alertname": "DiskFailing", "labels": {"host": "web-1"}, "id": "disk-1", "started_at": STARTED}
    d = srv.post("/hooks/generic", body).json()["decisions"][0]
    assert d["decision"] == "acted", d
    job = srv.wait_job(d["job_id"], timeout=120)
    assert job["state"] == "succeeded", job
    snapshots = cli("--json", "snapshots", check=0).json()
    assert len(snapshots) == 1


def test_health_reports_an_unreachable_repository(cli: Any, serve_factory: Any) -> None:
    _config(cli, [NOTIFY])
    cfg = yaml.safe_load(cli.config_path.read_text())
    cfg["repository"] = str(cli.home / "repo")
    cli.write_config(cfg)
    srv = serve_factory(cli, token=TOKEN)
    healthy = srv.client.get("/health")
    assert healthy.status_code == 200, healthy.text
    assert healthy.json()["checks"]["repository"]["ok"] is True
    assert healthy.json()["version"]
    srv.stop()
    cfg["repository"] = "sftp://nobody@127.0.0.1:1/nowhere"
    cli.write_config(cfg)
    srv = serve_factory(cli, token=TOKEN)
    sick = srv.client.get("/health")
    assert sick.status_code == 503
    assert sick.json()["checks"]["repository"]["ok"] is False
    assert sick.json()["checks"]["catalog"]["ok"] is True
