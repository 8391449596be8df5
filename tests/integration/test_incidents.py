"""Incidents on a real catalog with a real HTTP receiver standing in for Slack: failures open them,
escalation goes out once per level and repeat (also with several runners and across a kill -9),
acknowledging stops it, acknowledgement links work through `recoverctl serve`."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import yaml

from recoverctl.catalog import Catalog, incident_alerts, incident_escalations, incidents
from recoverctl.catalog import tables as t
from recoverctl.config import parse_config
from recoverctl.incidents.escalation import tick
from recoverctl.notify.delivery import deliver_pending
from tests.fixtures.http_receiver import HttpReceiver
from tests.fixtures.net import wait_until
from tests.fixtures.postgres import PgCluster

ACK_SECRET = "incident-ack-secret-0123456789abcdef"


def _config(
    rx: HttpReceiver, *, level2_after: str = "2s", repeat: str = "2s", **extra: Any
) -> dict[str, Any]:
    """The issue's `escalation:` example, with level 2 going to a second Slack receiver path."""
    return {
        "notifications": {
            "channels": {
                "slack-alerts": {"type": "slack", "webhook_url": rx.url("/level1")},
                "slack-oncall": {"type": "slack", "webhook_url": rx.url("/level2")},
            },
            "routes": {"critical": ["slack-alerts"]},
        },
        "escalation": [
            {"level": 1, "after": "0s", "routes": ["slack-alerts"]},
            {"level": 2, "after": level2_after, "routes": ["slack-oncall"], "repeat": repeat},
        ],
        "incidents": {"ack_secret": ACK_SECRET, "claim_lease": "3s"},
        **extra,
    }


@pytest.fixture
def catalog(tmp_path: Path) -> Iterator[Catalog]:
    c = Catalog(f"sqlite:///{tmp_path / 'catalog.db'}")
    yield c
    c.close()


def _sent(catalog: Catalog) -> list[tuple[int, int, int, str]]:
    with catalog.begin() as conn:
        rows = conn.execute(sa.select(t.incident_escalations).order_by(t.incident_escalations.c.id)).all()
    return [(r.incident_id, r.level, r.repeat, r.state) for r in rows]


def test_failed_drill_opens_an_incident_and_escalates_once_per_level_until_acknowledged(
    catalog: Catalog, http_receiver: HttpReceiver
) -> None:
    rx = http_receiver
    cfg = parse_config(_config(rx))
    catalog.emit_event("drill.failed", "critical", "db", "restore drill 'nightly' of 'db' failed: RTO missed")
    catalog.emit_event("backup.started", "info", "db", "a later event about db joins the open incident")
    (inc,) = incidents.list_incidents(catalog)
    assert (inc.state, inc.kind, inc.subject, inc.severity) == ("open", "drill.failed", "db", "critical")

    t0 = inc.opened_at
    assert tick(cfg, catalog, "runner-a", now=t0 + 0.1).sent == [(inc.id, 1, 0)]
    assert tick(cfg, catalog, "runner-b", now=t0 + 0.2).sent == []  # level 1 once, whoever runs
    (level1,) = rx.wait_for("/level1", 1)
    assert "incident #1 escalated to level 1" in level1.json()["text"]
    link = re.search(r"<(http://[^>]+/incidents/1/ack\?token=[^>]+)>", yaml.safe_dump(level1.json()))
    assert link is not None

    assert tick(cfg, catalog, "runner-b", now=t0 + 2.5).sent == [(inc.id, 2, 0)]
    assert tick(cfg, catalog, "runner-a", now=t0 + 3.0).sent == []
    # Repeats every 2 s; missed repeats collapse into the newest one.
    assert tick(cfg, catalog, "runner-a", now=t0 + 8.5).sent == [(inc.id, 2, 3)]
    assert len(rx.at("/level2")) == 2

    incidents.acknowledge(catalog, inc.id, "alice")
    assert tick(cfg, catalog, "runner-a", now=t0 + 3600).sent == []
    assert len(rx.at("/level1")) == 1 and len(rx.at("/level2")) == 2
    kinds = [e.kind for e in incidents.timeline(catalog, inc.id)]
    assert kinds[:2] == ["drill.failed", "backup.started"]
    assert kinds.count("escalation") == 3 and kinds.count("notification") == 3
    assert kinds[-1] == "acknowledged"
    assert incidents.get_incident(catalog, inc.id).escalation_level == 2


