"""The console's access rules, timeline and annotations, over the real FastAPI app and a SQLite
catalog written through the catalog API (the browser story is tests/e2e/test_console_browser.py)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from recoverctl.actions.status import status
from recoverctl.catalog import Catalog, incidents
from recoverctl.catalog.drills import finish_drill, start_drill
from recoverctl.catalog.leases import heartbeat
from recoverctl.catalog.notifications import NotificationRecord, record_notification
from recoverctl.catalog.releases import insert_release
from recoverctl.catalog.timeline import (
    KINDS,
    Cursor,
    TimelineEntry,
    TimelineQuery,
    merge_newest_first,
    timeline,
)
from recoverctl.config import parse_config
from recoverctl.errors import ConfigError
from recoverctl.service.app import create_app
from recoverctl.service.auth import Identity, load_secrets
from recoverctl.service.server import build_state
from recoverctl.service.session import COOKIE, LOGIN_COOKIE, SessionSigner

OPERATOR = "unit-operator-token-0123456789"
VIEWER = "unit-viewer-token-0123456789ab"
LEGACY = "unit-legacy-bearer-0123456789"


def _config(home: Path, **serve: Any) -> Any:
    for name, value in (("op", OPERATOR), ("vw", VIEWER), ("legacy", LEGACY)):
        (home / name).write_text(value + "\n")
    auth = {
        "tokens": [
            {"name": "ann", "role": "operator", "token_file": str(home / "op")},
            {"name": "vic", "role": "viewer", "token_file": str(home / "vw")},
        ],
        "bearer_token_file": str(home / "legacy"),
    }
    return parse_config(
        {
            "serve": {"auth": auth, "rejections": {"delay": 0}, **serve},
            "sources": {"db": {"type": "files", "paths": [str(home)]}},
            "services": {"web": {"target": "docker", "image": "demo-web", "container": "web"}},
        }
    )


def _client(cfg: Any, catalog: Catalog) -> TestClient:
    state = build_state(cfg, catalog, workers=0, dry_run=True, host="127.0.0.1")
    return TestClient(create_app(state), follow_redirects=False)


@pytest.fixture
def catalog(tmp_path: Path) -> Iterator[Catalog]:
    c = Catalog(f"sqlite:///{tmp_path / 'catalog.db'}")
    yield c
    c.close()


@pytest.fixture
def client(tmp_path: Path, catalog: Catalog) -> TestClient:
    return _client(_config(tmp_path), catalog)


def _log_in(client: TestClient, token: str, next: str = "/") -> Any:
    client.get("/login")
    nonce = client.cookies.get(LOGIN_COOKIE)
    return client.post("/login", data={"token": token, "csrf": nonce, "next": next})


def test_pages_send_a_stranger_to_the_login_form_and_back(client: TestClient) -> None:
    r = client.get("/timeline?kind=drill")
    assert r.status_code == 303 and r.headers["location"] == "/login?next=/timeline%3Fkind%3Ddrill"
    r = _log_in(client, "wrong-token-0123456789abcdef", next="/timeline")
    assert r.headers["location"].endswith("error=token") and COOKIE not in client.cookies
    r = _log_in(client, VIEWER, next="/timeline?kind=drill")
    assert r.status_code == 303 and r.headers["location"] == "/timeline?kind=drill"
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and VIEWER.lower() not in cookie
    page = client.get("/timeline?kind=drill")
    assert page.status_code == 200 and "vic (viewer)" in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]


def test_login_needs_its_form_token_and_never_redirects_off_site(client: TestClient) -> None:
    client.get("/login")
    r = client.post("/login", data={"token": VIEWER, "csrf": "forged", "next": "/"})
    assert r.headers["location"].endswith("error=expired") and COOKIE not in client.cookies
    r = _log_in(client, VIEWER, next="//evil.example/")
    assert r.headers["location"] == "/"


def test_sessions_are_signed_expire_and_die_with_their_token(tmp_path: Path) -> None:
    secrets = load_secrets(_config(tmp_path).serve.auth)
    signer = SessionSigner(secrets)
    now = time.time()
    value = signer.issue(Identity("vic", "viewer"), now)
    session = signer.read(value, now)
    assert session is not None and session.identity == Identity("vic", "viewer")
    assert signer.read(value, now + secrets.settings.session_ttl + 1) is None
    payload, mac = value.rsplit(".", 1)
    assert (
        signer.read(payload.replace(payload[2], "A" if payload[2] != "A" else "B") + "." + mac, now) is None
    )
    # A session of a name that is not configured (or with another role) is refused.
    assert signer.read(signer.issue(Identity("vic", "operator"), now), now) is None
    assert signer.check_csrf(session, session.csrf) and not signer.check_csrf(session, "x")


def test_logout_needs_the_csrf_token(client: TestClient) -> None:
    _log_in(client, OPERATOR)
    assert client.post("/logout", data={}).status_code == 403
    board = client.get("/")
    csrf = board.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    r = client.post("/logout", data={"csrf": csrf})
    assert r.status_code == 303 and COOKIE not in client.cookies


def test_roles_viewers_read_operators_act_and_the_old_token_is_an_operator(client: TestClient) -> None:
    viewer = {"Authorization": f"Bearer {VIEWER}"}
    assert client.get("/api/annotations", headers=viewer).status_code == 200
    assert client.get("/openapi.json").status_code == 401
    assert client.get("/openapi.json", headers=viewer).status_code == 200
    assert client.get("/", headers=viewer).status_code == 200
    r = client.post("/hooks/generic", json={"alerts": []}, headers=viewer)
    assert r.status_code == 401 and "viewer role" in r.json()["detail"]
    for token in (OPERATOR, LEGACY):
        r = client.post("/hooks/generic", json={"alerts": []}, headers={"Authorization": f"Bearer {token}"})
        assert r.status_code != 401, r.text
    assert client.get("/docs").status_code == 404


def test_docs_when_enabled_and_an_open_console_without_credentials(tmp_path: Path, catalog: Catalog) -> None:
    with_docs = _client(_config(tmp_path, docs=True), catalog)
    assert with_docs.get("/docs").status_code == 200
    bare = parse_config({"sources": {"db": {"type": "files", "paths": [str(tmp_path)]}}})
    open_client = _client(bare, catalog)
    assert open_client.get("/").status_code == 200 and open_client.get("/openapi.json").status_code == 200


def test_duplicate_token_names_and_values_are_config_errors(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    twice = cfg.serve.auth.model_copy(update={"tokens": [cfg.serve.auth.tokens[0]] * 2})
    with pytest.raises(ConfigError, match="used twice"):
        load_secrets(twice)
    same = cfg.serve.auth.model_copy(update={"bearer_token_file": str(tmp_path / "op")})
    with pytest.raises(ConfigError, match="same as another token"):
        load_secrets(same)


def _seed(catalog: Catalog) -> None:
    base = time.time() - 1000
    run = catalog.start_run("backup", "db")
    catalog.finish_run(run, "succeeded", snapshot_id="abc123")
    for i, verdict in enumerate(("pass", "fail")):
        d = start_drill(
            catalog,
            name=f"d{i}",
            source="db",
            started_at=base + 100 * i,
            rto_target_s=7200,
            rpo_target_s=3600,
            recovery_point="latest",
            details={},
        )
        finish_drill(
            catalog,
            d,
            snapshot_id="abc123",
            finished_at=base + 100 * i + 5,
            verdict=verdict,
            rto_s=5.0,
            rpo_s=60.0 if verdict == "pass" else 9000.0,
            phases={"select": 1.0, "fetch": 4.0},
            checks=[],
            bytes=10,
            reason=None if verdict == "pass" else "RPO too high",
            details={},
        )
    with catalog.begin() as conn:
        insert_release(conn, "web", "v1", "live", created_at=base + 300)
    catalog.audit("deploy", "web", "succeeded", {"version": "v1"})
    event = catalog.emit_event("drill.failed", "critical", "db", "drill d1 failed")
    record_notification(catalog, NotificationRecord(event, "oncall", "slack", "critical", "sent", 1))


def test_timeline_merges_every_kind_newest_first_and_pages(catalog: Catalog) -> None:
    _seed(catalog)
    everything = timeline(catalog, TimelineQuery(limit=100)).entries
    assert [e.at for e in everything] == sorted((e.at for e in everything), reverse=True)
    assert {e.kind for e in everything} == {"backup", "drill", "release", "deploy", "notification"}
    first = timeline(catalog, TimelineQuery(limit=2))
    second = timeline(catalog, TimelineQuery(limit=100, after=first.next_cursor))
    assert first.entries + second.entries == everything and second.next_cursor is None
    drills = timeline(catalog, TimelineQuery(kinds=["drill"], subject="db")).entries
    assert [e.status for e in drills] == ["fail", "pass"]
    assert timeline(catalog, TimelineQuery(subject="web", kinds=["drill"])).entries == []
    with pytest.raises(ValueError, match="unknown timeline kind"):
        timeline(catalog, TimelineQuery(kinds=["bogus"]))


def test_pages_and_grafana_annotations(client: TestClient, catalog: Catalog) -> None:
    _seed(catalog)
    _log_in(client, VIEWER)
    board = client.get("/")
    assert 'data-source="db" data-state="red"' in board.text and "RPO too high" in board.text
    assert client.get("/drills/2").status_code == 200 and client.get("/drills/99").status_code == 404
    assert client.get("/snapshots/nope").status_code == 404
    trend = client.get("/trends/db").text
    assert '"verdict": "fail"' in trend and '"phases_of": 2' in trend
    assert client.get("/static/vendor/uplot/LICENSE").status_code == 200
    assert client.get("/static/%2e%2e/views.py").status_code == 404
    headers = {"Authorization": f"Bearer {VIEWER}"}
    now_ms = int(time.time() * 1000) + 1000
    got = client.get(f"/api/annotations?from=0&to={now_ms}&kind=drill", headers=headers).json()
    assert [a["tags"][0] for a in got] == ["drill", "drill"] and got[0]["time"] > got[1]["time"]
    body = {
        "range": {"from": "1970-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z"},
        "annotation": {"query": "kind=release"},
    }
    simple = client.post("/api/annotations", json=body, headers=headers).json()
    assert [(a["title"], a["annotation"]["query"]) for a in simple] == [("release web: live", "kind=release")]
    assert client.get("/api/annotations?kind=bogus", headers=headers).status_code == 400


def test_the_grafana_dashboard_asks_for_timeline_kinds_that_exist() -> None:
    dashboard = json.loads((Path(__file__).parents[3] / "contrib" / "grafana-dashboard.json").read_text())
    annotations = dashboard["annotations"]["list"]
    assert annotations
    for a in annotations:
        target = a["target"]
        assert target["url"] == "/api/annotations"
        params = {p["key"]: p["value"] for p in target["url_options"]["params"]}
        assert params["from"] == "${__from}" and set(params["kind"].split(",")) <= set(KINDS)


def test_paging_neither_skips_nor_repeats_entries_sharing_a_timestamp() -> None:
    same = [TimelineEntry(kind, 100.0, "db", "ok", kind, "1") for kind in ("backup", "drill", "release")]
    parts = [[e] for e in same] + [[TimelineEntry("alert", 50.0, "db", "acted", "a", "7")]]
    seen, cursor = [], None
    for _ in range(5):
        page = merge_newest_first(
            [[e for e in p if cursor is None or e.at <= cursor.at] for p in parts], 1, cursor
        )
        seen += page.entries
        cursor = page.next_cursor
        if cursor is None:
            break
    assert [(e.kind, e.at) for e in seen] == [
        ("backup", 100.0),
        ("drill", 100.0),
        ("release", 100.0),
        ("alert", 50.0),
    ]
    assert Cursor.parse(str(Cursor(100.0, "drill", "1"))) == Cursor(100.0, "drill", "1")


def _csrf(page_text: str) -> str:
    return page_text.split('name="csrf" value="', 1)[1].split('"', 1)[0]


def test_open_incidents_are_on_the_board_and_an_operator_acknowledges_one(
    client: TestClient, catalog: Catalog
) -> None:
    catalog.emit_event("drill.failed", "critical", "db", "restore drill 'nightly' of 'db' failed")
    _log_in(client, OPERATOR)
    board = client.get("/").text
    assert 'data-count="1"' in board and 'href="/incidents/1"' in board
    row = board.split('data-source="db"', 1)[1].split("</tr>", 1)[0]
    assert "incident #1" in row and "open" in row
    page = client.get("/incidents/1")
    assert page.status_code == 200 and 'id="acknowledge"' in page.text
    assert 'data-kind="opened"' in page.text or "drill.failed" in page.text
    assert client.post("/incidents/1/acknowledge", data={"csrf": "forged"}).status_code == 403
    r = client.post("/incidents/1/acknowledge", data={"csrf": _csrf(page.text)})
    assert r.status_code == 303 and r.headers["location"] == "/incidents/1", r.text
    after = client.get("/incidents/1").text
    assert 'data-state="acknowledged"' in after and "acknowledged by ann" in after
    assert 'id="acknowledge"' not in after
    assert 'data-count="1"' in client.get("/").text  # acknowledged is still active until resolved
    assert client.get("/incidents/99").status_code == 404


def test_an_incident_page_links_its_rollbacks(client: TestClient, catalog: Catalog) -> None:
    catalog.emit_event("rollback.failed", "critical", "web", "rollback #7 of 'web' failed")
    incidents.note(
        catalog, 1, incidents.TimelineEntry(time.time(), "rollback", "rollback #7 started", rollback_id=7)
    )
    _log_in(client, VIEWER)
    board = client.get("/").text.split('data-service="web"', 1)[1].split("</tr>", 1)[0]
    assert 'href="/incidents/1"' in board
    page = client.get("/incidents/1").text
    assert 'href="/rollbacks/7"' in page and "rollback #7 started" in page


def test_viewers_see_no_acknowledge_button_and_may_not_post_one(client: TestClient, catalog: Catalog) -> None:
    catalog.emit_event("drill.failed", "critical", "db", "restore drill 'nightly' of 'db' failed")
    _log_in(client, VIEWER)
    page = client.get("/incidents/1")
    assert page.status_code == 200 and 'id="acknowledge"' not in page.text
    r = client.post("/incidents/1/acknowledge", data={"csrf": _csrf(page.text)})
    assert r.status_code == 403 and "operator" in r.text
    # A bearer token without a session has no CSRF token: no form post either.
    bearer = TestClient(client.app, follow_redirects=False)
    as_operator = {"Authorization": f"Bearer {OPERATOR}"}
    assert bearer.post("/incidents/1/acknowledge", headers=as_operator).status_code == 403
    assert 'data-state="open"' in client.get("/incidents/1").text


def test_the_board_shows_the_wal_stream_lag_of_streaming_sources_as_status_does(
    tmp_path: Path, catalog: Catalog
) -> None:
    cfg = parse_config(
        {
            "sources": {
                "pg": {"type": "postgres", "tier": "critical", "wal": {"mode": "stream"}},
                "db": {"type": "files", "paths": [str(tmp_path)]},
            },
            "targets": {"critical": {"rto": "2h", "rpo": "100s"}},
        }
    )
    client = _client(cfg, catalog)

    def reported(lag_seconds: float, pid: int | None = 4242) -> Any:
        details = {"source": "pg", "lag_bytes": 16384, "lag_seconds": lag_seconds, "receiver_pid": pid}
        heartbeat(catalog, "wal-stream:pg", "wal-stream", details)
        page = client.get("/").text
        cell = page.split('data-source="pg"')[1].split('data-item="wal_stream"')[1].split("</td>")[0]
        item = status(cfg, catalog).sources[1].items["wal_stream"]
        return cell, item

    cell, item = reported(3.0)
    assert item.status == "green" and 'data-state="green"' in cell
    assert (
        "receiver up" in cell
        and "16384 bytes" in cell
        and "3.0s behind" in cell
        and "RPO target 1m40s" in cell
    )
    cell, item = reported(90.0)  # past 80 % of the RPO target
    assert item.status == "amber" and 'data-state="amber"' in cell and item.reason in cell
    cell, item = reported(150.0)
    assert item.status == "red" and 'data-state="red"' in cell and "over the RPO target" in cell
    cell, item = reported(1.0, pid=None)  # pg_receivewal reconnecting
    assert item.status == "amber" and "receiver down" in cell
    other = (
        client.get("/").text.split('data-source="db"')[1].split('data-item="wal_stream"')[1].split("</td>")[0]
    )
    assert "not streaming" in other
