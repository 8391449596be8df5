"""Page-level incrementals from WAL against a real cluster: a page incremental restores to the same
database as a full backup taken at (nearly) the same point, checked by pg_checksums, pg_amcheck
and a checksum of every table; without the WAL it falls back to reading whole files and says why.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.net import free_port, wait_until
from tests.fixtures.pgbackup import PgCli
from tests.fixtures.postgres import BIN_DIR, PgCluster, _as_pg_user, chown_to_pg
from tests.integration.postgres.test_pg_backup_restore import Env as BackupEnv
from tests.integration.postgres.test_pg_backup_restore import psql, stop


class Env(BackupEnv):
    def backup(self, kind: str) -> dict[str, Any]:
        out: dict[str, Any] = self.cli("--json", "backup", "postgres", "--type", kind, check=0).json()
        return out

    def snapshot_metadata(self, snapshot_id: str) -> dict[str, Any]:
        for s in self.cli("--json", "snapshots", check=0).json():
            if s["id"] == snapshot_id:
                md: dict[str, Any] = s["metadata"]
                return md
        raise AssertionError(f"snapshot {snapshot_id} not listed")


@contextmanager
def _archiving_cluster(prefix: str, *, checksums: bool, scale: int) -> Iterator[Env]:
    """Yield an Env: a started cluster archiving into its own repository (source `main`,
    page_incremental on) with pgbench tables of `scale`; torn down with every restored server."""
    home = Path(tempfile.mkdtemp(prefix=f"recoverctl-{prefix}-"))
    os.chmod(home, 0o755)
    cli = PgCli(home)
    pg = PgCluster(checksums=checksums)
    try:
        pg.initdb(f"archive_mode = on\narchive_command = '{cli.archive_command('main')}'\n")
        # `on`: this small cluster's WAL is as large as the files it touched, so `auto` would read
        # them whole (test_auto_decodes_only_when_the_wal_is_well_under_the_modified_files).
        cli.write_config({"main": {**pg.source_config(), "page_incremental": "on"}})
        cli("init", check=0)
        pg.start()
        subprocess.run(
            _as_pg_user([str(BIN_DIR / "pgbench"), "-i", "-s", str(scale), "-q", "-h", "127.0.0.1",
                         "-p", str(pg.port), "-U", "postgres", "postgres"]),
            check=True, capture_output=True,
        )  # fmt: skip
        yield Env(cli, pg)
    finally:
        for d in home.glob("restore*"):
            stop(d)
        pg.destroy()
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    with _archiving_cluster("pageincr", checksums=True, scale=3) as e:
        yield e


_USER_TABLES = (
    "select format('%I.%I', schemaname, tablename) from pg_tables "
    "where schemaname not in ('pg_catalog', 'information_schema') order by 1"
)


_TABLE_MD5 = "select md5(coalesce(string_agg(x::text, ',' order by x::text), '')) from {} x"


def _database_state(port: int) -> dict[str, str]:
    """Return an md5 of the ordered rows of every user table in every database, by db.table."""
    state: dict[str, str] = {}
    for db in psql(port, "select datname from pg_database where datallowconn order by 1"):
        tables = psql(port, _USER_TABLES, db)
        for t in tables:
            rows = psql(port, _TABLE_MD5.format(t), db)
            state[f"{db}.{t}"] = rows[0]
    return state


def _restore_and_check(env: Env, snapshot_id: str, lsn: str, *, checksums: bool = True) -> dict[str, str]:
    """Restore `snapshot_id` on its own, replay to `lsn`, check it with pg_amcheck, stop it cleanly
    and (with `checksums`) check every page with pg_checksums; return the table checksums."""
    target, port = env.target(), free_port()
    env.cli("restore", "postgres", "--target-dir", str(target), "--snapshot", snapshot_id, "--to-lsn", lsn,
            "--start", "--port", str(port), check=0)  # fmt: skip
    try:
        state = _database_state(port)
        amcheck = subprocess.run(
            [str(BIN_DIR / "pg_amcheck"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "--all",
             "--install-missing", "--heapallindexed", "--rootdescend"],
            capture_output=True, text=True,
        )  # fmt: skip
        assert amcheck.returncode == 0, amcheck.stdout + amcheck.stderr
    finally:
        stop(target, "fast")
    if checksums:
        check = subprocess.run(_as_pg_user([str(BIN_DIR / "pg_checksums"), "--check", "-D", str(target)]),
                               capture_output=True, text=True)  # fmt: skip
        assert check.returncode == 0, check.stdout + check.stderr
        assert "Bad checksums:  0" in check.stdout
    return state


def test_page_incremental_restores_the_same_database_as_a_full_backup(env: Env) -> None:
    pg = env.pg
    pg.psql("create table doomed as select g as id from generate_series(1, 5000) g")
    pg.psql(
        "create table shrinking as select g as id, repeat('x', 200) as pad from generate_series(1, 20000) g"
    )
    parent = env.backup("full")
    assert env.snapshot_metadata(parent["snapshot_id"])["page_incremental"]["mode"] == "full"

    # 1 % scattered update, a truncation by vacuum, a new table, a dropped table, new databases
    pg.psql("update pgbench_accounts set abalance = abalance + 7 where aid % 100 = 42")
    pg.psql("delete from shrinking where id > 10000")
    pg.psql("vacuum shrinking")
    pg.psql("truncate pgbench_history")
    pg.psql("create table fresh as select g as id, md5(g::text) as v from generate_series(1, 3000) g")
    pg.psql("drop table doomed")
    pg.psql("create database copied strategy file_copy")
    pg.psql("create database logged strategy wal_log")
    pg.psql("create table kept(id int primary key, v text)", dbname="copied")
    pg.psql("insert into kept select g, md5(g::text) from generate_series(1, 500) g", dbname="copied")

    inc = env.backup("incremental")
    assert inc["type"] == "incremental" and inc["parent"] == parent["snapshot_id"]
    full = env.backup("full")
    pg.psql("create table marker(at text)")
    lsn = pg.psql("select pg_current_wal_lsn()")
    env.pg.archive_current_wal()

    page = env.snapshot_metadata(inc["snapshot_id"])["page_incremental"]
    print("page incremental", page, "bytes_read", inc["bytes_read"], "full read", full["bytes_read"])
    assert page["mode"] == "page" and page["reason"] is None
    assert page["files_paged"] > 0 and page["chunks_kept"] > 0 and page["changed_blocks"] > 0
    whole = page["whole_file_reads"]
    # the new databases' files and the new table are new; the vacuumed table shrank
    assert whole["truncated"] > 0 and whole["new_file"] > 0 and whole["map_fork"] > 0
    # a 1 % scattered update touches most 16-page chunks of pgbench_accounts: the kept chunks
    # are those of the tables it left alone
    assert inc["bytes_read"] < full["bytes_read"]
    assert inc["checksum_errors"] == [] and inc["pages_checked"] > 0

    from_inc = _restore_and_check(env, inc["snapshot_id"], lsn)
    from_full = _restore_and_check(env, full["snapshot_id"], lsn)
    assert from_inc == from_full
    assert "copied.public.kept" in from_inc and "postgres.public.fresh" in from_inc
    assert "postgres.public.doomed" not in from_inc


def test_missing_wal_falls_back_to_whole_files_and_says_why(env: Env) -> None:
    pg, cli = env.pg, env.cli
    parent = env.backup("full")
    start_segment = env.snapshot_metadata(parent["snapshot_id"])["start_segment"]
    pg.psql("update pgbench_accounts set abalance = abalance - 1 where aid % 100 = 3")
    for _ in range(2):
        env.pg.archive_current_wal()
        pg.psql("checkpoint")
    (cli.repository / "wal" / "main" / start_segment[:8] / start_segment).unlink()
    (pg.data_dir / "pg_wal" / start_segment).unlink(missing_ok=True)

    inc = env.backup("incremental")
    page = env.snapshot_metadata(inc["snapshot_id"])["page_incremental"]
    assert page["mode"] == "file" and page["reason"] == "wal_unavailable"
    assert start_segment in page["detail"]
    assert page["whole_file_reads"]["wal_unavailable"] > 0 and page["chunks_kept"] == 0
    pg.psql("create table after_fallback(at text)")  # WAL past the backup, so a switch archives it
    lsn = pg.psql("select pg_current_wal_lsn()")
    env.pg.archive_current_wal()
    state = _restore_and_check(env, inc["snapshot_id"], lsn)
    assert "postgres.public.pgbench_accounts" in state


def test_auto_decodes_only_when_the_wal_is_well_under_the_modified_files(env: Env) -> None:
    pg, cli = env.pg, env.cli
    for mode in ("auto", "off"):
        cli.write_config({"main": {**pg.source_config(), "page_incremental": mode}})
        env.backup("full")
        # A handful of rows in the big table: little WAL against a whole modified file.
        pg.psql("update pgbench_accounts set abalance = abalance + 1 where aid in (7, 70007, 150007)")
        pg.psql("checkpoint")
        few = env.snapshot_metadata(env.backup("incremental")["snapshot_id"])["page_incremental"]
        if mode == "off":
            assert few["mode"] == "file" and few["reason"] == "configured_off"
            continue
        assert few["mode"] == "page" and few["chunks_kept"] > 0, few
        # A scattered update logs about as much WAL as the files it touched: reading them is cheaper.
        pg.psql("update pgbench_accounts set abalance = abalance + 1 where aid % 100 = 5")
        pg.psql("checkpoint")
        wide = env.snapshot_metadata(env.backup("incremental")["snapshot_id"])["page_incremental"]
        assert wide["mode"] == "file" and wide["reason"] == "wal_not_smaller", wide
        assert "of WAL to decode against" in wide["detail"]
    cli.write_config({"main": {**pg.source_config(), "page_incremental": "on"}})


def _switch_timeline(pg: PgCluster) -> None:
    """Stop `pg` cleanly and start it in archive recovery with nothing to fetch: it replays pg_wal,
    promotes onto the next timeline and archives that timeline's history file."""
    pg.stop("fast")
    (pg.data_dir / "recovery.signal").touch()
    chown_to_pg(pg.data_dir / "recovery.signal")
    # On the command line, not in postgresql.auto.conf: the backups copy that file.
    subprocess.run(
        _as_pg_user([str(BIN_DIR / "pg_ctl"), "-D", str(pg.data_dir), "-l", str(pg.base / "server.log"),
                     "-o", "-c restore_command=false", "-w", "start"]),
        check=True, capture_output=True,
    )  # fmt: skip
    promoted = "select not pg_is_in_recovery() and timeline_id = 2 from pg_control_checkpoint()"
    wait_until(lambda: pg.psql(promoted) == "t", timeout=60, what="promotion onto timeline 2")