def test_a_claim_whose_runner_died_is_sent_once_by_another_runner(
    catalog: Catalog, http_receiver: HttpReceiver
) -> None:
    cfg = parse_config(_config(http_receiver))
    catalog.emit_event("rollback.failed", "critical", "web", "rollback of web failed at step verify")
    (inc,) = incidents.list_incidents(catalog)
    # A runner claimed level 1 and was killed before sending: its claim's lease runs out.
    claim = incident_escalations.claim_escalation(catalog, inc.id, 1, 0, inc.opened_at, "dead-runner", 0.01)
    assert claim is not None
    taken = wait_until(lambda: tick(cfg, catalog, "runner-a", now=inc.opened_at + 0.5).sent, what="takeover")
    assert taken == [(inc.id, 1, 0)]
    assert _sent(catalog) == [(inc.id, 1, 0, "sent")]
    assert len(http_receiver.wait_for("/level1", 1)) == 1
    assert tick(cfg, catalog, "runner-b", now=inc.opened_at + 0.5).sent == []


def test_stale_rpo_source_opens_an_incident_and_resolves_once_back_under_target(
    catalog: Catalog, http_receiver: HttpReceiver
) -> None:
    cfg = parse_config(_config(http_receiver, sources={"db": {"type": "postgres", "tier": "critical"}}))
    run = catalog.start_run("backup", source="db")
    catalog.finish_run(run, "succeeded")
    with catalog.begin() as conn:  # the only backup is two hours old: past the 1 h critical RPO
        conn.execute(t.runs.update().values(started_at=time.time() - 7300, finished_at=time.time() - 7200))
    report = tick(cfg, catalog, "runner-a")
    (inc,) = incidents.list_incidents(catalog)
    assert report.opened == [inc.id]
    assert (inc.kind, inc.subject, inc.severity, inc.state) == ("rpo.exceeded", "db", "critical", "open")
    assert report.sent == [(inc.id, 1, 0)]  # critical route
    assert tick(cfg, catalog, "runner-b").opened == []  # the open incident is not opened again

    fresh = catalog.start_run("backup", source="db")
    catalog.finish_run(fresh, "succeeded")
    assert tick(cfg, catalog, "runner-a").resolved == [inc.id]
    assert incidents.get_incident(catalog, inc.id).state == "resolved"


def _escalations(rx: HttpReceiver, path: str) -> list[str]:
    texts = [r.json()["text"] for r in rx.at(path)]
    return [x for x in texts if "escalated to level" in x]


def _worker(cli: Any, catalog_url: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "recoverctl", "worker"],
        env={**cli.env, "RECOVERCTL_CATALOG": catalog_url},
        cwd=cli.home,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def test_two_workers_on_postgresql_send_each_escalation_once_and_a_kill_loses_none(
    cli: Any, pg: PgCluster, http_receiver: HttpReceiver
) -> None:
    rx = http_receiver
    pg.psql("create database recoverctl")
    url = pg.url("recoverctl")
    cli.write_config(_config(rx, level2_after="5s", repeat="2s"))
    catalog = Catalog(url)
    workers = [_worker(cli, url), _worker(cli, url)]
    try:
        catalog.emit_event("drill.failed", "critical", "db", "restore drill 'nightly' of 'db' failed")
        wait_until(lambda: _escalations(rx, "/level1"), what="level 1")
        # On a loaded machine level 2 may already be claimed when level 1's record is first seen:
        # only the first step is waited for, the kill below must lose nothing either way.
        wait_until(lambda: _sent(catalog)[:1] == [(1, 1, 0, "sent")], what="level 1 recorded as sent")
        # kill -9 one worker mid-escalation (level 1 sent, level 2 usually not yet due)
        workers[0].kill()
        workers[0].wait()
        rx.wait_for("/level2", 2, timeout=30)  # level 2 and its first repeat, from the survivor
        workers.append(_worker(cli, url))  # a restarted worker joins
        rx.wait_for("/level2", 3, timeout=30)
        cli("incidents", "ack", "1", "--by", "alice", check=0, env={"RECOVERCTL_CATALOG": url})
        sent = wait_until(
            lambda: (s := _sent(catalog)) and all(x[3] == "sent" for x in s) and s, what="claims settled"
        )
    finally:
        for w in workers:
            w.kill()
            w.wait()
        catalog.close()
    steps = [(level, repeat) for _, level, repeat, _ in sent]
    assert len(steps) == len(set(steps))
    assert steps[0] == (1, 0) and steps[1] == (2, 0)
    # Each recorded step reached the receiver exactly once: nothing lost, nothing twice.
    # (the drill.failed event itself also goes to its critical route, slack-alerts, once)
    assert len(_escalations(rx, "/level1")) == 1
    texts = _escalations(rx, "/level2")
    assert len(texts) == len(steps) - 1
    assert len(set(texts)) == len(texts)


