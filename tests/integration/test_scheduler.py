"""The scheduler against real catalogs: runners as processes, jobs as real recoverctl commands."""

from __future__ import annotations

import itertools
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml

from recoverctl import cron
from recoverctl.actions.schedules import install
from recoverctl.catalog import Catalog
from recoverctl.catalog import tables as t
from recoverctl.config import load_config, parse_config
from recoverctl.scheduler.defaults import DEFAULT_SCHEDULE_YAML
from tests.conftest import Cli
from tests.fixtures.http_receiver import HttpReceiver, Reply
from tests.fixtures.net import wait_until
from tests.fixtures.postgres import PgCluster


class Runners:
    """`recoverctl scheduler run` processes sharing the test's config and catalog."""

    def __init__(self, cli: Cli):
        self.cli = cli
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, *extra: str, lease: str = "3s") -> subprocess.Popen[bytes]:
        log = open(self.cli.home / f"runner-{len(self.procs)}.log", "wb")  # noqa: SIM115
        p = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "recoverctl",
                "-v",
                "scheduler",
                "run",
                "--poll",
                "0.2s",
                "--lease",
                lease,
                *extra,
            ],
            env=self.cli.env,
            cwd=self.cli.home,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.procs.append(p)
        return p

    def stop(self, p: subprocess.Popen[bytes], timeout: float = 60) -> int:
        p.send_signal(signal.SIGTERM)
        return p.wait(timeout)

    def logs(self) -> str:
        return "\n".join(p.read_text() for p in sorted(self.cli.home.glob("runner-*.log")))

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()


@pytest.fixture
def runners(cli: Cli) -> Iterator[Runners]:
    r = Runners(cli)
    yield r
    r.close()


def rows(catalog: Catalog, schedule: str | None = None) -> list[Any]:
    q = sa.select(t.jobs).where(t.jobs.c.kind == "schedule").order_by(t.jobs.c.due_at)
    if schedule:
        q = q.where(t.jobs.c.schedule == schedule)
    with catalog.begin() as conn:
        return list(conn.execute(q).all())


def _hook_config(rx: HttpReceiver, path: str, schedules: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "notifications": {"channels": {"hook": {"type": "webhook", "url": rx.url(path)}}},
        "schedules": schedules,
    }


TICK_JOB = "notify test --channel hook --severity info"


def _exactly_once(cli: Cli, runners: Runners, rx: HttpReceiver, catalog: Catalog) -> None:
    cli.write_config(
        _hook_config(
            rx, "/tick", [{"name": "tick", "cron": "* * * * * *", "job": TICK_JOB, "timeout": "60s"}]
        )
    )
    a, b = runners.start(), runners.start()
    wait_until(lambda: len(rows(catalog, "tick")) >= 21, timeout=120, what="21 ticks")
    assert runners.stop(a) == 0 and runners.stop(b) == 0, runners.logs()

    recorded = rows(catalog, "tick")
    dues = [r.due_at for r in recorded]
    assert len(dues) == len(set(dues)) >= 21
    assert all(d == int(d) for d in dues), "occurrences fall on whole seconds"
    assert {r.state for r in recorded} <= {"succeeded", "skipped"}, [(r.state, r.result) for r in recorded]
    ran = [r for r in recorded if r.state == "succeeded"]
    # Every executed occurrence made exactly one request: nothing ran twice, nothing ran unrecorded.
    # (How many ran depends on how long a job takes here: the rest were skipped as overlapping.)
    assert len(ran) >= 1 and len(rx.at("/tick")) == len(ran)
    # Overlap policy: runs never overlap in time, whichever runner had them.
    spans = sorted((r.started_at, r.finished_at) for r in ran)
    assert all(prev[1] <= nxt[0] + 0.05 for prev, nxt in itertools.pairwise(spans))
    for r in recorded:
        if r.state == "skipped":
            assert r.result["reason"] == "overlap"
    assert len({r.lease_owner for r in recorded}) == 2, "both runners claimed occurrences"
    with catalog.begin() as conn:
        beats = conn.execute(sa.select(t.heartbeats).where(t.heartbeats.c.role == "scheduler")).all()
    assert len(beats) == 2 and {b.details["state"] for b in beats} == {"stopped"}


