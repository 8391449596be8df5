"""A rollback meets a flaky engine, host or catalog: it rides out a short outage, fails clearly after a
long one, and `--resume` then finishes it. Every fault is real: dockerd and its containerd killed and
started again, sshd stopped under a running command, the PostgreSQL catalog stopped.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from recoverctl.config import load_config
from recoverctl.deploy import open_target
from tests.conftest import Cli, CliResult
from tests.e2e.test_deploy_rollback_ssh import _artifacts, ssh_service
from tests.fixtures.docker_engine import DockerEngine, build_demo_web, start_dockerd, stop_dockerd
from tests.fixtures.net import free_port, wait_until
from tests.fixtures.postgres import PgCluster
from tests.fixtures.sshd import SshdFactory, SshServer

pytestmark = pytest.mark.e2e

STEPS_OK = ["ok", "ok", "skipped", "ok", "ok", "ok", "ok"]


def _served(port: int) -> str | None:
    try:
        r = httpx.get(f"http://127.0.0.1:{port}/version", timeout=1)
    except httpx.HTTPError:
        return None
    return r.text.strip() if r.status_code == 200 else None


def _step_state(cli: Cli, step: str) -> str | None:
    """Return the state of `step` in the newest rollback, read from the catalog as an operator would."""
    engine = sa.create_engine(cli.env["RECOVERCTL_CATALOG"])
    try:
        with engine.connect() as conn:
            return conn.execute(
                sa.text(
                    "SELECT s.state FROM rollback_steps s JOIN rollbacks r ON r.id = s.rollback_id "
                    "WHERE s.name = :step ORDER BY r.id DESC LIMIT 1"
                ),
                {"step": step},
            ).scalar()
    finally:
        engine.dispose()


@dataclass
class Running:
    """A `recoverctl rollback` running in the background, its stderr in a file to poll."""

    proc: subprocess.Popen[bytes]
    stderr_path: Path

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def finish(self, timeout: float = 180) -> CliResult:
        out, _ = self.proc.communicate(timeout=timeout)
        return CliResult(self.proc.returncode, out.decode(errors="replace"), self.stderr)


def _start_rollback(cli: Cli, service: str) -> Running:
    path = cli.home / f"rollback-{free_port()}.stderr"
    with path.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "recoverctl", "--log-json", "rollback", service, "--yes", "--json"],
            env=cli.env,
            cwd=cli.home,
            stdout=subprocess.PIPE,
            stderr=err,
        )
    return Running(proc, path)


def _retry_warnings(stderr: str) -> list[str]:
    lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    return [x["message"] for x in lines if x.get("level") == "warning" and "retrying" in x.get("message", "")]


def _error(stderr: str) -> dict[str, Any]:
    return next(json.loads(x) for x in reversed(stderr.splitlines()) if x.startswith('{"error"'))


# --- Docker engine restarted in the middle of stop_current ----------------------------------------


@pytest.fixture(scope="module")
def engine() -> Iterator[DockerEngine]:
    """A private dockerd this module may kill and restart, holding `rc-faults:v1` (healthy) and
    `rc-faults:v2`, whose httpd ignores SIGTERM so `docker stop` waits its whole stop timeout."""
    eng = start_dockerd()
    try:
        build_demo_web(eng, "v1", repository="rc-faults")
        eng.build_image(
            "rc-faults:v2",
            ["/busybox", "sh", "-c", 'exec /busybox httpd -f -p "127.0.0.1:${PORT:-18080}" -h /www'],
            files={"www/health": "ok\n", "www/version": "v2\n"},
        )
        yield eng
    finally:
        stop_dockerd(eng)


def _docker_config(cli: Cli, engine: DockerEngine, port: int, window: str, **extra: Any) -> str:
    """Configure service web on the engine (plus `extra` top-level sections), deploy v1 then v2."""
    name = f"rc-faults-{port}"
    cli.write_config(
        {
            **extra,
            "services": {
                "web": {
                    "target": "docker",
                    "docker_host": engine.base_url,
                    "image": "rc-faults",
                    "container": name,
                    "network_mode": "host",
                    "env": {"PORT": str(port)},
                    # Long enough that the engine is restarted while `docker stop` still waits.
                    "stop_timeout": "20s",
                    "retry": {"window": window, "maximum": "1s"},
                    "health": {
                        "url": f"http://127.0.0.1:{port}/health",
                        "successes": 2,
                        "interval": "0.2s",
                        "timeout": "20s",
                    },
                }
            },
        }
    )
    cli("deploy", "web", "v1", check=0)
    cli("deploy", "web", "v2", "--no-verify", check=0)
    assert _served(port) == "v2"
    return name


def test_engine_restart_during_stop_current_is_ridden_out(cli: Cli, engine: DockerEngine) -> None:
    port = free_port()
    name = _docker_config(cli, engine, port, window="90s")
    try:
        running = _start_rollback(cli, "web")
        wait_until(lambda: _step_state(cli, "stop_current") == "running", timeout=60, what="stop_current")
        began = time.monotonic()
        engine.restart()
        away = time.monotonic() - began
        r = running.finish()
        assert r.code == 0, r.stderr
        out = r.json()
        assert out["result"] == "succeeded" and out["to_version"] == "v1"
        assert [s["outcome"] for s in out["steps"]] == STEPS_OK
        print(f"\nengine away {away:.1f} s; rollback took {out['duration_s']:.1f} s")
        assert _served(port) == "v1"
        assert "Traceback" not in r.stderr
        assert any("stopping the current version" in w for w in _retry_warnings(r.stderr)), r.stderr
        # Every finished step has its end time (the timeline of the audit entry is complete).
        engine_db = sa.create_engine(cli.env["RECOVERCTL_CATALOG"])
        with engine_db.connect() as conn:
            unended = conn.execute(
                sa.text("SELECT name FROM rollback_steps WHERE state = 'done' AND finished_at IS NULL")
            ).all()
        engine_db.dispose()
        assert unended == []
    finally:
        engine.remove_containers(name)


def test_engine_down_past_the_window_fails_clearly_and_resumes(cli: Cli, engine: DockerEngine) -> None:
    port = free_port()
    name = _docker_config(cli, engine, port, window="3s")
    try:
        running = _start_rollback(cli, "web")
        wait_until(lambda: _step_state(cli, "stop_current") == "running", timeout=60, what="stop_current")
        engine.kill()
        try:
            r = running.finish()
        finally:
            engine.start()
        assert r.code == 1, r.stderr
        assert "Traceback" not in r.stderr and "unexpected failure" not in r.stderr
        err = _error(r.stderr)
        assert err["exit_code"] == 1
        message = err["message"]
        assert f"rollback of 'web' failed at step 'stop_current' on docker host {engine.base_url}" in message
        assert "unreachable" in message and "after 3 s of retries" in message
        assert "service state: unknown: v2 may still run or be stopped" in message
        assert "recoverctl rollback web --resume" in message
        assert _step_state(cli, "stop_current") == "failed"

        out = cli("rollback", "web", "--resume", "--yes", "--json", check=0).json()
        assert out["result"] == "succeeded" and (out["from_version"], out["to_version"]) == ("v2", "v1")
        assert [s["outcome"] for s in out["steps"]] == STEPS_OK
        assert _served(port) == "v1"
        releases = cli("releases", "web", "--json", check=0).json()
        assert [(x["version"], x["status"]) for x in releases] == [("v2", "rolled-back"), ("v1", "live")]
        cli("rollback", "web", "--resume", "--yes", check=10)  # nothing left to resume
    finally:
        engine.remove_containers(name)


# --- an alert-driven rollback whose engine stays down past the window ----------------------------

TOKEN = "e2e-fault-alert-token-0123456789abcdef"


def _catalog_rows(cli: Cli, table: str) -> list[Any]:
    engine_db = sa.create_engine(cli.env["RECOVERCTL_CATALOG"])
    try:
        with engine_db.connect() as conn:
            return list(conn.execute(sa.text(f"SELECT * FROM {table} ORDER BY id")).all())
    finally:
        engine_db.dispose()


def test_alert_rollback_failed_at_a_step_is_resumed_by_its_job(
    cli: Cli, engine: DockerEngine, serve_factory: Any, alertmanager_factory: Any
) -> None:
    """Alertmanager → serve → rollback job; the engine dies in stop_current and stays down past the
    window, so the step fails. The job is queued again and, once the engine is back, resumes that
    same rollback: one rollback, succeeded, v1 served; alerts meanwhile are absorbed by the job."""
    port = free_port()
    token_file = cli.home / "webhook-token"
    token_file.write_text(TOKEN + "\n")
    policy = {
        "name": "rollback-on-errors",
        "match": {"alertname": "HighErrorRate"},
        "action": "rollback",
        "service_from_label": "service",
        "cooldown": "10m",
        "max_actions": {"count": 1, "window": "1h"},
    }
    name = _docker_config(
        cli,
        engine,
        port,
        window="3s",
        serve={"auth": {"bearer_token_file": str(token_file)}},
        policies=[policy],
    )
    try:
        srv = serve_factory(cli, token=TOKEN)
        am = alertmanager_factory(f"{srv.url}/hooks/alertmanager", str(token_file))
        am.post_alert({"alertname": "HighErrorRate", "service": "web"}, annotations={"summary": "5xx"})
        wait_until(lambda: _step_state(cli, "stop_current") == "running", timeout=60, what="stop_current")
        engine.kill()
        try:
            # The step gives up after its window; the job is queued again, not failed.
            failed = wait_until(
                lambda: [r for r in _catalog_rows(cli, "rollbacks") if r.state == "failed"],
                timeout=60,
                what="the rollback to fail at stop_current",
            )
            assert _step_state(cli, "stop_current") == "failed"
            assert "unreachable" in failed[0].error and "after 3 s of retries" in failed[0].error
            job = wait_until(
                lambda: [j for j in _catalog_rows(cli, "jobs") if j.attempts >= 1 and j.state == "queued"],
                timeout=30,
                what="the job queued again",
            )[0]
            assert "failed at step 'stop_current'" in job.error
            # Another incident for the service meanwhile is absorbed by the job: no second action.
            am.post_alert({"alertname": "HighErrorRate", "service": "web", "instance": "b"})
            wait_until(
                lambda: [a for a in _catalog_rows(cli, "alerts") if json.loads(a.labels).get("instance")],
                timeout=30,
                what="the second incident's alert",
            )
        finally:
            engine.start()
        wait_until(lambda: _served(port) == "v1", timeout=120, what="v1 serving after the resumed rollback")
        jobs = wait_until(
            lambda: [j for j in _catalog_rows(cli, "jobs") if j.state in ("succeeded", "failed")],
            timeout=60,
            what="the job to finish",
        )
        assert [(j.kind, j.state) for j in jobs] == [("rollback", "succeeded")], srv.output()
        assert jobs[0].attempts >= 2
        rollbacks = _catalog_rows(cli, "rollbacks")
        assert [(r.id, r.state) for r in rollbacks] == [(failed[0].id, "succeeded")]
        steps = _catalog_rows(cli, "rollback_steps")
        assert [(s.name, s.state) for s in steps] == [
            ("lock", "done"),
            ("stop_current", "done"),
            ("schema", "skipped"),
            ("start_target", "done"),
            ("verify", "done"),
            ("notify", "done"),
            ("record", "done"),
        ]
        releases = cli("releases", "web", "--json", check=0).json()
        assert [(x["version"], x["status"]) for x in releases] == [("v2", "rolled-back"), ("v1", "live")]
        decisions = [(a.decision, a.job_id) for a in _catalog_rows(cli, "alerts")]
        assert decisions[0] == ("acted", jobs[0].id)
        assert set(decisions[1:]) == {("deduplicated", jobs[0].id)}, decisions
        assert _served(port) == "v1"
    finally:
        engine.remove_containers(name)


# --- sshd stopped while start_target runs its restart command -------------------------------------

# The restart command says it is running, then waits for the test's gate before it starts httpd.
RESTART = (
    'app="$RECOVERCTL_RELEASES_DIR/.."; touch "$app/waiting"; '
    'while [ ! -f "$app/gate" ]; do sleep 0.05; done; cd "$app"; '
    'if [ -f httpd.pid ]; then kill "$(cat httpd.pid)" 2>/dev/null; fi; '
    'for i in $(seq 40); do [ -f httpd.pid ] && kill -0 "$(cat httpd.pid)" 2>/dev/null || break; '
    "sleep 0.05; done; "
    'busybox httpd -f -p "127.0.0.1:$(cat port)" -h current/www </dev/null >/dev/null 2>&1 & '
    'echo $! > httpd.pid; echo "$RECOVERCTL_VERSION" >> restarts.log'
)


@dataclass
class Host:
    server: SshServer
    port: int

    @property
    def app(self) -> Path:
        return self.server.root / "app"


@pytest.fixture
def host(sshd_factory: SshdFactory) -> Iterator[Host]:
    server = sshd_factory()
    h = Host(server, free_port())
    h.app.mkdir()
    (h.app / "port").write_text(str(h.port))
    yield h
    pid_file = h.app / "httpd.pid"
    if pid_file.exists():
        subprocess.run(["kill", pid_file.read_text().strip()], capture_output=True)


def _ssh_config(cli: Cli, sshd_factory: SshdFactory, host: Host, tmp_path: Path, window: str) -> None:
    artifacts = _artifacts(tmp_path, "v1", "v2")
    service = ssh_service(
        sshd_factory,
        [(host.server, host.port)],
        artifacts,
        restart_command=RESTART,
        connect_timeout="2s",
        retry={"window": window, "maximum": "1s"},
    )
    cli.write_config({"services": {"api": service}})
    (host.app / "gate").touch()
    cli("deploy", "api", "v1", check=0)
    cli("deploy", "api", "v2", check=0)
    assert _served(host.port) == "v2"
    (host.app / "gate").unlink()
    (host.app / "waiting").unlink()


def _wait_in_start_target(cli: Cli, host: Host) -> None:
    wait_until(lambda: (host.app / "waiting").exists(), timeout=60, what="the restart command to run")
    assert _step_state(cli, "start_target") == "running"


def test_ssh_host_drop_within_the_window_is_ridden_out(
    cli: Cli, sshd_factory: SshdFactory, host: Host, tmp_path: Path
) -> None:
    _ssh_config(cli, sshd_factory, host, tmp_path, window="60s")
    running = _start_rollback(cli, "api")
    _wait_in_start_target(cli, host)
    host.server.stop()  # kills the session running the restart command, as a host going down would
    wait_until(lambda: _retry_warnings(running.stderr), timeout=60, what="a retry against the down host")
    host.server.start()
    (host.app / "gate").touch()
    r = running.finish()
    assert r.code == 0, r.stderr
    out = r.json()
    assert out["result"] == "succeeded" and [s["outcome"] for s in out["steps"]] == STEPS_OK
    assert _served(host.port) == "v1"
    assert (host.app / "restarts.log").read_text().split() == ["v1", "v2", "v1"]
    assert any("starting v1" in w for w in _retry_warnings(r.stderr))


def test_ssh_reads_and_retire_ride_out_a_dropped_host(
    cli: Cli, sshd_factory: SshdFactory, host: Host, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The running version and retiring old releases wait for a host that went away within the
    window, as stop and start do, instead of answering without it."""
    _ssh_config(cli, sshd_factory, host, tmp_path, window="60s")
    target = open_target("api", load_config(str(cli.config_path), env=cli.env).service("api"))
    caplog.set_level(logging.WARNING, logger="recoverctl.deploy.retry")
    calls: list[tuple[str, Callable[[], object]]] = [
        ("reading the running version", target.running_version),
        ("retiring old releases", lambda: target.retire(["v1"])),
    ]
    answers: list[object] = []
    try:
        for what, call in calls:
            host.server.stop()
            th = threading.Thread(target=lambda call=call: answers.append(call()))
            th.start()
            retried = f"{what} failed"

            def logged(m: str = retried) -> bool:
                return any(m in r.getMessage() for r in caplog.records)

            wait_until(logged, timeout=60, what=retried)
            host.server.start()
            th.join(60)
    finally:
        target.close()
    assert answers == ["v2", ["v1"]]
    assert sorted(p.name for p in (host.app / "releases").iterdir()) == ["v2"]


