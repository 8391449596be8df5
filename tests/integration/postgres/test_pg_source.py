"""The PostgreSQL source pieces against real clusters: checksums, backup session, setup, restore points."""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest

from recoverctl.config import PostgresSource
from recoverctl.sources.postgres.checksum import BLCKSZ, PageValidator
from recoverctl.sources.postgres.connection import connect, find_bin_dir, server_major
from recoverctl.sources.postgres.files import walk_data_dir
from recoverctl.sources.postgres.session import BackupSession
from recoverctl.sources.postgres.walnames import parse_lsn
from tests.fixtures.net import wait_until
from tests.fixtures.pgbackup import PgCli
from tests.fixtures.postgres import PgCluster


@pytest.fixture(scope="module")
def pg() -> Iterator[PgCluster]:
    """One cluster for the module (initdb dominates the cost); tests leave it running and usable."""
    cluster = PgCluster()
    cluster.initdb()
    cluster.start()
    yield cluster
    cluster.destroy()


def _source(pg: PgCluster) -> PostgresSource:
    return PostgresSource.model_validate(pg.source_config())


def _validate(pg: PgCluster, start_lsn: int) -> dict[str, list[int]]:
    bad = {}
    for f in walk_data_dir(pg.data_dir):
        if f.is_relation and f.size:
            v = PageValidator(f.first_block, start_lsn)
            with open(pg.data_dir / f.path, "rb") as fh:
                while chunk := fh.read(100_000):  # not page aligned on purpose
                    v.feed(chunk)
            if v.suspects:
                bad[f.path] = v.recheck(str(pg.data_dir / f.path))
    return bad


def test_page_checksums_match_a_real_cluster_and_find_a_corrupted_block(pg: PgCluster) -> None:
    pg.psql(
        "create table t(i int, s text); insert into t select g, md5(g::text) from generate_series(1, 20000) g"
    )
    rel = pg.psql("select pg_relation_filepath('t')")
    pg.psql("checkpoint")
    assert _validate(pg, 1 << 62) == {}
    # corrupt the file under the running server: the clean page stays in shared buffers, and the
    # table is dropped below before anything could read the bad page back
    with open(pg.data_dir / rel, "r+b") as f:
        f.seek(3 * BLCKSZ + 4000)
        f.write(b"\xde\xad\xbe\xef")
    assert _validate(pg, 1 << 62) == {rel: [3]}
    # a page written after the backup started is WAL-protected: not reported
    with open(pg.data_dir / rel, "rb") as f:
        f.seek(3 * BLCKSZ)
        hi, lo = struct.unpack("<II", f.read(8))
    assert _validate(pg, ((hi << 32) | lo)) == {}
    pg.psql("drop table t")


def test_bin_dir_is_detected_from_the_server_version(pg: PgCluster) -> None:
    src = _source(pg).model_copy(update={"bin_dir": None})
    with connect(src, "main") as conn:
        assert server_major(conn) == 15
    assert (find_bin_dir(src, 15) / "pg_ctl").exists()


def test_backup_session_start_stop_and_abort_on_close(pg: PgCluster) -> None:
    src = _source(pg)
    conn = connect(src, "main")
    with BackupSession(conn) as s:
        start = s.start("t1")
        assert start.data_checksums and start.timeline == 1
        stop = s.stop()
    assert "START WAL LOCATION" in stop.backup_label
    assert parse_lsn(stop.lsn) > parse_lsn(start.lsn)
    assert stop.segment >= start.segment
    conn.close()

    # an exception inside the block ends the session: the server is no longer in backup mode
    conn = connect(src, "main")
    with pytest.raises(RuntimeError), BackupSession(conn) as s:
        s.start("t2")
        raise RuntimeError("boom")
    assert conn.closed
    with connect(src, "main") as c2, BackupSession(c2) as s2:
        s2.start("t3")
        s2.stop()


def test_killed_backup_process_leaves_no_backup_running(pg: PgCluster) -> None:
    code = textwrap.dedent(
        f"""
        import sys, time
        from recoverctl.config import PostgresSource
        from recoverctl.sources.postgres.connection import connect
        from recoverctl.sources.postgres.session import BackupSession
        src = PostgresSource.model_validate({pg.source_config()!r})
        s = BackupSession(connect(src, "main"))
        s.start("killed")
        print("started", flush=True)
        time.sleep(600)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "started"
        assert (
            pg.psql(
                "select count(*) from pg_stat_activity where backend_type = 'client backend' "
                "and application_name = 'recoverctl'"
            )
            == "1"
        )
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    wait_until(
        lambda: pg.psql("select count(*) from pg_stat_activity where application_name = 'recoverctl'") == "0",
        what="the killed backup's session to end",
    )
    with connect(_source(pg), "main") as conn, BackupSession(conn) as s:
        s.start("after-kill")
        s.stop()


def test_setup_shows_then_applies_and_says_restart(pg: PgCluster, pg_cli: PgCli) -> None:
    pg_cli.write_config({"main": pg.source_config()})
    refused = pg_cli("--json", "backup", "postgres", check=2).error_json()
    assert "archiving is not configured" in refused["message"]
    assert "archive_mode = 'on'" in refused["hint"] and "push --source main" in refused["hint"]
    assert "restart" in refused["hint"]
    shown = pg_cli("--json", "postgres", "setup", check=0).json()
    by_name = {s["name"]: s for s in shown["settings"]}
    assert by_name["archive_mode"]["change"] and by_name["archive_mode"]["restart"]
    assert not by_name["wal_level"]["change"]
    assert "push --source main" in by_name["archive_command"]["wanted"]
    assert pg.psql("show archive_command") in ("", "(disabled)")

    applied = pg_cli("--json", "postgres", "setup", "--apply", check=0).json()
    assert applied["applied"] and applied["restart_needed"]
    auto = (pg.data_dir / "postgresql.auto.conf").read_text()
    assert "archive_mode = 'on'" in auto and "push --source main" in auto
    text = pg_cli("postgres", "setup", check=0).stdout
    assert "restart" in text


def test_restore_point_is_recorded_with_lsn(pg: PgCluster, pg_cli: PgCli) -> None:
    pg_cli.write_config({"main": pg.source_config()})
    rp: dict[str, Any] = pg_cli("--json", "postgres", "restore-point", "before-release-1", check=0).json()
    assert rp["name"] == "before-release-1" and rp["timeline"] == 1
    assert parse_lsn(rp["lsn"]) <= parse_lsn(pg.psql("select pg_current_wal_lsn()"))
    import sqlite3

    rows = (
        sqlite3.connect(pg_cli.home / "catalog.db").execute("select name, lsn from restore_points").fetchall()
    )
    assert rows == [("before-release-1", rp["lsn"])]
    bad = pg_cli("--json", "postgres", "restore-point", "x" * 80, check=2)
    assert "63" in bad.error_json()["message"]