@pytest.fixture(scope="module")
def switching() -> Iterator[Env]:
    """A cluster of its own: the timeline switch would leave the shared `env` on timeline 2."""
    with _archiving_cluster("pageincr-tli", checksums=True, scale=1) as e:
        yield e


def test_a_timeline_switch_reads_whole_files_and_restores(switching: Env) -> None:
    pg, cli = switching.pg, switching.cli
    parent = switching.backup("full")
    assert switching.snapshot_metadata(parent["snapshot_id"])["timeline"] == 1
    pg.psql("update pgbench_accounts set abalance = abalance + 3 where aid % 100 = 17")
    _switch_timeline(pg)
    history = cli.repository / "wal" / "main" / "00000002" / "00000002.history"
    wait_until(history.is_file, timeout=60, what="00000002.history archived")
    pg.psql("update pgbench_accounts set abalance = abalance + 5 where aid % 100 = 71")

    inc = switching.backup("incremental")
    assert inc["type"] == "incremental" and inc["parent"] == parent["snapshot_id"]
    md = switching.snapshot_metadata(inc["snapshot_id"])
    page = md["page_incremental"]
    assert md["timeline"] == 2
    assert page["mode"] == "file" and page["reason"] == "timeline_switch", page
    assert page["detail"] == "parent on timeline 1, now 2"
    assert page["chunks_kept"] == 0 and page["whole_file_reads"]["timeline_switch"] > 0
    pg.psql("create table after_switch(at text)")  # WAL past the backup, so a switch archives it
    lsn = pg.psql("select pg_current_wal_lsn()")
    pg.archive_current_wal()
    state = _restore_and_check(switching, inc["snapshot_id"], lsn)
    assert state == _database_state(pg.port)
    assert "postgres.public.after_switch" in state


