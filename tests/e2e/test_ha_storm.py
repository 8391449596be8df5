"""HA under an alert storm: two `serve` replicas and two workers on one PostgreSQL catalog, behind a
real clustered Alertmanager pair that delivers to both replicas.

Storm: the same firing HighErrorRate{service="web"} posted to both Alertmanagers, a few hundred
distinct alerts no policy matches through them, and a few hundred more posted straight to the
replicas (as a sender with both replicas in its list would: on a connection error it posts to the
other one). While the rollback runs, one serve and the worker holding the rollback job are killed
with SIGKILL. Then: one incident, exactly one rollback (verified: v1 serves again), resumed by the
other worker; no 5xx from the surviving replica; every alert of the storm stored under its
fingerprint, and nothing stored that was not posted.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from recoverctl.catalog import Catalog
from recoverctl.catalog import tables as t
from tests.fixtures.alertmanager import Alertmanager
from tests.fixtures.docker_engine import DockerEngine
from tests.fixtures.net import free_port, wait_until

pytestmark = pytest.mark.e2e

TOKEN = "e2e-ha-storm-token-0123456789abcdef"
AM_NOISE = 300  # distinct alerts through the Alertmanagers, in 30 groups
DIRECT_NOISE = 400  # distinct alerts posted to the replicas directly
STARTED = datetime.now(UTC) - timedelta(minutes=5)


class WorkerProcess:
    """`recoverctl worker` as a real process; `kill()` is a SIGKILL (a crash)."""

    def __init__(self, cli: Any):
        self.log = tempfile.NamedTemporaryFile(prefix="recoverctl-worker-", suffix=".log", delete=False)  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "recoverctl", "worker", "--concurrency", "2"],
            env=cli.env,
            cwd=cli.home,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()  # reaped: a rollback's owner pid must not look alive to the resumer

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        os.unlink(self.log.name)


class DirectSender:
    """Posts Alertmanager-format webhooks to two replicas, one alert each, alternating; on a
    connection error it posts the same alert to the other replica. Counts every answer per replica."""

    def __init__(self, urls: list[str]):
        self.urls = urls
        self.statuses: dict[str, Counter[int]] = {u: Counter() for u in urls}
        self.transport_errors: Counter[str] = Counter()
        self.lost: list[str] = []
        self._lock = threading.Lock()
        self._client = httpx.Client(timeout=30, headers={"Authorization": f"Bearer {TOKEN}"})

    def send(self, n: int) -> None:
        fingerprint = f"direct-{n:04d}"
        first = self.urls[n % 2]
        for url in (first, *[u for u in self.urls if u != first]):
            try:
                r = self._client.post(f"{url}/hooks/alertmanager", json=_webhook(fingerprint, n))
            except httpx.TransportError:
                with self._lock:
                    self.transport_errors[url] += 1
                continue
            with self._lock:
                self.statuses[url][r.status_code] += 1
            if r.status_code == 202:
                return
        with self._lock:
            self.lost.append(fingerprint)

    def close(self) -> None:
        self._client.close()


def _webhook(fingerprint: str, n: int) -> dict[str, Any]:
    labels = {"alertname": "DirectNoise", "instance": f"direct-{n}", "severity": "info"}
    return {
        "version": "4",
        "groupKey": f'{{}}:{{alertname="DirectNoise",instance="direct-{n}"}}',
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "recoverctl",
        "groupLabels": labels,
        "commonLabels": labels,
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": [
            {
                "status": "firing",
                "labels": labels,
                "annotations": {"summary": "noise"},
                "startsAt": STARTED.isoformat(),
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://prometheus/graph",
                "fingerprint": fingerprint,
            }
        ],
    }


def _am_noise(first: int, last: int) -> list[dict[str, Any]]:
    return [
        Alertmanager.alert(
            {"alertname": f"StormNoise{i % 30}", "instance": f"am-{i}", "severity": "info"}, starts_at=STARTED
        )
        for i in range(first, last)
    ]


def _version(port: int) -> str | None:
    try:
        r = httpx.get(f"http://127.0.0.1:{port}/version", timeout=1)
    except httpx.HTTPError:
        return None
    return r.text.strip() if r.status_code == 200 else None


def _rows(catalog: Catalog, table: sa.Table) -> list[Any]:
    with catalog.begin() as conn:
        return list(conn.execute(sa.select(table).order_by(table.c.id)).all())


def _unavailable(metrics: str) -> float:
    """Sum of the replica's webhook requests answered 503 (catalog unavailable)."""
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("recoverctl_webhook_requests_total") and 'outcome="unavailable"' in line
    )


