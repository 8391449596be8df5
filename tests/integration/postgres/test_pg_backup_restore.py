"""Physical backups, WAL archiving and point-in-time restores of a real cluster, end to end.

One archiving cluster serves the whole module (initdb is the slow part); each test leaves it
usable for the next. Restored servers run on their own ports and are stopped by the tests.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from recoverctl.catalog import Catalog
from recoverctl.catalog import tables as t
from tests.fixtures.net import free_port, wait_until
from tests.fixtures.pgbackup import PgCli
from tests.fixtures.postgres import BIN_DIR, PgCluster, _as_pg_user


class Env:
    def __init__(self, cli: PgCli, pg: PgCluster):
        self.cli = cli
        self.pg = pg
        self.n = 0

    def target(self) -> Path:
        self.n += 1
        return self.cli.home / f"restore{self.n}"

    def restore_and_query(
        self, *args: str, sql: str = "select note from marks order by id"
    ) -> tuple[dict[str, Any], list[str]]:
        target = self.target()
        port = free_port()
        out = self.cli("--json", "restore", "postgres", "--target-dir", str(target), *args, "--start",
                       "--port", str(port), check=0).json()  # fmt: skip
        print("restore", args, out["phases"])
        assert not (target / "pg_wal" / ".recoverctl-prefetch").exists(), "WAL fetcher spool left behind"
        try:
            rows = psql(port, sql)
        finally:
            stop(target)
        return out, rows

    def archive_current(self) -> None:
        """Switch WAL and wait until the segment holding everything so far is archived."""
        seg = self.pg.psql("select pg_walfile_name(pg_current_wal_lsn())")
        self.pg.psql("select pg_switch_wal()")
        wait_until(
            lambda: self.pg.psql("select coalesce(last_archived_wal, '') from pg_stat_archiver") >= seg,
            timeout=60,
            what=f"segment {seg} archived",
        )


def psql(port: int, sql: str, db: str = "postgres") -> list[str]:
    r = subprocess.run(
        [str(BIN_DIR / "psql"), "-X", "-A", "-t", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres",
         "-d", db,
         "-c", sql],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return [line for line in r.stdout.splitlines() if line]


def stop(data_dir: Path, mode: str = "immediate") -> None:
    if (data_dir / "postmaster.pid").exists():
        ctl = [str(BIN_DIR / "pg_ctl"), "-D", str(data_dir), "-m", mode, "-w", "stop"]
        subprocess.run(_as_pg_user(ctl),
                       capture_output=True)  # fmt: skip


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    home = Path(tempfile.mkdtemp(prefix="recoverctl-pgenv-"))
    os.chmod(home, 0o755)
    cli = PgCli(home)
    pg = PgCluster()
    pg.initdb(f"archive_mode = on\narchive_command = '{cli.archive_command('main')}'\n")
    cli.write_config({"main": pg.source_config(count_tables=["public.marks"])})
    cli("init", check=0)
    pg.start()
    pg.psql("create table marks(id serial primary key, note text, at timestamptz default clock_timestamp())")
    subprocess.run(
        _as_pg_user([str(BIN_DIR / "pgbench"), "-i", "-s", "1", "-q", "-h", "127.0.0.1", "-p", str(pg.port),
                     "-U", "postgres", "postgres"]),
        check=True, capture_output=True,
    )  # fmt: skip
    yield Env(cli, pg)
    for d in home.glob("restore*"):
        stop(d)
    pg.destroy()
    shutil.rmtree(home, ignore_errors=True)


def test_full_backup_while_pgbench_writes_then_pitr_to_each_target(env: Env) -> None:
    pg, cli = env.pg, env.cli
    bench = subprocess.Popen(
        _as_pg_user([str(BIN_DIR / "pgbench"), "-T", "30", "-c", "2", "-h", "127.0.0.1", "-p", str(pg.port),
                     "-U", "postgres", "postgres"]),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        pg.psql("insert into marks(note) values ('in_backup')")
        full = cli(
            "--json", "backup", "postgres", "--type", "full", "--annotate", "reason=test", check=0
        ).json()
    finally:
        bench.terminate()
        bench.wait()
    print("full", full["duration_s"], full["wal_wait_s"])
    assert full["type"] == "full" and full["row_counts"] == {"public.marks": 1}
    assert full["annotations"] == {"reason": "test"} and full["checksum_errors"] == []
    assert full["pages_checked"] > 0 and full["wal_range"][0] <= full["wal_range"][1]

    pg.psql("insert into marks(note) values ('before_time')")
    t1 = pg.psql("select clock_timestamp()")
    pg.psql("insert into marks(note) values ('after_time')")
    pg.psql("insert into marks(note) values ('before_lsn')")
    lsn = pg.psql("select pg_current_wal_lsn()")
    pg.psql("insert into marks(note) values ('after_lsn')")
    pg.psql("insert into marks(note) values ('before_name')")
    cli("postgres", "restore-point", "rp1", check=0)
    pg.psql("insert into marks(note) values ('after_name')")
    xid = pg.psql("insert into marks(note) values ('at_xid') returning txid_current()").splitlines()[0]
    pg.psql("insert into marks(note) values ('after_xid')")
    env.archive_current()

    out, rows = env.restore_and_query("--to-time", t1)
    assert rows[-1] == "before_time" and "after_time" not in rows and "in_backup" in rows
    assert out["snapshot_id"] == full["snapshot_id"] and out["recovered_commit_ts"] is not None
    assert out["server"]["port"] and out["phases"]["recovery"] >= 0

    out, rows = env.restore_and_query("--to-lsn", lsn)
    assert rows[-1] == "before_lsn" and "after_lsn" not in rows

    out, rows = env.restore_and_query("--to-name", "rp1")
    assert rows[-1] == "before_name" and "after_name" not in rows

    out, rows = env.restore_and_query("--to-xid", xid)
    assert rows[-1] == "at_xid" and "after_xid" not in rows

    out, rows = env.restore_and_query("--to-latest")
    assert rows[-1] == "after_xid"
    assert out["recovered_lsn"] is not None


def test_check_sees_a_switched_segment_arrive(env: Env) -> None:
    out = env.cli("--json", "postgres", "check", "--timeout", "60", check=0).json()
    assert out["ok"] and (env.cli.repository / "wal" / "main" / out["segment"][:8] / out["segment"]).exists()
    status = env.cli("--json", "postgres", "status", check=0).json()["sources"][0]
    assert status["server_reachable"] and status["exposure_s"] is not None and status["within_target"]


def test_wrong_targets_exit_10_naming_what_exists(env: Env) -> None:
    r = env.cli(
        "--json", "restore", "postgres", "--target-dir", str(env.target()), "--to-name", "nope", check=10
    )
    assert "rp1" in r.error_json()["hint"]
    r = env.cli("--json", "restore", "postgres", "--target-dir", str(env.target()), "--to-time",
                "2001-01-01 00:00:00+00", check=10)  # fmt: skip
    assert "oldest" in r.error_json()["hint"]
    r = env.cli(
        "restore", "postgres", "--target-dir", str(env.target()), "--to-time", "2030-01-01 00:00", check=2
    )
    assert "time zone" in r.stderr


def test_incremental_restores_the_same_database_as_full(env: Env) -> None:
    pg, cli = env.pg, env.cli
    base = cli("--json", "backup", "postgres", "--type", "full", check=0).json()
    pg.psql("update pgbench_accounts set abalance = abalance + 1 where aid % 50 = 0")
    pg.psql("insert into marks(note) select 'bulk' from generate_series(1, 1000)")
    inc = cli("--json", "backup", "postgres", "--type", "incremental", check=0).json()
    assert inc["type"] == "incremental" and inc["parent"] == base["snapshot_id"]
    assert inc["files_unmodified"] > 0 and inc["bytes_read"] < base["bytes_read"]
    pg.psql("insert into marks(note) values ('after_inc')")
    lsn = pg.psql("select pg_current_wal_lsn()")
    env.archive_current()
    dumps = []
    for snap in (base["snapshot_id"], inc["snapshot_id"]):
        target = env.target()
        port = free_port()
        cli("restore", "postgres", "--target-dir", str(target), "--snapshot", snap, "--to-lsn", lsn,
            "--start",
            "--port", str(port), check=0)  # fmt: skip
        try:
            dumpall = [str(BIN_DIR / "pg_dumpall"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres"]
            dump = subprocess.run(dumpall,
                                  capture_output=True, text=True, check=True).stdout  # fmt: skip
        finally:
            stop(target)
        # pg_dump writes a random \restrict token per run (CVE-2025-8714): not database content
        dumps.append(
            "\n".join(
                line for line in dump.splitlines() if not line.startswith(("\\restrict", "\\unrestrict"))
            )
        )
    assert "after_inc" in dumps[0]
    assert dumps[0] == dumps[1]


def test_missing_wal_segment_is_named(env: Env) -> None:
    pg, cli = env.pg, env.cli
    cli("backup", "postgres", check=0)
    pg.psql("insert into marks(note) values ('gap1')")
    env.archive_current()
    seg = pg.psql("select pg_walfile_name(pg_current_wal_lsn())")
    pg.psql("insert into marks(note) values ('gap2')")
    env.archive_current()
    pg.psql("insert into marks(note) values ('gap3')")
    env.archive_current()
    victim = cli.repository / "wal" / "main" / seg[:8] / seg
    assert victim.exists()
    victim.unlink()
    r = cli("--json", "restore", "postgres", "--target-dir", str(env.target()), "--to-latest", check=13)
    assert seg in r.error_json()["message"]


def test_wal_expire_keeps_what_the_oldest_backup_needs(env: Env) -> None:
    snaps = [s for s in env.cli("--json", "snapshots", check=0).json() if s["kind"] == "postgres"]
    oldest = min(s["metadata"]["start_segment"] for s in snaps)
    plan = env.cli("--json", "wal", "expire", "--dry-run", check=0).json()["sources"][0]
    assert plan["oldest_needed"] == oldest
    assert plan["removed"] and all(name[8:24] < oldest[8:] for name in plan["removed"])
    # prune expires the same WAL under its exclusive lock
    pruned = env.cli("--json", "prune", "--dry-run", check=0).json()["wal"]
    assert pruned == [plan]
    env.cli("prune", check=0)
    left = sorted(p.name for p in (env.cli.repository / "wal" / "main" / oldest[:8]).iterdir())
    assert left[0][8:] >= oldest[8:]


def test_killed_backup_writes_no_snapshot_and_next_backup_works(env: Env) -> None:
    cli, pg = env.cli, env.pg
    before = cli("--json", "snapshots", check=0).json()
    # With the archiver failing, the backup cannot end (it waits for its stop segment), so the
    # kill lands mid-backup however slow this machine is; a live backup of this small cluster
    # is over in a fraction of a second, too fast to catch reliably.
    # The archive_command (run as postgres) cannot write into the repository's WAL directories.
    wal_dirs = [cli.repository / "wal", *(p for p in (cli.repository / "wal").rglob("*") if p.is_dir())]
    failed = int(pg.psql("select failed_count from pg_stat_archiver"))
    for d in wal_dirs:
        d.chmod(0o555)
    pg.psql("create table if not exists kill_marks(at timestamptz); insert into kill_marks values (now())")
    pg.psql("select pg_switch_wal()")
    wait_until(
        lambda: int(pg.psql("select failed_count from pg_stat_archiver")) > failed,
        timeout=60, what="the archiver to fail",
    )  # fmt: skip
    proc = subprocess.Popen(cli.argv("backup", "postgres"), env=cli.env, cwd=cli.home, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        # The backup's last statements before it waits for the WAL read the archiver's state.
        wait_until(
            lambda: pg.psql("select count(*) from pg_stat_activity where application_name = 'recoverctl' "
                            "and query like '%archive%'") != "0",
            timeout=120, interval=0.05, what="the backup to wait for its WAL",
        )  # fmt: skip
        assert proc.poll() is None, "the backup ended although its WAL cannot be archived"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        for d in wal_dirs:
            d.chmod(0o755)
    wait_until(
        lambda: pg.psql("select count(*) from pg_stat_activity where application_name = 'recoverctl'") == "0",
        what="the killed backup's session to end",
    )
    assert len(cli("--json", "snapshots", check=0).json()) == len(before)
    cli("backup", "postgres", check=0)


def test_logical_dump_and_single_table_restore(env: Env) -> None:
    cli, pg = env.cli, env.pg
    dump = cli("--json", "backup", "postgres", "--logical", check=0).json()
    assert dump["bytes"] > 0 and dump["database"] == "postgres"
    pg.psql("create database copy")
    cli(
        "restore",
        "postgres",
        "--logical",
        dump["snapshot_id"],
        "--database",
        "copy",
        "--table",
        "marks",
        check=0,
    )
    assert pg.psql("select count(*) from marks", dbname="copy") == pg.psql("select count(*) from marks")
    assert pg.psql("select count(*) from pg_tables where tablename like 'pgbench%'", dbname="copy") == "0"


def test_corrupted_page_is_named_and_exits_3(env: Env) -> None:
    pg, cli = env.pg, env.cli
    pg.psql("create table victim as select g, md5(g::text) from generate_series(1, 5000) g; checkpoint")
    rel = pg.psql("select pg_relation_filepath('victim')")
    with open(pg.data_dir / rel, "r+b") as f:
        f.seek(2 * 8192 + 3000)
        f.write(b"\xff\xfe\xfd\xfc")
    # The backup process never loads SQLAlchemy (~30 MiB): its catalog writes go through the
    # forked recorder, and still all arrive: the run, the snapshot, the audit entry, the event.
    probe = (
        "import atexit, os, sys; pid = os.getpid(); "
        "atexit.register(lambda: os.getpid() == pid and print('SQLALCHEMY', 'sqlalchemy' in sys.modules)); "
        "from recoverctl.cli.main import main; main(sys.argv[1:])"
    )
    argv = cli.argv("--json", "backup", "postgres", "--type", "full")
    at = argv.index("recoverctl") - 1  # the python -m recoverctl part
    argv[at : at + 2] = ["-c", probe]
    r = subprocess.run(argv, capture_output=True, text=True, env=cli.env, cwd=cli.home, timeout=300)
    assert r.returncode == 3, r.stderr
    assert "SQLALCHEMY False" in r.stdout
    err = json.loads(r.stderr.strip().splitlines()[-1])
    assert f"{rel} block 2" in err["message"]
    assert {"file": rel, "block": 2} in err["details"]["summary"]["checksum_errors"]
    catalog = Catalog(cli.env["RECOVERCTL_CATALOG"], migrate=False)
    try:
        with catalog.begin() as conn:
            run = conn.execute(sa.select(t.runs).order_by(t.runs.c.id.desc())).first()
            audit = conn.execute(sa.select(t.audit_log).order_by(t.audit_log.c.id.desc())).first()
            event = conn.execute(sa.select(t.events).order_by(t.events.c.id.desc())).first()
            snapshot = conn.execute(sa.select(t.snapshots).where(t.snapshots.c.id == run.snapshot_id)).first()
    finally:
        catalog.close()
    assert run is not None and (run.kind, run.status) == ("backup-postgres", "partial")
    assert snapshot is not None
    assert audit is not None and (audit.action, audit.outcome) == ("backup.postgres", "partial")
    assert event is not None and (event.kind, event.severity) == ("backup.checksum_failure", "critical")
    assert event.details["checksum_errors"] == [{"file": rel, "block": 2}]