@pytest.fixture(scope="module")
def unchecked() -> Iterator[Env]:
    """A cluster without data checksums (wal_log_hints off, the default)."""
    with _archiving_cluster("pageincr-nosum", checksums=False, scale=1) as e:
        yield e


def _pages(path: Path) -> list[str]:
    """Return the md5 of each 8 KiB page of a relation file."""
    data = path.read_bytes()
    return [hashlib.md5(data[i : i + 8192]).hexdigest() for i in range(0, len(data), 8192)]


def test_hint_bits_unlogged_without_checksums_reads_whole_files(unchecked: Env) -> None:
    pg, cli = unchecked.pg, unchecked.cli
    assert pg.psql("show data_checksums") == "off" and pg.psql("show wal_log_hints") == "off"
    unchecked.backup("full")
    pg.psql("update pgbench_accounts set abalance = abalance + 9 where aid % 100 = 29")
    inc = unchecked.backup("incremental")
    page = unchecked.snapshot_metadata(inc["snapshot_id"])["page_incremental"]
    assert page["mode"] == "file" and page["reason"] == "hint_bits_not_logged", page
    assert page["chunks_kept"] == 0 and page["whole_file_reads"]["hint_bits_not_logged"] > 0
    assert page["hints_logged"] is False
    pg.psql("create table after_hints(at text)")
    lsn = pg.psql("select pg_current_wal_lsn()")
    pg.archive_current_wal()
    state = _restore_and_check(unchecked, inc["snapshot_id"], lsn, checksums=False)
    # Reading every table sets the hint bits of the updated rows' new versions, unlogged.
    assert state == _database_state(pg.port)

    pg.append_conf("wal_log_hints = on")
    pg.stop("fast")
    pg.start()
    # The WAL since the parent only says wal_log_hints is on now; it does not name the pages
    # whose hint bits changed while it was off, so keeping the parent's copies would not give
    # the pages a full backup reads.
    first = unchecked.backup("incremental")
    page = unchecked.snapshot_metadata(first["snapshot_id"])["page_incremental"]
    assert page["mode"] == "file" and page["reason"] == "hint_bits_not_logged", page
    assert page["detail"] == "wal_log_hints was off when the parent backup started"
    assert page["hints_logged"] is True
    pg.psql("checkpoint")
    rel = pg.psql("select pg_relation_filepath('pgbench_accounts')")
    target = unchecked.target()
    cli("restore", "postgres", "--target-dir", str(target), "--snapshot", first["snapshot_id"], check=0)
    assert _pages(target / rel) == _pages(pg.data_dir / rel)  # nothing wrote since the backup

    pg.psql("update pgbench_accounts set abalance = abalance + 9 where aid % 100 = 61")
    logged = unchecked.snapshot_metadata(unchecked.backup("incremental")["snapshot_id"])["page_incremental"]
    assert logged["mode"] == "page" and logged["reason"] is None, logged
    assert logged["chunks_kept"] > 0


