"""Rollbacks coupled to the database: restore point + alembic upgrade on deploy, downgrade on rollback."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Cli
from tests.fixtures.docker_engine import DockerEngine, build_demo_web
from tests.fixtures.net import free_port
from tests.fixtures.pgbackup import PYTHON, PYTHONPATH, PgCli
from tests.fixtures.postgres import PgCluster

pytestmark = pytest.mark.e2e

MIGRATION = '''"""{doc}"""
from alembic import op
import sqlalchemy as sa

revision = {rev!r}
down_revision = {down!r}
branch_labels = None
depends_on = None


def upgrade():
{up}


def downgrade():
{down_body}
'''

A = {
    "doc": "orders table",
    "rev": "a",
    "down": None,
    "up": "    op.create_table('orders', sa.Column('id', sa.Integer, primary_key=True))",
    "down_body": "    op.drop_table('orders')",
}
B = {
    "doc": "invoices table and orders.note",
    "rev": "b",
    "down": "a",
    "up": "    op.create_table('invoices', sa.Column('id', sa.Integer, primary_key=True))\n"
    "    op.add_column('orders', sa.Column('note', sa.Text))",
    "down_body": "    op.drop_column('orders', 'note')\n    op.drop_table('invoices')",
}
C_BROKEN = {
    "doc": "audit table (its downgrade is broken)",
    "rev": "c",
    "down": "b",
    "up": "    op.create_table('audit', sa.Column('id', sa.Integer, primary_key=True))",
    "down_body": "    op.drop_table('audit')\n    raise RuntimeError('downgrade c is broken')",
}


def _scripts(root: Path, version: str, *migrations: dict[str, Any]) -> None:
    versions = root / version / "versions"
    versions.mkdir(parents=True)
    for m in migrations:
        (versions / f"{m['rev']}.py").write_text(MIGRATION.format(**m))


def _config(cli: Cli, pg: PgCluster, port: int, container: str, scripts: Path) -> None:
    cli.write_config(
        {
            "sources": {"db": pg.source_config()},
            "services": {
                "web": {
                    "target": "docker",
                    "image": "demo-web",
                    "container": container,
                    "network_mode": "host",
                    "env": {"PORT": str(port)},
                    "health": {
                        "url": f"http://127.0.0.1:{port}/health",
                        "interval": "0.2s",
                        "timeout": "10s",
                    },
                    "database": {
                        "source": "db",
                        "dbname": "app",
                        "script_location": f"{scripts}/{{version}}",
                    },
                }
            },
        }
    )


def _tables(pg: PgCluster) -> set[str]:
    out = pg.psql("SELECT tablename FROM pg_tables WHERE schemaname = 'public'", dbname="app")
    return set(out.split())


def _revision(pg: PgCluster) -> str:
    return pg.psql("SELECT version_num FROM alembic_version", dbname="app")


def test_downgrade_runs_newer_scripts_and_drops_objects(
    cli: Cli, pg: PgCluster, docker_engine: DockerEngine, demo_web_images: dict[str, str], tmp_path: Path
) -> None:
    port, container = free_port(), f"rc-schema-{free_port()}"
    scripts = tmp_path / "app"
    _scripts(scripts, "v1", A)
    _scripts(scripts, "v2", A, B)  # only v2 ships the downgrade of b
    pg.psql("CREATE DATABASE app")
    _config(cli, pg, port, container, scripts)
    try:
        cli("deploy", "web", "v1", check=0)
        assert _revision(pg) == "a"
        cli("deploy", "web", "v2", "--no-verify", check=0)
        assert _revision(pg) == "b"
        pg.psql("INSERT INTO invoices VALUES (1), (2), (3); INSERT INTO orders VALUES (1, 'x')", dbname="app")

        releases = cli("releases", "web", "--json", check=0).json()
        assert [(r["version"], r["schema_revision"]) for r in releases] == [("v2", "b"), ("v1", "a")]
        assert all(r["restore_point"] and r["restore_lsn"] for r in releases)

        plan = cli("rollback", "web", "--schema", "downgrade", "--dry-run", "--json", check=0).json()
        schema = plan["plan"]["schema"]
        assert (schema["current_revision"], schema["target_revision"]) == ("b", "a")
        assert [m["revision"] for m in schema["migrations"]] == ["b"]
        assert schema["drops"] == {"tables": ["invoices"], "columns": ["orders.note"]}
        assert schema["rows_lost"] == {"invoices": 3}
        assert any("invoices (3 rows)" in w for w in plan["plan"]["warnings"])
        assert _revision(pg) == "b"  # a dry run changes nothing

        out = cli("rollback", "web", "--schema", "downgrade", "--yes", "--json", check=0).json()
        assert out["result"] == "succeeded"
        schema_step = next(s for s in out["steps"] if s["name"] == "schema")
        assert schema_step["outcome"] == "ok" and schema_step["output"]["to_revision"] == "a"
        assert _revision(pg) == "a"
        assert _tables(pg) == {"alembic_version", "orders"}
        assert (
            pg.psql("SELECT count(*) FROM information_schema.columns WHERE column_name = 'note'", "app")
            == "0"
        )
        assert httpx.get(f"http://127.0.0.1:{port}/version").text.strip() == "v1"
    finally:
        docker_engine.remove_containers(container)


def test_failing_downgrade_rolls_back_the_transaction(
    cli: Cli, pg: PgCluster, docker_engine: DockerEngine, demo_web_images: dict[str, str], tmp_path: Path
) -> None:
    build_demo_web(docker_engine, "v3", healthy=True)
    port, container = free_port(), f"rc-schema-{free_port()}"
    scripts = tmp_path / "app"
    _scripts(scripts, "v1", A)
    _scripts(scripts, "v3", A, B, C_BROKEN)
    pg.psql("CREATE DATABASE app")
    _config(cli, pg, port, container, scripts)
    try:
        cli("deploy", "web", "v1", check=0)
        cli("deploy", "web", "v3", check=0)
        assert _revision(pg) == "c"
        r = cli("rollback", "web", "--schema", "downgrade", "--yes", check=1)
        assert "downgrade c is broken" in r.stderr
        assert "the database is still at revision c" in r.stderr
        assert "failed at step 'schema' on the database of source" in r.stderr
        assert "service state: v3 is stopped, v1 is not started" in r.stderr
        # PostgreSQL DDL is transactional: the drop of `audit` before the raise was undone.
        assert _revision(pg) == "c"
        assert _tables(pg) == {"alembic_version", "orders", "invoices", "audit"}
    finally:
        docker_engine.remove_containers(container)


def test_pitr_restores_the_database_to_the_deploy_restore_point(
    cli: Cli, pg_cli: PgCli, docker_engine: DockerEngine, demo_web_images: dict[str, str]
) -> None:
    """Archiving cluster + full backup; rollback --schema pitr drops every write after v2's deploy."""
    pg = PgCluster()
    port, container = free_port(), f"rc-pitr-{free_port()}"
    try:
        pg.initdb(f"archive_mode = on\narchive_command = '{pg_cli.archive_command('db')}'\n")
        service = {
            "target": "docker",
            "image": "demo-web",
            "container": container,
            "network_mode": "host",
            "env": {"PORT": str(port)},
            "health": {"url": f"http://127.0.0.1:{port}/health", "interval": "0.2s", "timeout": "10s"},
            "database": {"source": "db", "dbname": "app", "migrate": False},
        }
        pg_cli.write_config({"db": pg.source_config()}, services={"web": service})
        pg_cli("init", check=0)
        pg.start()
        pg.psql("CREATE DATABASE app")
        pg.psql("CREATE TABLE marks (note text)", dbname="app")
        pg_cli("backup", "postgres", check=0)
        # recoverctl as root shares the postgres user's config, catalog and repository.
        for key in ("RECOVERCTL_CATALOG", "RECOVERCTL_CONFIG", "RECOVERCTL_PASSWORD_FILE"):
            cli.env[key] = pg_cli.env[key]

        pg.psql("INSERT INTO marks VALUES ('v1 era')", dbname="app")
        cli("deploy", "web", "v1", check=0)
        cli("deploy", "web", "v2", "--no-verify", check=0)
        pg.psql("INSERT INTO marks VALUES ('written by v2')", dbname="app")
        v2 = cli("releases", "web", "--json", check=0).json()[0]

        plan = cli("rollback", "web", "--schema", "pitr", "--dry-run", "--json", check=0).json()["plan"]
        assert plan["schema"]["restore_point"] == v2["restore_point"]
        assert plan["schema"]["wal_bytes_after"] > 0
        assert any("loses every write after it" in w for w in plan["warnings"])

        # The restored server runs `recoverctl wal fetch` as the postgres user with the rollback's
        # own interpreter: use one that user can execute (ours may live under /root).
        r = subprocess.run(
            [PYTHON, "-m", "recoverctl", "rollback", "web", "--schema", "pitr", "--yes", "--json"],
            env={**cli.env, "PYTHONPATH": PYTHONPATH},
            cwd=cli.home,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
        assert out["result"] == "succeeded", out
        step = next(s for s in out["steps"] if s["name"] == "schema")
        assert step["outcome"] == "ok" and step["output"]["restore_point"] == v2["restore_point"]
        assert pg.psql("SELECT note FROM marks ORDER BY 1", dbname="app").splitlines() == ["v1 era"]
        assert pg.psql("SELECT pg_is_in_recovery()") == "f"
        assert Path(step["output"]["kept"]).is_dir()  # the old data directory is kept, not deleted
        assert httpx.get(f"http://127.0.0.1:{port}/version").text.strip() == "v1"
    finally:
        docker_engine.remove_containers(container)
        pg.destroy()
