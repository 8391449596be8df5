"""The operations console in a real browser (Debian's chromium via Playwright).

A catalog seeded by the real commands: a files backup, a passing and a failing drill, three
deploys of a Docker service (the last one bad) and an Alertmanager alert that makes `serve` roll
it back, and a WAL archive outage of a postgres source. Then, in the browser: the login form,
the board's colours and reasons, the timeline's order and its WAL gap, the trend chart's points,
the rollback page's steps, a phone-width board; every request the browser made went to the
server on 127.0.0.1. Screenshots (the 1280x800 viewport) go to the test's temp dir; set
RECOVERCTL_CONSOLE_SHOTS=docs/console to refresh the ones the docs show.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from recoverctl.repo import Repository
from recoverctl.storage.local import LocalStorage
from tests.conftest import Cli
from tests.fixtures.docker_engine import DockerEngine, build_demo_web
from tests.fixtures.net import free_port

pytestmark = pytest.mark.e2e

OPERATOR = "console-operator-token-0123456789"
VIEWER = "console-viewer-token-0123456789ab"
CONSOLE_WEB = "rc-console-web"
FAST_KDF = {"name": "scrypt", "n": 2**10, "r": 8, "p": 1}


@dataclass
class Seeded:
    cli: Cli
    url: str
    serve: Any
    failed_drill: int
    passed_drill: int
    rollback_id: int


def _version(port: int) -> str | None:
    try:
        r = httpx.get(f"http://127.0.0.1:{port}/version", timeout=1)
    except httpx.HTTPError:
        return None
    return r.text.strip() if r.status_code == 200 else None


def _playbook(cli: Cli, name: str, parent: Path, **targets: str) -> Path:
    body = {
        "name": name,
        "source": "docs",
        "recovery_point": "latest",
        "targets": {"rto": "1h", "rpo": "1h", **targets},
        "where": {"temp_dir": str(parent)},
    }
    path = cli.home / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"drill": body}))
    return path


def _alert(labels: dict[str, str]) -> dict[str, Any]:
    starts = (datetime.now(UTC) - timedelta(minutes=5)).isoformat().replace("+00:00", "Z")
    return {
        "version": "4",
        "groupKey": '{}:{alertname="HighErrorRate"}',
        "status": "firing",
        "receiver": "recoverctl",
        "groupLabels": {"alertname": labels["alertname"]},
        "commonLabels": labels,
        "commonAnnotations": {"summary": "5xx at 12 %"},
        "externalURL": "http://127.0.0.1:9093",
        "truncatedAlerts": 0,
        "alerts": [
            {
                "status": "firing",
                "labels": labels,
                "annotations": {"summary": "5xx at 12 %"},
                "startsAt": starts,
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://127.0.0.1:9090/graph",
                "fingerprint": "c0ffee0123456789",
            }
        ],
    }


@pytest.fixture
def seeded(cli: Cli, tmp_path: Path, docker_engine: DockerEngine, serve_factory: Any) -> Iterator[Seeded]:
    port = free_port()
    container = f"rc-console-web-{port}"
    # Its own image repository: the engine is shared by the session, and other tests rely on
    # demo-web having no v0.
    build_demo_web(docker_engine, "v0", healthy=True, repository=CONSOLE_WEB)
    build_demo_web(docker_engine, "v1", healthy=True, repository=CONSOLE_WEB)
    build_demo_web(docker_engine, "v2", healthy=False, repository=CONSOLE_WEB)
    operator, viewer = cli.home / "operator.token", cli.home / "viewer.token"
    operator.write_text(OPERATOR + "\n")
    viewer.write_text(VIEWER + "\n")
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.bin").write_bytes(os.urandom(300_000))
    (src / "sub" / "b.txt").write_bytes(b"hello console\n" * 500)
    cli.write_config(
        {
            "repository": {"url": str(tmp_path / "repo"), "pack_size_mib": 1},
            "sources": {
                "docs": {"type": "files", "paths": [str(src)]},
                # Configured but never backed up: the board must say so in red.
                "media": {"type": "files", "paths": [str(src / "sub")]},
                # Only archives WAL (by `wal push`), with one outage: the timeline's WAL gap.
                "pgdb": {"type": "postgres"},
            },
            "serve": {
                "auth": {
                    "tokens": [
                        {
                            "name": "oncall",
                            "role": "operator",
                            "token_file": str(operator),
                        },
                        {"name": "grafana", "role": "viewer", "token_file": str(viewer)},
                    ]
                }
            },
            "policies": [
                {
                    "name": "rollback-on-errors",
                    "match": {"alertname": "HighErrorRate"},
                    "action": "rollback",
                    "service_from_label": "service",
                }
            ],
            "services": {
                "web": {
                    "target": "docker",
                    "image": CONSOLE_WEB,
                    "container": container,
                    "network_mode": "host",
                    "env": {"PORT": str(port)},
                    "health": {
                        "url": f"http://127.0.0.1:{port}/health",
                        "successes": 3,
                        "interval": "0.2s",
                        "timeout": "20s",
                    },
                }
            },
        }
    )
    cli.env["RECOVERCTL_PASSWORD"] = "pw"
    Repository.init(LocalStorage(tmp_path / "repo"), "pw", kdf=FAST_KDF, pack_size_mib=1)
    cli("backup", "files", str(src), "--source", "docs", check=0)
    pg_wal = tmp_path / "pg_wal"
    (pg_wal / "archive_status").mkdir(parents=True)
    segments = [pg_wal / f"00000001000000000000000{n}" for n in (1, 2)]
    for seg in segments:
        seg.write_bytes(os.urandom(64 * 1024))
    cli("wal", "push", "--source", "pgdb", str(segments[0]), check=0)
    refused = {"RECOVERCTL_FAULTS": "put:unavailable:*@wal/"}
    assert cli("wal", "push", "--source", "pgdb", str(segments[1]), env=refused).code != 0
    cli("wal", "push", "--source", "pgdb", str(segments[1]), check=0)
    parent = tmp_path / "drills"
    parent.mkdir()
    passed = cli("drill", "run", str(_playbook(cli, "docs-nightly", parent)), "--json", check=0).json()
    failed = cli(
        "drill", "run", str(_playbook(cli, "docs-tight", parent, rpo="0s")), "--json", check=13
    ).json()
    assert (passed["verdict"], failed["verdict"]) == ("pass", "fail")
    for version, verify in (("v0", []), ("v1", []), ("v2", ["--no-verify"])):
        cli("deploy", "web", version, *verify, check=0)
    assert _version(port) is None  # v2 answers every request with 500

    srv = serve_factory(cli, token=OPERATOR)
    r = srv.post("/hooks/alertmanager", _alert({"alertname": "HighErrorRate", "service": "web"}))
    assert r.status_code == 202, r.text
    [job_id] = [d["job_id"] for d in r.json()["decisions"] if d.get("job_id")]
    job = srv.wait_job(job_id, timeout=120)
    assert job["state"] == "succeeded", job
    assert _version(port) == "v1"
    try:
        yield Seeded(cli, srv.url, srv, failed["id"], passed["id"], job["result"]["rollback_id"])
    finally:
        docker_engine.remove_containers(container)


def _log_in(page: Any, url: str | re.Pattern[str], token: str) -> None:
    page.fill("#token", token)
    page.click("button[type=submit]")
    page.wait_for_url(url)


def test_console_in_chromium(seeded: Seeded, chromium: Any, tmp_path: Path) -> None:
    # A run of the suite must not rewrite the checked-in screenshots (they differ by a few pixels).
    shots = Path(os.environ.get("RECOVERCTL_CONSOLE_SHOTS") or tmp_path / "shots")
    shots.mkdir(parents=True, exist_ok=True)
    context = chromium.new_context(viewport={"width": 1280, "height": 800})
    requests: list[str] = []
    context.on("request", lambda req: requests.append(req.url))
    page = context.new_page()
    base = seeded.url

    # Unauthenticated: sent to the login form, then back where it was going.
    page.goto(f"{base}/timeline")
    assert page.url.startswith(f"{base}/login?next=")
    _log_in(page, re.compile(r"/login\?.*error=token"), "not-a-configured-token-at-all")
    assert "not configured" in page.inner_text("main")
    _log_in(page, f"{base}/timeline", VIEWER)
    [cookie] = [c for c in context.cookies() if c["name"] == "recoverctl_session"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert VIEWER not in cookie["value"]

    # Board: colours with their words and reasons.
    page.goto(f"{base}/")
    docs = page.locator("tr[data-source=docs]")
    assert docs.get_attribute("data-state") == "red"
    assert f"last drill #{seeded.failed_drill} 'docs-tight' failed" in docs.inner_text()
    assert "Breached" in docs.locator("td[data-label=State]").inner_text()
    assert "last full" in docs.inner_text() and "RPO exposure" in docs.inner_text()
    media = page.locator("tr[data-source=media]")
    assert media.get_attribute("data-state") == "red" and "no full backup recorded" in media.inner_text()
    web = page.locator("tr[data-service=web]")
    assert web.get_attribute("data-state") == "green"
    assert "v1" in web.locator("td[data-label='Live release']").inner_text()
    assert "v0" in web.locator("td[data-label='Previous good']").inner_text()
    assert f"#{seeded.rollback_id}" in web.locator("td[data-label='Last rollback']").inner_text()
    assert page.locator("tr[data-state=red] .state-red").count() >= 2
    page.screenshot(path=str(shots / "board.png"))

    # Timeline: newest first; the story's events in the order they happened.
    page.goto(f"{base}/timeline?limit=100")
    rows = page.locator("table.timeline tbody tr")
    kinds = [rows.nth(i).get_attribute("data-kind") for i in range(rows.count())]
    ats = [float(rows.nth(i).get_attribute("data-at") or 0) for i in range(rows.count())]
    assert ats == sorted(ats, reverse=True)
    story = [k for k in reversed(kinds) if k in ("backup", "drill", "deploy", "rollback")]
    assert story[:3] == ["backup", "drill", "drill"], kinds
    assert story.index("rollback") > max(i for i, k in enumerate(story) if k == "deploy")
    assert {"alert", "release"} <= set(kinds)
    rollback_row = page.locator("table.timeline tr[data-kind=rollback]")
    assert "verify" in rollback_row.inner_text()
    page.screenshot(path=str(shots / "timeline.png"))
    snapshot_link = page.locator("table.timeline tr[data-kind=backup] a").first.get_attribute("href")
    assert snapshot_link and snapshot_link.startswith("/snapshots/")
    page.goto(base + snapshot_link)
    snapshot = page.inner_text("main")
    assert "docs" in snapshot and "never verified" in snapshot and "deduplicated" in snapshot
    page.goto(f"{base}/timeline?kind=drill")
    assert {r.get_attribute("data-kind") for r in page.locator("table.timeline tbody tr").all()} == {"drill"}
    # The WAL gap: when archiving of pgdb failed, until when, which segment, why.
    page.goto(f"{base}/timeline?kind=wal")
    gap = page.locator("table.timeline tr[data-kind=wal]")
    assert gap.count() == 1 and gap.is_visible()
    text = gap.inner_text()
    assert "000000010000000000000002" in text and "injected unavailable fault" in text, text
    assert "repository could not cover" in text and "ongoing" not in text
    page.screenshot(path=str(shots / "timeline-wal-gap.png"))

    # Trends: one point per drill, the failed one marked.
    page.goto(f"{base}/trends/docs")
    page.wait_for_selector(".rc-trend[data-drawn=true]")
    for metric in ("rto", "rpo"):
        fig = page.locator(f"figure[data-metric={metric}]")
        assert (fig.get_attribute("data-points"), fig.get_attribute("data-failed")) == ("2", "1")
    assert page.locator(".rc-phase-bar span").count() >= 2
    page.screenshot(path=str(shots / "drill-trend.png"))

    # The rollback page lists its steps with their states and timings.
    page.goto(f"{base}/rollbacks/{seeded.rollback_id}")
    steps = [s.get_attribute("data-step") for s in page.locator("table.steps tbody tr").all()]
    assert steps == ["lock", "stop_current", "schema", "start_target", "verify", "notify", "record"]
    states = {s.get_attribute("data-state") for s in page.locator("table.steps tbody tr").all()}
    assert states <= {"done", "skipped"}, states
    page.screenshot(path=str(shots / "rollback.png"))
    page.goto(f"{base}/drills/{seeded.failed_drill}")
    assert "RPO" in page.inner_text(".notice.bad")

    # Incidents: the failed drill opened one about docs; the board lists it, its page shows it, and
    # a viewer has no Acknowledge button.
    page.goto(f"{base}/")
    assert int(page.locator("#open-incidents").get_attribute("data-count") or 0) >= 1
    incident_href = page.locator("tr[data-source=docs] .incident a").first.get_attribute("href")
    assert incident_href and incident_href.startswith("/incidents/")
    page.goto(base + incident_href)
    assert page.locator("#incident-state").get_attribute("data-state") == "open"
    assert "drill" in page.inner_text("table.incident-timeline")
    assert page.locator("#acknowledge").count() == 0
    # An operator signs in (its own browser context) and acknowledges it.
    operator = chromium.new_context(viewport={"width": 1280, "height": 800})
    operator.on("request", lambda req: requests.append(req.url))
    op_page = operator.new_page()
    op_page.goto(base + incident_href)
    _log_in(op_page, base + incident_href, OPERATOR)
    op_page.click("#acknowledge")
    op_page.wait_for_selector("#incident-state[data-state=acknowledged]")
    assert "acknowledged by oncall" in op_page.inner_text("#incident-state")
    assert op_page.locator("#acknowledge").count() == 0
    assert "acknowledged" in op_page.inner_text("table.incident-timeline")
    op_page.screenshot(path=str(shots / "incident.png"))
    operator.close()
    page.goto(f"{base}/")
    assert "acknowledged" in page.inner_text("tr[data-source=docs] .incident")
    # The alert that rolled web back opened one too; its page links the rollback.
    web_incident = page.locator("tr[data-service=web] .incident a").first.get_attribute("href")
    page.goto(f"{base}{web_incident}")
    assert page.locator(f"a[href='/rollbacks/{seeded.rollback_id}']").count() >= 1

    # A phone: the board reflows instead of scrolling sideways.
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"{base}/")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    assert page.locator("tr[data-source=docs] td[data-label=State]").is_visible()
    page.screenshot(path=str(shots / "board-phone.png"))

    # The static drill report draws the same chart from its inlined copy of the same code.
    report = seeded.cli.home / "report.html"
    seeded.cli("drill", "report", str(seeded.failed_drill), "--format", "html", "-o", str(report), check=0)
    page.goto(report.as_uri())
    page.wait_for_selector(".rc-trend[data-drawn=true]")
    fig = page.locator("figure[data-metric=rpo]")
    # A report's history is its playbook's: docs-tight ran once, and failed.
    assert (fig.get_attribute("data-points"), fig.get_attribute("data-failed")) == ("1", "1")

    context.close()
    requests = [u for u in requests if u != report.as_uri()]
    assert requests and all(u.startswith(f"{base}/") for u in requests), [
        u for u in requests if not u.startswith(f"{base}/")
    ]
