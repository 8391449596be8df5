"""`recoverctl serve` probes on a real PostgreSQL catalog: /health/live answers while the process
serves whatever the catalog does; /health/ready follows the catalog; /health the installation."""

from __future__ import annotations

from typing import Any

from tests.fixtures.net import wait_until

TOKEN = "probe-token-0123456789abcdef"


def test_liveness_stays_up_while_readiness_and_health_follow_the_catalog(
    cli: Any, serve_factory: Any, pg: Any
) -> None:
    pg.psql("CREATE DATABASE recoverctl")
    cli.env["RECOVERCTL_CATALOG"] = f"postgresql://postgres@127.0.0.1:{pg.port}/recoverctl"
    (cli.home / "token").write_text(TOKEN + "\n")
    cli.write_config({"serve": {"auth": {"bearer_token_file": str(cli.home / "token")}}})
    # No worker in this process and none elsewhere: the installation is unhealthy (nothing runs the
    # queued jobs), but this replica accepts alerts, so it is ready.
    srv = serve_factory(cli, "--workers", "0", token=TOKEN)
    health = srv.client.get("/health")
    assert health.status_code == 503 and health.json()["checks"]["worker"]["ok"] is False
    ready = srv.client.get("/health/ready")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {
        "catalog": {"ok": True, "url": ready.json()["checks"]["catalog"]["url"]}
    }
    live = srv.client.get("/health/live")
    assert live.status_code == 200 and live.json()["status"] == "ok" and live.json()["version"]

    pg.stop()
    health = srv.client.get("/health")
    assert health.status_code == 503 and health.json()["checks"]["catalog"]["ok"] is False
    ready = srv.client.get("/health/ready")
    assert ready.status_code == 503 and ready.json()["status"] == "unready"
    assert "error" in ready.json()["checks"]["catalog"]
    assert srv.client.get("/health/live").status_code == 200  # a restart would not bring the catalog back

    pg.start()
    wait_until(
        lambda: srv.client.get("/health/ready").status_code == 200, what="ready once the catalog is back"
    )
    assert srv.client.get("/health/live").status_code == 200