def test_deploy_stays_good_when_retiring_old_releases_fails(
    cli: Cli, sshd_factory: SshdFactory, host: Host, tmp_path: Path
) -> None:
    """v1 holds an immutable file, so retiring it after v2 went live fails on the host: the deploy
    still succeeds (exit 0, the failure in its timeline and log) and v1 stays for a later deploy."""
    service = ssh_service(
        sshd_factory,
        [(host.server, host.port)],
        _artifacts(tmp_path, "v1", "v2"),
        restart_command=RESTART,
        keep_releases=1,
        retry={"window": "1s", "maximum": "0.2s"},
    )
    cli.write_config({"services": {"api": service}})
    (host.app / "gate").touch()
    cli("deploy", "api", "v1", check=0)
    pinned = host.app / "releases" / "v1" / "www" / "version"
    subprocess.run(["chattr", "+i", str(pinned)], check=True)
    try:
        r = cli("deploy", "api", "v2", "--json", check=0)
    finally:
        subprocess.run(["chattr", "-i", str(pinned)], check=True)
    out = r.json()
    assert out["result"] == "succeeded" and out["retired"] == []
    retire = next(s for s in out["steps"] if s["name"] == "retire")
    assert retire["outcome"] == "failed" and "retiring old releases" in retire["error"], retire
    assert "old releases not retired" in r.stderr
    assert _served(host.port) == "v2"
    assert sorted(p.name for p in (host.app / "releases").iterdir()) == ["v1", "v2"]
    releases = cli("releases", "api", "--json", check=0).json()
    assert (releases[0]["version"], releases[0]["status"]) == ("v2", "live")