def test_two_runners_on_sqlite_run_each_occurrence_once(
    cli: Cli, runners: Runners, http_receiver: HttpReceiver
) -> None:
    catalog = Catalog(cli.env["RECOVERCTL_CATALOG"])
    _exactly_once(cli, runners, http_receiver, catalog)
    catalog.close()


def test_two_runners_on_postgresql_run_each_occurrence_once(
    cli: Cli, runners: Runners, http_receiver: HttpReceiver, pg: PgCluster
) -> None:
    pg.psql("create database recoverctl")
    cli.env["RECOVERCTL_CATALOG"] = pg.url("recoverctl")
    catalog = Catalog(pg.url("recoverctl"))
    _exactly_once(cli, runners, http_receiver, catalog)
    catalog.close()


def test_missed_runs_are_caught_up_once_or_skipped(cli: Cli, runners: Runners) -> None:
    every20 = "* * * * * */20"
    cli.write_config(
        {
            "schedules": [
                {"name": "once", "cron": every20, "job": "config check", "catch_up": "once"},
                {"name": "skip", "cron": every20, "job": "config check", "catch_up": "skip"},
            ]
        }
    )
    catalog = Catalog(cli.env["RECOVERCTL_CATALOG"])
    # Start well past the grace period of the latest occurrence (20s / 4), with time to boot
    # before the next one, so that occurrence is unambiguously missed.
    wait_until(
        lambda: 5.5 <= time.time() - cron.previous(every20, "UTC", time.time()) <= 8,
        timeout=30,
        interval=0.05,
        what="a quiet moment",
    )
    latest = cron.previous(every20, "UTC", time.time())
    last_run = latest - 60  # a runner went down after this occurrence; three were missed since
    with catalog.begin() as conn:
        for name in ("once", "skip"):
            conn.execute(
                t.jobs.insert().values(
                    kind="schedule",
                    payload={},
                    attempts=1,
                    max_attempts=1,
                    created_at=last_run,
                    schedule=name,
                    due_at=last_run,
                    state="succeeded",
                    lease_owner="gone",
                    started_at=last_run,
                )
            )
    p = runners.start()

    def settled() -> bool:
        once = [r for r in rows(catalog, "once") if r.due_at > last_run]
        skip = [r for r in rows(catalog, "skip") if r.due_at > last_run]
        return bool(once and once[0].state != "running" and skip and skip[0].state != "running")

    wait_until(settled, timeout=60, what="the restarted runner to handle the missed occurrences")
    assert runners.stop(p) == 0, runners.logs()
    with catalog.begin() as conn:
        (beat,) = conn.execute(sa.select(t.heartbeats)).all()
    # Normally the runner boots before the next occurrence; on a very loaded machine it may boot
    # later, or so soon after an occurrence that it counts as on time (within 20s / 4).
    since = beat.details["since"]
    newest = cron.previous(every20, "UTC", since)
    on_time = since - newest <= 5

    once = [(r.due_at, r.state) for r in rows(catalog, "once") if last_run < r.due_at <= newest]
    assert once == [(newest, "succeeded")], "the missed runs are caught up exactly once"
    skip = [r for r in rows(catalog, "skip") if last_run < r.due_at <= newest]
    assert [(r.due_at, r.state) for r in skip] == [(newest, "succeeded" if on_time else "skipped")]
    if not on_time:
        assert skip[0].result["reason"].startswith("missed")
    assert latest <= newest
    catalog.close()


def _job_processes(marker: str) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "notify test" in cmd and marker in (proc / "environ").read_bytes().decode(errors="replace"):
            pids.append(int(proc.name))
    return pids


