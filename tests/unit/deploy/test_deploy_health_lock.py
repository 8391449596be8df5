"""Health verification (N consecutive successes), the service lock, and release bookkeeping."""

from __future__ import annotations

import http.server
import json
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from recoverctl.actions.releases import record_release
from recoverctl.catalog import Catalog
from recoverctl.catalog import tables as t
from recoverctl.catalog.releases import Release, current_release, release_history
from recoverctl.catalog.service_lock import lock_service, owner_alive, owner_id
from recoverctl.config import HealthPolicy, parse_config
from recoverctl.deploy.health import check_health
from recoverctl.errors import LockedError, NotFoundError


class _Scripted(http.server.BaseHTTPRequestHandler):
    """Answers with the next status of `script` (the last one repeats)."""

    script: list[int] = [200]
    body: dict[str, Any] = {}
    hits = 0

    def do_GET(self) -> None:
        cls = type(self)
        status = cls.script[min(cls.hits, len(cls.script) - 1)]
        cls.hits += 1
        data = json.dumps(cls.body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[tuple[str, type[_Scripted]]]:
    handler = type("Handler", (_Scripted,), {"script": [200], "body": {}, "hits": 0})
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/health", handler
    srv.shutdown()
    srv.server_close()


def test_health_needs_consecutive_successes(server: tuple[str, type[_Scripted]]) -> None:
    url, handler = server
    handler.script = [200, 500, 200, 200, 200]
    r = check_health(url, HealthPolicy(successes=3, interval=0.01, timeout=5))
    assert r.ok and r.attempts == 5 and r.consecutive == 3


def test_health_gives_up_at_timeout(server: tuple[str, type[_Scripted]]) -> None:
    url, handler = server
    handler.script = [200, 200, 503]
    r = check_health(url, HealthPolicy(successes=3, interval=0.05, timeout=1.5))
    assert not r.ok and r.last == "HTTP 503" and r.consecutive == 0


def test_health_checks_json_fields(server: tuple[str, type[_Scripted]]) -> None:
    url, handler = server
    handler.body = {"status": "degraded"}
    r = check_health(url, HealthPolicy(successes=1, interval=0.01, timeout=0.2, expect_json={"status": "ok"}))
    assert not r.ok and "status='degraded'" in r.last


def test_health_connection_refused_is_a_failure() -> None:
    r = check_health("http://127.0.0.1:9/health", HealthPolicy(successes=1, interval=0.01, timeout=0.2))
    assert not r.ok and "ConnectError" in r.last


def test_owner_alive() -> None:
    assert owner_alive(owner_id())
    dead = subprocess.Popen(["true"])
    dead.wait()
    host = owner_id().rpartition(":")[0]
    assert not owner_alive(f"{host}:{dead.pid}")
    assert owner_alive("some-other-host:1")  # cannot tell: counts as alive
    assert not owner_alive(None)


@pytest.fixture
def catalog(tmp_path: Path) -> Iterator[Catalog]:
    c = Catalog(f"sqlite:///{tmp_path / 'c.db'}")
    yield c
    c.close()


def test_record_release_and_lock(catalog: Catalog) -> None:
    cfg = parse_config(
        {"services": {"web": {"target": "docker", "image": "demo-web", "container": "w"}}}, env={}
    )
    assert current_release(catalog, "web") is None
    record_release(cfg, catalog, "web", "v1")
    r2 = record_release(cfg, catalog, "web", "v2", schema_revision="b")
    assert isinstance(r2, Release) and r2.image == "demo-web:v2" and r2.status == "live"
    assert [(r.version, r.status) for r in release_history(catalog, "web")] == [
        ("v2", "live"),
        ("v1", "good"),
    ]
    live = current_release(catalog, "web")
    assert live is not None and live.version == "v2"
    with pytest.raises(NotFoundError):
        record_release(cfg, catalog, "nope", "v1")

    # A live deploy holds the lock; a dead one is marked failed and releases it.
    with catalog.begin() as conn:
        conn.execute(
            t.releases.insert().values(
                service="web", version="v3", status="deploying", created_at=0, details={"owner": owner_id()}
            )
        )
    with pytest.raises(LockedError), catalog.begin() as conn:
        lock_service(conn, "web")
    dead = subprocess.Popen(["true"])
    dead.wait()
    with catalog.begin() as conn:
        conn.execute(
            t.releases.update()
            .where(t.releases.c.version == "v3")
            .values(details={"owner": f"{owner_id().rpartition(':')[0]}:{dead.pid}"})
        )
    with catalog.begin() as conn:
        lock_service(conn, "web")
    assert release_history(catalog, "web")[0].status == "failed"


def test_which_rollback_resume_continues(catalog: Catalog) -> None:
    from recoverctl.actions.rollback_plan import resumable_in

    cfg = parse_config(
        {"services": {"web": {"target": "docker", "image": "demo-web", "container": "w"}}}, env={}
    )
    v1 = record_release(cfg, catalog, "web", "v1")
    v2 = record_release(cfg, catalog, "web", "v2")
    assert isinstance(v1, Release) and isinstance(v2, Release)
    with pytest.raises(NotFoundError, match="no interrupted or failed rollback"), catalog.begin() as conn:
        resumable_in(conn, "web")

    def rollback_row(state: str, owner: str | None) -> int:
        with catalog.begin() as conn:
            return int(
                conn.execute(
                    t.rollbacks.insert().values(
                        service="web",
                        from_release=v2.id,
                        to_release=v1.id,
                        schema_mode="keep",
                        state=state,
                        owner=owner,
                        started_at=v2.created_at,
                    )
                ).inserted_primary_key[0]  # type: ignore[index]
            )

    # A failed rollback is resumable, not only one whose process died.
    failed = rollback_row("failed", owner_id())
    with catalog.begin() as conn:
        assert resumable_in(conn, "web").id == failed
    # One still running in a live process is not taken over.
    rollback_row("running", owner_id())
    with pytest.raises(LockedError, match="still running"), catalog.begin() as conn:
        resumable_in(conn, "web")
    # A succeeded one, or a release recorded after the failure, leaves nothing to resume.
    with catalog.begin() as conn:
        conn.execute(t.rollbacks.update().where(t.rollbacks.c.id != failed).values(state="succeeded"))
    with pytest.raises(NotFoundError, match="no interrupted or failed"), catalog.begin() as conn:
        resumable_in(conn, "web")
    with catalog.begin() as conn:
        conn.execute(t.rollbacks.update().values(state="failed"))
    record_release(cfg, catalog, "web", "v3")
    with (
        pytest.raises(NotFoundError, match=r"release v3 \(#\d+\) was deployed or recorded since"),
        catalog.begin() as conn,
    ):
        resumable_in(conn, "web")