def test_a_chain_of_page_patches_restores_the_same_database_as_a_full_backup(env: Env) -> None:
    """Sparse changes are stored as page patches over the parent's chunks; a second incremental
    patches the same chunks again (its pages with the parent's), carries untouched patches, and
    stores a chunk whole again once a quarter of it would be patched."""
    pg = env.pg
    env.backup("full")
    pg.psql("update pgbench_accounts set abalance = abalance + 1 where aid % 10007 = 11")
    first = env.backup("incremental")
    one = env.snapshot_metadata(first["snapshot_id"])["page_incremental"]
    assert one["mode"] == "page" and one["chunks_patched"] > 0, one
    # at most a quarter of a chunk's 16 pages each: the rest of the chunk is not read
    assert 0 < one["pages_patched"] <= 4 * one["chunks_patched"]

    # the rows next to the first ones (same pages: the patches grow), other chunks, and a run of
    # rows on consecutive pages (more than 4 pages of one chunk: stored whole again)
    pg.psql("update pgbench_accounts set abalance = abalance + 1 where aid % 10007 = 12")
    pg.psql("update pgbench_accounts set abalance = abalance + 1 where aid % 7919 = 5")
    pg.psql("update pgbench_accounts set abalance = abalance + 1 where aid between 100000 and 100700")
    second = env.backup("incremental")
    assert second["parent"] == first["snapshot_id"]
    two = env.snapshot_metadata(second["snapshot_id"])["page_incremental"]
    assert two["mode"] == "page" and two["chunks_patched"] > 0 and two["chunks_read"] > 0, two
    print("patched incrementals", one, first["bytes_read"], two, second["bytes_read"])
    assert second["checksum_errors"] == [] and second["pages_checked"] > 0

    full = env.backup("full")
    pg.psql("create table after_patches(at text)")
    lsn = pg.psql("select pg_current_wal_lsn()")
    env.pg.archive_current_wal()
    from_patches = _restore_and_check(env, second["snapshot_id"], lsn)
    assert from_patches == _restore_and_check(env, full["snapshot_id"], lsn)
    assert "postgres.public.after_patches" in from_patches