def test_killed_runner_job_is_abandoned_and_the_next_run_proceeds(
    cli: Cli, runners: Runners, http_receiver: HttpReceiver
) -> None:
    rx = http_receiver
    rx.script("/slow", Reply(200, "ok", delay=30))
    every2 = "* * * * * */2"
    cli.write_config(
        _hook_config(rx, "/slow", [{"name": "slow", "cron": every2, "job": TICK_JOB, "timeout": "60s"}])
    )
    catalog = Catalog(cli.env["RECOVERCTL_CATALOG"])
    a = runners.start(lease="2s")
    rx.wait_for("/slow", 1, timeout=60)
    (first,) = [r for r in rows(catalog, "slow") if r.state == "running"]
    a.kill()
    a.wait()
    # The job dies with its runner instead of running on unsupervised.
    wait_until(lambda: not _job_processes(str(cli.home)), timeout=10, what="the orphaned job to exit")

    b = runners.start(lease="2s")
    wait_until(
        lambda: any(r.state == "succeeded" and r.due_at > first.due_at for r in rows(catalog, "slow")),
        timeout=60,
        what="a later run to succeed",
    )
    assert runners.stop(b) == 0
    recorded = rows(catalog, "slow")
    abandoned = next(r for r in recorded if r.id == first.id)
    assert abandoned.state == "abandoned"
    assert "lease of" in abandoned.error and "expired" in abandoned.error
    # One request per executed occurrence: the abandoned one was not run a second time.
    executed = [r for r in recorded if r.state in ("succeeded", "abandoned")]
    assert len(rx.at("/slow")) == len(executed)
    with catalog.begin() as conn:
        kinds = [e.kind for e in conn.execute(sa.select(t.events.c.kind)).all()]
    assert "job.abandoned" in kinds
    catalog.close()


def test_sigterm_lets_the_running_job_finish_and_stops_claiming(
    cli: Cli, runners: Runners, http_receiver: HttpReceiver
) -> None:
    rx = http_receiver
    rx.script("/slow", Reply(200, "ok", delay=2))
    cli.write_config(
        _hook_config(
            rx, "/slow", [{"name": "slow", "cron": "* * * * * *", "job": TICK_JOB, "timeout": "60s"}]
        )
    )
    metrics = cli.home / "recoverctl.prom"
    p = runners.start("--metrics-textfile", str(metrics))
    rx.wait_for("/slow", 1, timeout=60)
    p.send_signal(signal.SIGTERM)
    stopped_at = time.time()
    assert p.wait(60) == 0, runners.logs()
    catalog = Catalog(cli.env["RECOVERCTL_CATALOG"])
    recorded = rows(catalog, "slow")
    ran = [r for r in recorded if r.state == "succeeded"]
    assert len(ran) == 1 and ran[0].finished_at >= stopped_at, "the running job finished after SIGTERM"
    assert all(r.started_at <= stopped_at for r in recorded), "nothing was claimed after SIGTERM"
    text = metrics.read_text()
    assert 'recoverctl_schedule_last_exit_code{schedule="slow"} 0.0' in text
    assert "recoverctl_scheduler_heartbeat_timestamp_seconds" in text
    catalog.close()


