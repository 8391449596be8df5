"""`pip install` of the wheel, then `recoverctl drill run main-nightly`: the shipped example
playbook restores a real PostgreSQL 15 backup and passes, with no checkout on the path.

The installed copy runs as the postgres OS user (as the server's archive_command does), with only
the wheel's install directory and the venv's dependencies on PYTHONPATH, from a working directory
that holds no playbooks/.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.fixtures import pgbackup
from tests.fixtures.drill_sources import drill_leftovers
from tests.fixtures.net import wait_until
from tests.fixtures.pgbackup import PgCli
from tests.fixtures.postgres import PgCluster
from tests.fixtures.wheel import build_dist


def test_installed_wheel_runs_the_packaged_drill_playbook(tmp_path: Path) -> None:
    (wheel,) = build_dist(tmp_path).glob("recoverctl-*.whl")
    # Under /tmp directly: pytest's tmp_path is private to root and the server runs as postgres.
    home = Path(tempfile.mkdtemp(prefix="recoverctl-wheel-"))
    os.chmod(home, 0o755)
    site = home / "site"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", "install"]
    subprocess.run([*pip, "--no-deps", "--no-index", "-q", "--target", site, wheel], check=True)
    cli = PgCli(home)
    # The first entry of the fixture's PYTHONPATH is the checkout (or its mirror): replace it.
    dependencies = pgbackup.PYTHONPATH.split(os.pathsep)[1:]
    cli.env["PYTHONPATH"] = os.pathsep.join([str(site), *dependencies])
    pg = PgCluster()
    try:
        pg.initdb(f"archive_mode = on\narchive_command = '{cli.archive_command('main')}'\n")
        cli.write_config({"main": pg.source_config()})  # the source the example playbook names
        interpreter = cli.argv()[:-2]  # without `-m recoverctl`: the same user, interpreter and env
        probe = [*interpreter, "-c", "import recoverctl; print(recoverctl.__file__)"]
        where = subprocess.run(probe, env=cli.env, cwd=home, capture_output=True, text=True, check=True)
        assert Path(where.stdout.strip()).is_relative_to(site), where.stdout
        assert not (home / "playbooks").exists()

        cli("init", check=0)
        pg.start()
        pg.psql("create table t(id int); insert into t select generate_series(1, 100)")
        cli("backup", "postgres", "--type", "full", check=0)
        pg.psql("insert into t select generate_series(101, 150)")
        pg.archive_current_wal()

        drill = cli("--json", "drill", "run", "main-nightly", check=0).json()
        assert drill["name"] == "main-nightly" and drill["verdict"] == "pass", drill
        (sql,) = [c for c in drill["checks"] if c["kind"] == "sql"]
        assert sql["ok"] and sql["output"] == "got 150, expected >= 1", drill["checks"]
        packaged = site / "recoverctl" / "drill" / "playbooks" / "main-nightly.yaml"
        history = cli("--json", "drill", "history", check=0).json()
        assert [h["name"] for h in history] == ["main-nightly"], history
        assert packaged.is_file()
    finally:
        pg.destroy()
        # The detached WAL pusher outlives the server briefly and records its last state in the
        # catalog under `home`: removing home before it exits left a new catalog.db behind.
        wait_until(lambda: not drill_leftovers(str(home)), timeout=90, what="the WAL pusher to exit")
        shutil.rmtree(home, ignore_errors=True)