def test_ssh_host_down_past_the_window_fails_clearly_and_resumes(
    cli: Cli, sshd_factory: SshdFactory, host: Host, tmp_path: Path
) -> None:
    _ssh_config(cli, sshd_factory, host, tmp_path, window="2s")
    running = _start_rollback(cli, "api")
    _wait_in_start_target(cli, host)
    host.server.stop()
    r = running.finish()
    assert r.code == 1, r.stderr
    assert "Traceback" not in r.stderr
    message = _error(r.stderr)["message"]
    where = f"127.0.0.1:{host.server.port}"
    assert f"rollback of 'api' failed at step 'start_target' on hosts {where}" in message
    assert "after 2 s of retries" in message
    assert "service state: v2 is stopped; v1 may be started on some hosts or none" in message
    assert "recoverctl rollback api --resume" in message
    # A fresh rollback is refused, pointing at the failed one.
    r = cli("rollback", "api", "--yes", check=10)
    assert "--resume" in r.stderr

    host.server.start()
    (host.app / "gate").touch()
    out = cli("rollback", "api", "--resume", "--yes", "--json", check=0).json()
    assert out["result"] == "succeeded" and [s["outcome"] for s in out["steps"]] == STEPS_OK
    assert _served(host.port) == "v1"
    assert (host.app / "restarts.log").read_text().split() == ["v1", "v2", "v1"]


