"""A cluster whose pg_wal is a link to another directory (initdb --waldir, production's WAL on
its own disk): restores and drills put pg_wal inside their target (or in --wal-dir, linked by
recoverctl), never write to the original WAL directory, and leave out other links that point
outside the data directory. Against a real PostgreSQL 15.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from tests.fixtures.net import free_port, wait_until
from tests.fixtures.pgbackup import PgCli
from tests.fixtures.postgres import PgCluster, chown_to_pg
from tests.integration.postgres.test_pg_backup_restore import psql, stop


def _fingerprint(root: Path) -> dict[str, tuple[int, int, int]]:
    """Every entry below `root` with its mode, size and mtime (not following links)."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            st = os.lstat(os.path.join(dirpath, name))
            out[os.path.relpath(os.path.join(dirpath, name), root)] = (st.st_mode, st.st_size, st.st_mtime_ns)
    st = os.lstat(root)
    out["."] = (st.st_mode, 0, st.st_mtime_ns)
    return out


def test_pg_wal_link_is_restored_as_a_directory_and_the_original_wal_is_untouched() -> None:
    home = Path(tempfile.mkdtemp(prefix="recoverctl-pgwal-"))
    os.chmod(home, 0o755)
    cli = PgCli(home)
    pg = PgCluster()
    wal = home / "wal_orig"  # production's WAL "disk"
    wal.mkdir()
    chown_to_pg(wal)
    outside = home / "outside.conf"
    outside.write_text("# a config file kept outside the data directory\n")
    target, target2 = home / "restored", home / "restored2"
    try:
        pg.initdb(f"archive_mode = on\narchive_command = '{cli.archive_command('main')}'\n", waldir=wal)
        assert os.readlink(pg.data_dir / "pg_wal") == str(wal)
        (pg.data_dir / "linked.conf").symlink_to(outside)
        cli.write_config({"main": pg.source_config()})
        cli("init", check=0)
        pg.start()
        pg.psql("create table t(id int, note text)")
        pg.psql("insert into t select g, 'in_backup' from generate_series(1, 100) g")
        cli("--json", "backup", "postgres", "--type", "full", check=0)
        pg.psql("insert into t select g, 'after_backup' from generate_series(101, 150) g")
        pg.archive_current_wal()
        pg.stop()
        # The detached WAL pusher of the source notices the stop within a second and removes its
        # FIFO from pg_wal; from then on nothing has a reason to touch the original WAL directory.
        wait_until(
            lambda: not list(wal.glob(".recoverctl-pushed/*/.pusher.requests")),
            timeout=30,
            what="pusher exit",
        )
        before = _fingerprint(wal)
        assert any(name.startswith("0000") for name in before)

        port = free_port()
        out = cli("--json", "restore", "postgres", "--target-dir", str(target), "--to-latest", "--start",
                  "--port", str(port), check=0).json()  # fmt: skip
        try:
            assert psql(port, "select note, count(*) from t group by note order by note") == [
                "after_backup|50",
                "in_backup|100",
            ]
            restored_wal = target / "pg_wal"
            assert restored_wal.is_dir() and not restored_wal.is_symlink()
            assert out["wal_dir"] == str(restored_wal)
            assert any(n.startswith("0000") for n in os.listdir(restored_wal))  # the server's WAL is here
            assert out["links_skipped"] == [{"path": "/linked.conf", "target": str(outside)}]
            assert not os.path.lexists(target / "linked.conf")
        finally:
            stop(target)
        assert _fingerprint(wal) == before

        # --wal-dir: the WAL goes where the user says, linked by recoverctl; production's WAL
        # directory (not empty) is refused like a tablespace directory in use.
        refused = cli("--json", "restore", "postgres", "--target-dir", str(target2), "--wal-dir", str(wal),
                      check=2).error_json()  # fmt: skip
        assert "not empty" in refused["message"] and not target2.exists()
        inside = cli("--json", "restore", "postgres", "--target-dir", str(target2), "--wal-dir",
                     str(target2 / "w"), check=2).error_json()  # fmt: skip
        assert "overlaps the target directory" in inside["message"]
        new_wal = home / "wal_new"
        plan = cli("--json", "restore", "postgres", "--target-dir", str(target2), "--wal-dir", str(new_wal),
                   "--dry-run", check=0).json()  # fmt: skip
        assert plan["dry_run"] is True and plan["wal_dir"] == str(new_wal) and not new_wal.exists()
        out = cli("--json", "restore", "postgres", "--target-dir", str(target2), "--wal-dir", str(new_wal),
                  "--to-latest", check=0).json()  # fmt: skip
        assert os.readlink(target2 / "pg_wal") == str(new_wal) and out["wal_dir"] == str(new_wal)
        assert (new_wal / "archive_status").is_dir()
        assert _fingerprint(wal) == before

        # A drill of this source works in its own workspace and leaves the original WAL alone.
        drill = cli.sql_drill("wal", "select count(*) from t", "== 150")
        assert drill["verdict"] == "pass", drill
        assert _fingerprint(wal) == before
    finally:
        stop(target)
        pg.destroy()
        shutil.rmtree(home, ignore_errors=True)