@pytest.fixture
def web(docker_engine: DockerEngine, demo_web_images: dict[str, str]) -> Iterator[tuple[int, str]]:
    port = free_port()
    name = f"rc-ha-web-{port}"
    yield port, name
    docker_engine.remove_containers(name)


@pytest.fixture
def workers() -> Iterator[list[WorkerProcess]]:
    made: list[WorkerProcess] = []
    yield made
    for w in made:
        w.stop()


def _configure(cli: Any, pg: Any, docker_engine: DockerEngine, port: int, container: str) -> Path:
    """Point `cli` at a fresh PostgreSQL catalog and the Docker engine, write the config, deploy
    web v1 then the broken v2; return the webhook token file."""
    pg.psql("CREATE DATABASE recoverctl")
    cli.env["RECOVERCTL_CATALOG"] = pg.url("recoverctl")
    cli.env["DOCKER_HOST"] = docker_engine.base_url
    token_file: Path = cli.home / "webhook-token"
    token_file.write_text(TOKEN + "\n")
    # The rollback verifies for a few seconds (10 healthy answers 0.3 s apart): long enough to
    # find it running and kill its worker. A short lease makes the other worker take it over soon.
    cli.write_config(
        f"""
serve:
  workers: 0
  lease: 4s
  poll_interval: 0.1s
  auth:
    bearer_token_file: {token_file}
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
      successes: 10
      interval: 0.3s
      timeout: 30s
"""
    )
    cli("deploy", "web", "v1", check=0)
    cli("deploy", "web", "v2", "--no-verify", check=0)
    assert _version(port) is None  # v2 answers every request with 500
    return token_file


def _assert_one_rollback_resumed_by(catalog: Catalog, port: int, other: WorkerProcess) -> Any:
    """One rollback job, succeeded on its second attempt in `other`, one rollback row; return the job."""
    wait_until(lambda: _version(port) == "v1", timeout=120, what="v1 serving again after the rollback")
    finished = wait_until(
        lambda: [j for j in _rows(catalog, t.jobs) if j.state not in ("queued", "running")] or None,
        timeout=60,
        what="the rollback job to finish",
    )
    assert [(j.kind, j.state, j.payload["target"]) for j in finished] == [("rollback", "succeeded", "web")]
    (job,) = finished
    assert job.attempts == 2 and job.payload.get("resume") is True, job
    assert job.lease_owner.endswith(f":{other.proc.pid}"), job.lease_owner
    assert job.result["from_version"] == "v2" and job.result["to_version"] == "v1"
    (rollback,) = _rows(catalog, t.rollbacks)
    assert (rollback.service, rollback.state) == ("web", "succeeded")
    assert rollback.actor == "alertmanager:rollback-on-errors"
    assert rollback.owner.endswith(f":{other.proc.pid}")
    return job


def _assert_every_alert_stored(catalog: Catalog, sender: DirectSender, job_id: int) -> None:
    """Every alert of the storm is in the catalog under one fingerprint, nothing else is; the
    firing alert acted once."""

    def stored() -> list[Any]:
        rows = [a for a in _rows(catalog, t.alerts) if a.decision != "rejected"]
        instances = {a.labels.get("instance") for a in rows if a.alertname.startswith("StormNoise")}
        return rows if len(instances) == AM_NOISE else []

    rows = wait_until(stored, timeout=120, what="every Alertmanager alert in the catalog")
    assert not sender.lost
    direct = [a for a in rows if a.alertname == "DirectNoise"]
    assert {a.fingerprint for a in direct} == {f"direct-{n:04d}" for n in range(DIRECT_NOISE)}
    am_rows = [a for a in rows if a.alertname.startswith("StormNoise")]
    by_instance: dict[str, set[str]] = {}
    for a in am_rows:
        by_instance.setdefault(a.labels["instance"], set()).add(a.fingerprint)
    assert sorted(by_instance) == sorted(f"am-{i}" for i in range(AM_NOISE))
    assert all(len(fps) == 1 for fps in by_instance.values())  # one alert each, however often delivered
    assert {a.decision for a in direct + am_rows} == {"ignored"}
    names = {"HighErrorRate", "DirectNoise"} | {f"StormNoise{i}" for i in range(30)}
    assert {a.alertname for a in rows} == names

    # Exactly one action: the HighErrorRate deliveries (2 Alertmanagers x 2 replicas, plus
    # retries) all carry one fingerprint; the first acted, every other one was deduplicated.
    high = [a for a in rows if a.alertname == "HighErrorRate"]
    assert len({a.fingerprint for a in high}) == 1
    assert [a.decision for a in high if a.decision != "deduplicated"] == ["acted"]
    assert {a.job_id for a in high} == {job_id}