# --- the PostgreSQL catalog stopped mid-rollback -------------------------------------------------


def _catalog_stops_in_start_target(
    cli: Cli, pg_factory: Any, sshd_factory: SshdFactory, host: Host, tmp_path: Path, window: str
) -> tuple[PgCluster, Running]:
    """Roll back with a PostgreSQL catalog that is stopped while start_target runs; return both."""
    cluster: PgCluster = pg_factory()
    cli.env["RECOVERCTL_CATALOG"] = cluster.url()
    _ssh_config(cli, sshd_factory, host, tmp_path, window=window)
    running = _start_rollback(cli, "api")
    _wait_in_start_target(cli, host)
    cluster.stop()
    (host.app / "gate").touch()  # start_target now finishes and must record that in the catalog
    return cluster, running


def test_catalog_down_within_the_window_is_ridden_out(
    cli: Cli, pg_factory: Any, sshd_factory: SshdFactory, host: Host, tmp_path: Path
) -> None:
    cluster, running = _catalog_stops_in_start_target(cli, pg_factory, sshd_factory, host, tmp_path, "60s")
    wait_until(
        lambda: any("in catalog" in w for w in _retry_warnings(running.stderr)),
        timeout=60,
        what="a retry against the stopped catalog",
    )
    cluster.start()
    r = running.finish()
    assert r.code == 0, r.stderr
    out = r.json()
    assert out["result"] == "succeeded" and [s["outcome"] for s in out["steps"]] == STEPS_OK
    assert _served(host.port) == "v1"


