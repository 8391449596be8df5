"""Archive mode keeps its promise: `postgres setup` sets archive_timeout from the source's RPO
target on a real server, `postgres status` shows the bound it guarantees, `config check` warns
about a target archive mode cannot keep."""

from __future__ import annotations

from typing import Any

from tests.fixtures.pgbackup import PgCli
from tests.fixtures.postgres import PgCluster


def _config(pg_cli: PgCli, pg: PgCluster, rpo: str) -> None:
    pg_cli.write_config(
        {"main": pg.source_config()},
        targets={"critical": {"rto": "2h", "rpo": rpo}},
    )


def _timeout_item(plan: list[dict[str, Any]]) -> dict[str, Any]:
    return next(i for i in plan if i["name"] == "archive_timeout")


def test_setup_sets_a_quarter_of_the_rpo_target_and_status_shows_the_bound(
    pg_cli: PgCli, pg_factory: Any
) -> None:
    pg: PgCluster = pg_factory(extra_conf="archive_mode = on\n")
    _config(pg_cli, pg, "1h")
    pg_cli("init", check=0)
    plan = pg_cli("--json", "postgres", "setup", check=0).json()
    item = _timeout_item(plan["settings"])
    assert item == {**item, "current": "0", "wanted": "900", "change": True, "restart": False}
    assert "quarter of the RPO target 3600s" in item["why"]

    text = pg_cli("postgres", "setup", "--apply", check=0).stdout
    assert "archive_timeout = '900'" in text and "why: a quarter of the RPO target" in text
    assert pg.psql("show archive_timeout").strip() == "15min"

    # A tighter target shortens it; the floor holds a 2-minute target at 60 s and says so.
    _config(pg_cli, pg, "2m")
    item = _timeout_item(pg_cli("--json", "postgres", "setup", "--apply", check=0).json()["settings"])
    assert item["wanted"] == "60" and "held to the 60s floor" in item["why"]
    assert pg.psql("show archive_timeout").strip() == "1min"

    # A shorter value an operator set already keeps the promise: left alone.
    pg.psql("alter system set archive_timeout = 30")
    pg.psql("select pg_reload_conf()")
    item = _timeout_item(pg_cli("--json", "postgres", "setup", check=0).json()["settings"])
    assert item["change"] is False and item["wanted"] == "30"

    pg_cli("postgres", "setup", "--apply", check=0)
    pg.archive_current_wal()
    status = pg_cli("--json", "postgres", "status", check=0).json()["sources"][0]
    assert status["archive_timeout_s"] == 30 and status["archive_bound_s"] == 30.0
    assert "archive_timeout 30s: guarantees loss <= 30.0s" in pg_cli("postgres", "status", check=0).stdout


def test_status_says_nothing_bounds_the_loss_without_archive_timeout(pg_cli: PgCli, pg_factory: Any) -> None:
    pg: PgCluster = pg_factory()
    _config(pg_cli, pg, "1h")
    status = pg_cli("--json", "postgres", "status", check=0).json()["sources"][0]
    assert status["archive_timeout_s"] == 0 and status["archive_bound_s"] is None


def test_config_check_warns_about_a_target_archive_mode_cannot_keep(pg_cli: PgCli, pg_factory: Any) -> None:
    pg: PgCluster = pg_factory(start=False)
    _config(pg_cli, pg, "30s")
    r = pg_cli("--json", "config", "check", check=0).json()
    assert any("RPO target 30s (critical) cannot be met in archive mode" in w for w in r["warnings"])
    _config(pg_cli, pg, "5m")
    assert pg_cli("--json", "config", "check", check=0).json()["warnings"] == []