def test_acknowledgement_link_confirms_on_get_and_acknowledges_on_post(
    cli: Any, serve_factory: Any, http_receiver: HttpReceiver
) -> None:
    # Level 2 waits an hour: nothing escalates while the test acknowledges.
    cli.write_config(_config(http_receiver, level2_after="1h"))
    catalog = Catalog(cli.env["RECOVERCTL_CATALOG"])
    try:
        catalog.emit_event("drill.failed", "critical", "db", "restore drill 'nightly' of 'db' failed")
        srv = serve_factory(cli)
        (level1,) = http_receiver.wait_for("/level1", 1, timeout=30)
        link = re.search(r"<(http://[^>]+)>", yaml.safe_dump(level1.json()))
        assert link is not None
        # The sender records the delivery after the receiver answered: wait for that record, so
        # the acknowledgement below is the incident's last step.
        wait_until(
            lambda: any(e.kind == "notification" for e in incidents.timeline(catalog, 1)),
            timeout=30,
            what="the level-1 delivery to be recorded on the incident",
        )
        path = "/" + link.group(1).split("/", 3)[3]
        page = srv.client.get(path)
        assert page.status_code == 200 and "Acknowledge" in page.text
        assert incidents.get_incident(catalog, 1).state == "open"  # a GET changes nothing
        token = path.split("token=", 1)[1]
        forged = srv.client.post("/incidents/1/ack", content=f"token={token[:-2]}xx&by=eve")
        assert forged.status_code == 403
        done = srv.client.post(
            "/incidents/1/ack",
            content=f"token={token}&by=bob",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert done.status_code == 200 and "acknowledged by bob" in done.text
        inc = incidents.get_incident(catalog, 1)
        assert (inc.state, inc.acknowledged_by) == ("acknowledged", "bob")
        shown = cli("incidents", "show", "1", "--json", check=0).json()
        assert shown["state"] == "acknowledged" and shown["timeline"][-1]["kind"] == "acknowledged"
        assert {"at", "kind", "summary"} <= set(shown["timeline"][0])
        assert httpx.get(f"{srv.url}/incidents/1/ack?token=bad").status_code == 403
    finally:
        catalog.close()


@pytest.mark.parametrize(
    ("kind", "severity", "opens"),
    [
        ("job.failed", "warning", True),  # a scheduled backup (any scheduled job) failed
        ("wal.archive_failed", "warning", True),
        ("rollback.failed", "critical", True),
        ("verify.failed", "critical", True),
        ("job.rollback.abandoned", "critical", True),
        ("deploy.failed", "warning", False),
        ("deploy.succeeded", "info", False),
    ],
)
def test_which_events_open_an_incident(catalog: Catalog, kind: str, severity: str, opens: bool) -> None:
    catalog.emit_event(kind, severity, "subject", f"{kind} happened")
    assert len(incidents.list_incidents(catalog)) == (1 if opens else 0)


def _alert(
    alert_id: int, status: str, decision: str, *, fingerprint: str = "fp1"
) -> incident_alerts.AlertNote:
    return incident_alerts.AlertNote(
        alert_id=alert_id,
        at=time.time(),
        source="alertmanager",
        alertname="HighErrorRate",
        service="web",
        fingerprint=fingerprint,
        group_key='{}:{alertname="HighErrorRate"}',
        status=status,
        policy="rollback-on-errors",
        decision=decision,
        reason="because",
        job_id=None,
        escalated=False,
        severity="critical",
        values={"error_rate": 0.12},
        summary="5xx at 12 %",
    )


def test_alerts_open_join_resolve_and_reopen_their_incident(catalog: Catalog) -> None:
    with catalog.begin() as conn:
        first = incident_alerts.record_alerts_in(conn, [_alert(1, "firing", "acted")])
        repeats = incident_alerts.record_alerts_in(
            conn, [_alert(2, "firing", "deduplicated"), _alert(3, "firing", "suppressed", fingerprint="fp2")]
        )
    assert first == [1] and repeats == [None, 1]  # a repeat is left out, another alert joins
    (entry, decision, other, *_) = incidents.recorded_entries(catalog, 1)
    assert entry.kind == "alert.firing" and "measured error_rate=0.12" in entry.summary
    assert decision.kind == "decision" and other.details["fingerprint"] == "fp2"

    with catalog.begin() as conn:
        incident_alerts.record_alerts_in(conn, [_alert(4, "resolved", "ignored")])
    assert [p.firing for p in incidents.progress_of_active(catalog)] == [["fp2"]]
    with catalog.begin() as conn:
        incident_alerts.record_alerts_in(conn, [_alert(5, "resolved", "ignored", fingerprint="fp2")])
    (progress,) = incidents.progress_of_active(catalog)
    assert progress.healthy
    incidents.resolve(catalog, 1, "recoverctl", "alerts resolved", automatic=True)

    with catalog.begin() as conn:  # the group fires again soon after: the incident reopens
        assert incident_alerts.record_alerts_in(conn, [_alert(6, "firing", "acted")]) == [1]
    assert incidents.get_incident(catalog, 1).state == "reopened"
    assert len(incidents.list_incidents(catalog)) == 1


def test_resolve_by_hand_needs_a_note_and_happens_once(cli: Any) -> None:
    catalog = Catalog(cli.env["RECOVERCTL_CATALOG"])
    try:
        catalog.emit_event("drill.failed", "critical", "db", "restore drill 'nightly' of 'db' failed")
    finally:
        catalog.close()
    assert cli("incidents", "resolve", "1", check=2).code == 2  # --note is required
    done = cli(
        "--json", "incidents", "resolve", "1", "--note", "restored from yesterday", "--by", "carol", check=0
    )
    assert done.json()["state"] == "resolved" and done.json()["resolution"] == "restored from yesterday"
    assert cli("incidents", "resolve", "1", "--note", "again", check=1).code == 1
    assert cli("incidents", "show", "99", check=10).code == 10
    listed = cli("incidents", "--json", check=0).json()
    assert [(i["id"], i["state"], i["source"], i["resolved_by"]) for i in listed] == [
        (1, "resolved", "db", "carol")
    ]
    assert "resolved by carol: restored from yesterday" in cli("incidents", "show", "1", check=0).stdout


def test_a_real_failed_drill_opens_an_incident_paged_on_the_critical_route(
    cli: Any, tmp_path: Path, http_receiver: HttpReceiver
) -> None:
    from recoverctl.repo import Repository
    from recoverctl.storage.local import LocalStorage
    from tests.inproc_cli import InProcessCli

    icli = InProcessCli(cli)
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("hello drill\n" * 100)
    config = {
        "repository": {"url": str(tmp_path / "repo")},
        "sources": {"docs": {"type": "files", "paths": [str(src)], "tier": "critical"}},
        "notifications": {
            "channels": {"slack-alerts": {"type": "slack", "webhook_url": http_receiver.url("/alerts")}},
            "routes": {"critical": ["slack-alerts"]},
        },
    }
    icli.write_config(config)
    icli.env["RECOVERCTL_PASSWORD"] = "pw"
    Repository.init(LocalStorage(tmp_path / "repo"), "pw", kdf={"name": "scrypt", "n": 2**10, "r": 8, "p": 1})
    icli("backup", "files", str(src), "--source", "docs", check=0)
    playbook = tmp_path / "tight.yaml"
    drill = {
        "name": "docs-tight",
        "source": "docs",
        "targets": {"rpo": "0s"},
        "where": {"temp_dir": str(tmp_path)},
    }
    playbook.write_text(yaml.safe_dump({"drill": drill}))
    assert icli("drill", "run", str(playbook), "--json", check=13).json()["verdict"] == "fail"

    (listed,) = icli("incidents", "--json", check=0).json()
    assert (listed["kind"], listed["source"], listed["severity"], listed["state"]) == (
        "drill.failed",
        "docs",
        "critical",
        "open",
    )
    catalog = Catalog(cli.env["RECOVERCTL_CATALOG"])
    try:
        # No escalation: section: the runbook's level 1 goes to the critical route at once.
        assert tick(parse_config(config), catalog, "runner-a").sent == [(listed["id"], 1, 0)]
    finally:
        catalog.close()
    # The drill.failed event reached #alerts when the command exited: level 1 does not say it again.
    (first,) = http_receiver.at("/alerts")
    assert "docs" in first.json()["text"] and _escalations(http_receiver, "/alerts") == []
    report = icli("incidents", "report", str(listed["id"]), "--format", "md", check=0).stdout
    assert "drill 'docs-tight' of docs missed its targets" in report and "drill measured RPO" in report


def test_html_report_escapes_what_alerts_and_events_said(catalog: Catalog) -> None:
    from recoverctl.actions.incidents import draft_report

    catalog.emit_event("drill.failed", "critical", "db", "drill failed: <script>alert(1)</script>")
    html = draft_report(catalog, 1, "html", None).text
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    md = draft_report(catalog, 1, "md", None).text
    assert "# Incident #1 — drill failed" in md and "DRAFT" in md


def test_a_worker_killed_mid_escalation_and_restarted_sends_the_missed_level_once(
    cli: Any, http_receiver: HttpReceiver
) -> None:
    rx = http_receiver
    # Level 2 falls due 8 s after the incident opens: time enough, on a loaded machine, for the
    # worker to start and send level 1 before it is killed.
    cli.write_config(_config(rx, level2_after="8s", repeat="60s"))
    url = cli.env["RECOVERCTL_CATALOG"]
    catalog = Catalog(url)
    worker = _worker(cli, url)
    try:
        catalog.emit_event("drill.failed", "critical", "db", "restore drill 'nightly' of 'db' failed")
        wait_until(lambda: _sent(catalog) == [(1, 1, 0, "sent")], what="level 1 sent")
        worker.kill()  # kill -9 with level 2 still to come
        worker.wait()
        opened = incidents.get_incident(catalog, 1).opened_at
        wait_until(lambda: time.time() > opened + 8.5, timeout=15, what="level 2 falling due with no worker")
        assert _sent(catalog) == [(1, 1, 0, "sent")]
        worker = _worker(cli, url)  # the restarted worker catches up
        wait_until(lambda: len(_sent(catalog)) == 2 and _sent(catalog)[1][3] == "sent", what="level 2 sent")
        wait_until(lambda: _escalations(rx, "/level2"), what="level 2 delivered")
    finally:
        worker.kill()
        worker.wait()
        catalog.close()
    assert _sent(catalog) == [(1, 1, 0, "sent"), (1, 2, 0, "sent")]
    assert len(_escalations(rx, "/level1")) == 1 and len(_escalations(rx, "/level2")) == 1


def test_the_first_channel_hears_of_an_incident_once_whichever_comes_first(
    catalog: Catalog, http_receiver: HttpReceiver
) -> None:
    rx = http_receiver
    cfg = parse_config(_config(rx, level2_after="1h"))
    # Escalation first: the opening event's route delivery skips the channel level 1 reached.
    catalog.emit_event("rollback.failed", "critical", "web", "rollback of web failed at start_target")
    (web,) = incidents.list_incidents(catalog)
    assert tick(cfg, catalog, "runner-a", check_sources=False).sent == [(web.id, 1, 0)]
    assert deliver_pending(cfg, catalog).deliveries == []
    (level1,) = rx.at("/level1")
    assert "incident #1 escalated to level 1" in level1.json()["text"]
    # A later event of the incident is an update: it goes by its route.
    catalog.emit_event("rollback.failed", "critical", "web", "second rollback of web failed")
    assert [d.channel for d in deliver_pending(cfg, catalog).deliveries] == ["slack-alerts"]

    # Route delivery first: level 1 does not send the same news to the same channel again.
    catalog.emit_event("drill.failed", "critical", "db", "restore drill of db failed")
    assert [d.channel for d in deliver_pending(cfg, catalog).deliveries] == ["slack-alerts"]
    assert tick(cfg, catalog, "runner-a", check_sources=False).sent == [(2, 1, 0)]
    texts = [r.json()["text"] for r in rx.at("/level1")]
    assert len(texts) == 3 and not any("incident #2 escalated" in x for x in texts)
    # Both channels that heard of it hear that it is resolved.
    from recoverctl.incidents.escalation import announce_resolution

    (notice,) = announce_resolution(cfg, catalog, incidents.resolve(catalog, 2, "alice", "restored"))
    assert notice.channel == "slack-alerts" and "incident #2 resolved" in rx.at("/level1")[-1].json()["text"]