def test_catalog_down_past_the_window_fails_clearly_and_resumes(
    cli: Cli, pg_factory: Any, sshd_factory: SshdFactory, host: Host, tmp_path: Path
) -> None:
    cluster, running = _catalog_stops_in_start_target(cli, pg_factory, sshd_factory, host, tmp_path, "2s")
    r = running.finish()
    cluster.start()
    assert r.code == 1, r.stderr
    assert "Traceback" not in r.stderr
    message = _error(r.stderr)["message"]
    assert "rollback of 'api' failed at step 'start_target' on catalog 'postgresql+psycopg://" in message
    assert "the catalog could not record this failure" in message
    assert (
        "service state: v1 is started but not verified healthy "
        "(step start_target finished, but the catalog could not record it)"
    ) in message
    assert "recoverctl rollback api --resume" in message
    assert _served(host.port) == "v1"  # the step itself had finished
    # Nothing could be recorded: the rollback is still "running" under a process that is gone.
    assert _step_state(cli, "start_target") == "running"

    out = cli("rollback", "api", "--resume", "--yes", "--json", check=0).json()
    assert out["result"] == "succeeded" and [s["outcome"] for s in out["steps"]] == STEPS_OK
    assert _served(host.port) == "v1"
    releases = cli("releases", "api", "--json", check=0).json()
    assert [(x["version"], x["status"]) for x in releases] == [("v2", "rolled-back"), ("v1", "live")]