@pytest.fixture
def ha_catalog(pg: Any) -> Iterator[Catalog]:
    """A handle on the test's `recoverctl` database (created by `_configure`), closed at teardown."""
    catalog = Catalog(pg.url("recoverctl"), migrate=False)
    yield catalog
    catalog.close()


def test_ha_pair_survives_a_storm_and_a_crash_with_one_rollback(
    cli: Any,
    pg: Any,
    docker_engine: DockerEngine,
    web: tuple[int, str],
    serve_factory: Any,
    alertmanager_pair: Any,
    workers: list[WorkerProcess],
    ha_catalog: Catalog,
) -> None:
    port, container = web
    token_file = _configure(cli, pg, docker_engine, port, container)
    doomed = serve_factory(cli, token=TOKEN)
    survivor = serve_factory(cli, token=TOKEN)
    workers.extend([WorkerProcess(cli), WorkerProcess(cli)])
    am1, am2 = alertmanager_pair(
        [f"{doomed.url}/hooks/alertmanager", f"{survivor.url}/hooks/alertmanager"], str(token_file)
    )
    sender = DirectSender([doomed.url, survivor.url])
    killed = threading.Event()

    def direct_storm() -> None:
        # Half before the crash, half after it: the sender meets the dead replica either way.
        with ThreadPoolExecutor(10) as pool:
            list(pool.map(sender.send, range(DIRECT_NOISE // 2)))
            killed.wait(180)
            list(pool.map(sender.send, range(DIRECT_NOISE // 2, DIRECT_NOISE)))

    def rollback_running() -> Any:
        jobs = [j for j in _rows(ha_catalog, t.jobs) if j.kind == "rollback"]
        return jobs[0] if jobs and jobs[0].state == "running" and jobs[0].lease_owner else None

    storm = threading.Thread(target=direct_storm, name="direct-storm")
    try:
        storm.start()
        firing = Alertmanager.alert(
            {"alertname": "HighErrorRate", "service": "web", "severity": "critical"},
            {"summary": "5xx at 12 %"},
            starts_at=STARTED,
        )
        for am in (am1, am2):  # Prometheus sends the same alert (same startsAt) to every replica
            am.post_alerts([firing, *_am_noise(0, AM_NOISE // 2)])
        job = wait_until(rollback_running, timeout=60, interval=0.02, what="the rollback job to run")
        (holder,) = [w for w in workers if job.lease_owner.endswith(f":{w.proc.pid}")]
        doomed.kill()
        holder.kill()
    finally:
        killed.set()
    for am in (am1, am2):
        am.post_alerts(_am_noise(AM_NOISE // 2, AM_NOISE))
    storm.join(300)
    assert not storm.is_alive()
    sender.close()

    (other,) = [w for w in workers if w is not holder]
    job = _assert_one_rollback_resumed_by(ha_catalog, port, other)
    _assert_every_alert_stored(ha_catalog, sender, job.id)
    incidents = _rows(ha_catalog, t.incidents)
    assert [(i.subject, i.kind) for i in incidents] == [("web", "alert")], incidents

    # No 5xx from the surviving replica: neither to the direct posts nor to the Alertmanagers.
    assert set(sender.statuses[survivor.url]) == {202}, sender.statuses
    assert sum(sender.statuses[survivor.url].values()) >= DIRECT_NOISE // 2
    assert sender.transport_errors[survivor.url] == 0
    assert _unavailable(survivor.client.get("/metrics").text) == 0
    assert survivor.client.get("/health/live").status_code == 200
