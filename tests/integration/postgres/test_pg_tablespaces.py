"""Physical backup and point-in-time restore of a cluster with a user tablespace, remapped to a
new directory (pgBackRest's --tablespace-map), against a real checksummed PostgreSQL 15."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from tests.fixtures.net import free_port
from tests.fixtures.pgbackup import PgCli
from tests.fixtures.postgres import PgCluster, chown_to_pg
from tests.integration.postgres.test_pg_backup_restore import psql, stop


def _manifest(root: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            st = os.lstat(os.path.join(dirpath, name))
            out[os.path.relpath(os.path.join(dirpath, name), root)] = (st.st_size, st.st_mtime_ns)
    return out


def test_tablespace_backup_and_remapped_restore() -> None:
    home = Path(tempfile.mkdtemp(prefix="recoverctl-pgts-"))
    os.chmod(home, 0o755)
    cli = PgCli(home)
    pg = PgCluster()
    target = home / "restored"
    try:
        pg.initdb(f"archive_mode = on\narchive_command = '{cli.archive_command('main')}'\n")
        cli.write_config({"main": pg.source_config()})
        cli("init", check=0)
        pg.start()
        original = home / "ts_orig"
        original.mkdir()
        chown_to_pg(original)
        pg.psql(f"create tablespace fast location '{original}'")
        pg.psql("create table t(id int, note text) tablespace fast")
        pg.psql("insert into t select g, 'in_backup' from generate_series(1, 2000) g")
        oid = pg.psql("select oid from pg_tablespace where spcname = 'fast'")

        full = cli("--json", "backup", "postgres", "--type", "full", check=0).json()
        assert full["tablespaces"] == [{"oid": int(oid), "name": "fast", "location": str(original)}]
        assert full["checksum_errors"] == [] and full["pages_checked"] > 0

        pg.psql("insert into t select g, 'after_backup' from generate_series(2001, 2500) g")
        pg.archive_current_wal()
        pg.stop()
        before = _manifest(original)
        assert before

        # The original tablespace directory is in use (not empty): refused, nothing written.
        refused = cli("--json", "restore", "postgres", "--target-dir", str(target), "--to-latest", check=2)
        assert "not empty" in refused.error_json()["message"]
        assert not target.exists()
        bad = cli("restore", "postgres", "--target-dir", str(target), "--tablespace-map", "nope=/x", check=2)
        assert "nope" in bad.stderr and not target.exists()

        moved = home / "ts_new"
        port = free_port()
        out = cli("--json", "restore", "postgres", "--target-dir", str(target), "--tablespace-map",
                  f"fast={moved}", "--to-latest", "--start", "--port", str(port), check=0).json()  # fmt: skip
        try:
            assert out["tablespaces"][0]["location"] == str(moved)
            assert psql(port, "select note, count(*) from t group by note order by note") == [
                "after_backup|500",
                "in_backup|2000",
            ]
            assert psql(
                port, "select pg_tablespace_location(oid) from pg_tablespace where spcname = 'fast'"
            ) == [str(moved)]
            assert os.readlink(target / "pg_tblspc" / oid) == str(moved)
            assert any(moved.glob("PG_*/*/*"))
        finally:
            stop(target)
        assert _manifest(original) == before

        # A drill puts the tablespace into its own workspace, never the production directory.
        drill = cli.sql_drill("ts", "select count(*) from t", ">= 2500")
        assert drill["verdict"] == "pass", drill
        sql = [c for c in drill["checks"] if c["kind"] == "sql"]
        assert sql and sql[0]["ok"] and sql[0]["output"] == "got 2500, expected >= 2500", drill["checks"]
        assert _manifest(original) == before
    finally:
        stop(target)
        pg.destroy()
        shutil.rmtree(home, ignore_errors=True)