def test_crontab_line_run_by_a_shell_runs_the_job_once(cli: Cli, http_receiver: HttpReceiver) -> None:
    rx = http_receiver
    rx.script("/bad", Reply(400, "no_text"))
    cli.write_config(
        {
            "notifications": {
                "channels": {
                    "hook": {"type": "webhook", "url": rx.url("/hook")},
                    "bad": {"type": "slack", "webhook_url": rx.url("/bad")},
                    "good": {"type": "slack", "webhook_url": rx.url("/good")},
                },
                "routes": {"warning": ["bad", "good"]},
            },
            "schedules": [
                {"name": "hourly", "cron": "* * * * *", "job": TICK_JOB},
                {"name": "broken", "cron": "* * * * *", "job": "catalog no-such-command"},
            ],
        }
    )
    crontab = cli("scheduler", "install", "--cron", "--print", check=0).stdout
    (line,) = [ln for ln in crontab.splitlines() if ln.endswith("run-job hourly")]
    command = line.split(None, 5)[5]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(cli.home), "SHELL": "/bin/sh"}
    due = cron.previous("* * * * *", "UTC", time.time())
    r = subprocess.run(
        ["/bin/sh", "-c", command], env=env, cwd="/", capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr
    assert len(rx.at("/hook")) == 1
    catalog = Catalog(cli.env["RECOVERCTL_CATALOG"])
    (run,) = rows(catalog, "hourly")
    assert run.state == "succeeded" and run.lease_owner.startswith("run-job:")
    # The same line again within the same minute (another host, a retried timer) does not run it again.
    r = subprocess.run(["/bin/sh", "-c", command], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0
    if cron.previous("* * * * *", "UTC", time.time()) == due:
        assert len(rx.at("/hook")) == 1 and len(rows(catalog, "hourly")) == 1

    # A failing job: run-job exits with the job's code; the 400 channel is recorded, not retried.
    metrics = cli.home / "m.prom"
    failed = cli("--json", "run-job", "broken", "--now", "--metrics-textfile", str(metrics), check=2)
    assert "exited 2" in failed.error_json()["message"]
    assert len(rx.at("/bad")) == 1
    (good,) = rx.at("/good")
    assert "scheduled job 'broken'" in good.json()["text"]
    with catalog.begin() as conn:
        notes = {n.channel: n for n in conn.execute(sa.select(t.notifications)).all() if n.channel != "hook"}
    assert (notes["bad"].status, notes["bad"].attempts, notes["bad"].http_status) == ("failed", 1, 400)
    assert notes["good"].status == "sent"
    assert 'recoverctl_schedule_last_exit_code{schedule="broken"} 2.0' in metrics.read_text()

    assert cli.config_path is not None
    unit_dir = cli.home / "units"
    cfg = load_config(str(cli.config_path), env={})
    units = install(cfg, mode="systemd", user=True, print_only=False, directory=str(unit_dir), dry_run=False)
    assert units.directory == str(unit_dir) and "systemctl --user daemon-reload" in (units.next or "")
    timer = (unit_dir / "recoverctl-hourly.timer").read_text()
    assert "OnCalendar=*-*-* *:*:0 UTC" in timer
    assert "run-job hourly" in (unit_dir / "recoverctl-hourly.service").read_text()
    catalog.close()


def test_config_check_names_a_bad_schedule(cli: Cli) -> None:
    cli.write_config({"schedules": [{"name": "nightly", "cron": "0 25 * * *", "job": "catalog info"}]})
    err = cli("--json", "config", "check", check=2).error_json()
    assert "schedule 'nightly'" in err["message"] and "invalid cron expression" in err["message"]
    cli.write_config(
        {"schedules": [{"name": "nightly", "cron": "0 2 * * *", "timezone": "Nowhere/City", "job": "x"}]}
    )
    assert "schedule 'nightly': unknown time zone" in cli("config", "check", check=2).stderr
    # The runbook default printed by `scheduler init` is itself a valid config.
    default = parse_config(yaml.safe_load(DEFAULT_SCHEDULE_YAML), env={})
    assert [s.name for s in default.schedules][:2] == ["daily-full", "hourly-incremental"]


def test_scheduler_health_for_status(tmp_path: Path) -> None:
    from recoverctl.catalog import jobs, leases
    from recoverctl.scheduler.health import scheduler_health

    hourly = {"name": "hourly", "cron": "0 * * * *", "job": "catalog info"}
    cfg = parse_config({"schedules": [hourly]}, env={})
    catalog = Catalog(f"sqlite:///{tmp_path / 'c.db'}")
    now = time.time()
    h = scheduler_health(cfg, catalog, now)
    assert h.status == "amber" and "no scheduler is alive" in h.reason

    leases.heartbeat(catalog, "scheduler:h:1", "scheduler", {"state": "running"})
    h = scheduler_health(cfg, catalog, time.time())
    assert h.status == "green" and h.runners[0].name == "scheduler:h:1"

    due = cron.previous("0 * * * *", "UTC", now)
    claim = jobs.claim_occurrence(catalog, "hourly", due, "run-job:h:2", 60).claim
    assert claim is not None
    jobs.finish(catalog, claim.id, claim.runner, "failed", result={"exit_code": 1})
    h = scheduler_health(cfg, catalog, time.time())
    assert h.status == "amber" and "last run of 'hourly' failed" in h.reason
    assert h.to_json()["last_runs"]["hourly"] == {"due_at": due, "state": "failed", "runner": "run-job:h:2"}
    # Silent for too long, the heartbeat no longer counts.
    assert scheduler_health(cfg, catalog, time.time() + 3600).runners == []
    catalog.close()


def test_recovery_after_a_failure_resolves_the_incident(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from recoverctl.catalog import jobs
    from recoverctl.config import Schedule
    from recoverctl.scheduler.execute import run_claimed

    url = f"sqlite:///{tmp_path / 'c.db'}"
    for k, v in {"RECOVERCTL_CATALOG": url, "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path)}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("RECOVERCTL_CONFIG", raising=False)
    cfg = parse_config({}, env={})
    catalog = Catalog(url)
    broken = Schedule(name="nightly", cron="0 3 * * *", job="catalog no-such-command")
    fixed = broken.model_copy(update={"job": "config check"})
    for due, schedule in ((1000.0, broken), (2000.0, fixed)):
        claim = jobs.claim_occurrence(catalog, "nightly", due, "test", 30).claim
        assert claim is not None
        run_claimed(cfg, catalog, schedule, claim, lease=30)
    with catalog.begin() as conn:
        events = conn.execute(sa.select(t.events).order_by(t.events.c.id)).all()
    assert [(e.kind, e.severity) for e in events] == [("job.failed", "warning"), ("job.recovered", "warning")]
    assert events[0].dedup_key == events[1].dedup_key == "recoverctl/schedule/nightly"
    assert events[1].details["resolve"] is True and events[0].details["exit_code"] == 2
    assert [r.state for r in rows(catalog, "nightly")] == ["failed", "succeeded"]
    catalog.close()


def test_a_run_whose_lease_is_lost_is_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, http_receiver: HttpReceiver
) -> None:
    import threading

    from recoverctl.catalog import jobs
    from recoverctl.config import Schedule
    from recoverctl.scheduler.execute import JobResult, run_claimed

    http_receiver.script("/slow", Reply(200, "ok", delay=30))
    url = f"sqlite:///{tmp_path / 'c.db'}"
    monkeypatch.setenv("RECOVERCTL_CATALOG", url)
    path = tmp_path / "recoverctl.yaml"
    path.write_text(yaml.safe_dump(_hook_config(http_receiver, "/slow", [])))
    cfg = load_config(str(path), env={})
    catalog = Catalog(url)
    slow = Schedule(name="slow", cron="0 3 * * *", job=TICK_JOB)
    claim = jobs.claim_occurrence(catalog, "slow", 1000.0, "me", 0.6).claim
    assert claim is not None
    results: list[JobResult] = []
    th = threading.Thread(target=lambda: results.append(run_claimed(cfg, catalog, slow, claim, lease=0.6)))
    th.start()
    http_receiver.wait_for("/slow", 1, timeout=60)
    # Another runner decides this run is dead (as after a long stall) and takes over.
    with catalog.begin() as conn:
        conn.execute(t.jobs.update().where(t.jobs.c.kind == "schedule").values(state="abandoned"))
    th.join(20)
    assert not th.is_alive(), "the job was stopped instead of running on"
    assert results[0].state == "abandoned" and results[0].exit_code is None
    assert rows(catalog, "slow")[0].state == "abandoned"
    catalog.close()


def test_scheduler_json_keeps_its_keys(cli: Cli) -> None:
    cli.write_config({"schedules": [{"name": "daily", "cron": "0 3 * * *", "job": "config check"}]})
    ran = cli("--json", "run-job", "daily", check=0).json()
    assert list(ran) == [
        "schedule",
        "due_at",
        "state",
        "exit_code",
        "duration",
        "timed_out",
        "output",
        "run_id",
    ]
    assert ran["state"] == "succeeded"
    # The same occurrence again: another runner (this one, earlier) owns it.
    taken = cli("--json", "run-job", "daily", check=0).json()
    assert taken == {
        "schedule": "daily",
        "due_at": ran["due_at"],
        "state": "taken",
        "detail": "another runner owns this occurrence",
    }
    from recoverctl.catalog import leases

    catalog = Catalog(cli.env["RECOVERCTL_CATALOG"])
    leases.heartbeat(catalog, "scheduler:h:1", "scheduler", {"state": "running"})
    catalog.close()
    status = cli("--json", "scheduler", "status", check=0).json()
    (beat,) = status["heartbeats"]
    assert list(beat) == ["name", "at", "age_s", "details"] and beat["details"] == {"state": "running"}
    assert status == {
        "heartbeats": [beat],
        "runs": [
            {
                "schedule": "daily",
                "due_at": ran["due_at"],
                "state": "succeeded",
                "runner": status["runs"][0]["runner"],
                "started_at": status["runs"][0]["started_at"],
                "finished_at": status["runs"][0]["finished_at"],
            }
        ],
    }
    assert status["runs"][0]["runner"].startswith("run-job:")
    text = cli("scheduler", "status", check=0).stdout
    assert "runner scheduler:h:1: running (" in text and "daily" in text
    printed = cli("--json", "scheduler", "install", "--systemd", "--print", check=0).json()
    assert list(printed) == ["mode", "installed", "units"] and printed["installed"] is False
    cron_lines = cli("--json", "scheduler", "install", "--cron", "--print", check=0).json()
    assert list(cron_lines) == ["mode", "installed", "crontab"]
