"""PostgreSQL from a copy repository: with the primary repository deleted entirely, a physical
restore to a point in time and to the end of the archive reads the copy alone (restore_command
included) and gives the right rows."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.fixtures.pgbackup import PgCli
from tests.fixtures.postgres import PgCluster
from tests.integration.postgres.test_pg_backup_restore import Env


@pytest.fixture
def env() -> Iterator[Env]:
    home = Path(tempfile.mkdtemp(prefix="recoverctl-pgcopy-"))
    os.chmod(home, 0o755)
    cli = PgCli(home)
    copy_pw = home / "offsite.pw"
    copy_pw.write_text("the offsite passphrase\n")
    copy_pw.chmod(0o600)
    pg = PgCluster()
    pg.initdb(f"archive_mode = on\narchive_command = '{cli.archive_command('main')}'\n")
    cli.config_path.write_text(
        yaml.safe_dump(
            {
                "repositories": {
                    "main": {"url": str(cli.repository)},
                    "offsite": {"url": str(home / "copy"), "password_file": str(copy_pw)},
                },
                "sources": {"main": pg.source_config(count_tables=["public.marks"])},
            }
        )
    )
    cli._chown()
    cli("init", check=0)
    cli("init", "--repo", "offsite", check=0)
    pg.start()
    pg.psql("create table marks(id serial primary key, note text, at timestamptz default clock_timestamp())")
    yield Env(cli, pg)
    pg.destroy()
    shutil.rmtree(home, ignore_errors=True)


def _copies(stdout: str) -> list[dict[str, object]]:
    doc = "\n".join(line for line in stdout.splitlines() if not line.startswith('{"message_type"'))
    copies: list[dict[str, object]] = json.loads(doc)["copies"]
    return copies


def test_pitr_from_the_copy_with_the_primary_repository_gone(env: Env) -> None:
    pg, cli = env.pg, env.cli
    pg.psql("insert into marks(note) values ('in_backup')")
    cli("backup", "postgres", "--type", "full", check=0)
    pg.psql("insert into marks(note) values ('before_time')")
    t1 = pg.psql("select clock_timestamp()")
    pg.psql("insert into marks(note) values ('after_time')")
    env.archive_current()

    copy = _copies(cli("--json", "copy", check=0).stdout)[0]
    assert copy["snapshots_copied"] == 1 and int(str(copy["wal_copied"])) >= 2
    lag = _copies(cli("--json", "copy", "--dry-run", check=0).stdout)[0]
    assert lag["snapshots_to_copy"] == 0 and lag["wal_to_copy"] == 0
    assert lag["wal_lag_s"] == 0
    status = json.loads(cli("--json", "status").stdout)["copies"][0]
    assert status["snapshots_missing"] == 0 and status["wal_lag_s"] is not None and status["wal_lag_s"] < 5

    shutil.rmtree(cli.repository)
    _, rows = env.restore_and_query("--repo", "offsite", "--to-time", t1)
    assert rows == ["in_backup", "before_time"]
    _, rows = env.restore_and_query("--repo", "offsite", "--to-latest")
    assert rows == ["in_backup", "before_time", "after_time"]
