"""`backup_from: standby` against a real primary and a streaming standby on a replication slot:
the data files are read on the standby, the primary only runs the backup start/stop; the
backup restores on its own and recovers past its end from the repository's WAL.

Read I/O is measured per server from /proc/PID/io of the postmaster and every process below it
(a reaped child's counts are added to its parent's, so short-lived ones are counted too).
`rchar` (bytes returned by read calls) is used rather than `read_bytes` (bytes fetched from the
block device), which stays near zero here because both clusters live in the page cache.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.net import free_port, wait_until
from tests.fixtures.pgbackup import PgCli
from tests.fixtures.postgres import BIN_DIR, PgCluster, _as_pg_user, make_standby
from tests.integration.postgres.test_pg_backup_restore import psql, stop

SLOT = "recoverctl_standby"
# A table checksum: equal on two servers only when every row is.
ACCOUNTS_SUM = "select md5(string_agg(aid || ':' || abalance, ',' order by aid)) from pgbench_accounts"


@dataclass
class Env:
    cli: PgCli
    pg: PgCluster
    standby: PgCluster

    def config(self, **standby: Any) -> None:
        """Write the config: source 'main' backs up from `standby` (default: the real standby)."""
        section = {"host": "127.0.0.1", "port": self.standby.port, "data_dir": str(self.standby.data_dir)}
        self.cli.write_config(
            {"main": self.pg.source_config(backup_from="standby", standby={**section, **standby})}
        )

    def snapshots(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = self.cli("--json", "snapshots", check=0).json()
        return out

    def caught_up(self) -> bool:
        lsn = self.pg.psql("select pg_current_wal_lsn()")
        return self.standby.psql(f"select pg_last_wal_replay_lsn() >= '{lsn}'") == "t"


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    home = Path(tempfile.mkdtemp(prefix="recoverctl-standby-"))
    os.chmod(home, 0o755)
    cli = PgCli(home)
    pg = PgCluster()
    pg.initdb(f"archive_mode = on\narchive_command = '{cli.archive_command('main')}'\n")
    cli.write_config({"main": pg.source_config()})
    cli("init", check=0)
    pg.start()
    pg.psql("create table marks(id serial primary key, note text)")
    bench = [str(BIN_DIR / "pgbench"), "-i", "-s", "15", "-q", "-h", "127.0.0.1", "-p", str(pg.port),
             "-U", "postgres", "postgres"]  # fmt: skip
    subprocess.run(_as_pg_user(bench), check=True, capture_output=True)
    pg.psql("vacuum analyze")
    standby = make_standby(pg, slot=SLOT)
    e = Env(cli, pg, standby)
    e.config()
    wait_until(e.caught_up, 60, what="the standby to catch up")
    yield e
    for d in home.glob("restore*"):
        stop(d)
    standby.destroy()
    pg.destroy()
    shutil.rmtree(home, ignore_errors=True)


def _rchar(pid: int | str) -> int:
    try:
        text = Path(f"/proc/{pid}/io").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return 0
    return next(int(line.split()[1]) for line in text.splitlines() if line.startswith("rchar:"))


def _tree(root: int) -> list[int]:
    """Return `root` and every process below it."""
    parents: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = Path(f"/proc/{d}/stat").read_text()
            except (FileNotFoundError, ProcessLookupError):
                continue
            parents[int(d)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, todo = [root], [root]
    while todo:
        pid = todo.pop()
        kids = [p for p, pp in parents.items() if pp == pid]
        found += kids
        todo += kids
    return found


def _role(pid: int) -> str:
    try:
        title = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return "other"
    return next(
        (r for r in ("archiver", "walsender") if title.startswith(b"postgres: " + r.encode())), "other"
    )


def server_reads(cluster: PgCluster) -> dict[str, int]:
    """Return the bytes read so far by the cluster's processes, by `archiver` (its archive_command
    children run for every WAL segment, backups or not), `walsender` (streaming to the standby)
    and `other` (every other process: backends, checkpointer, the postmaster and reaped ones)."""
    postmaster = int((cluster.data_dir / "postmaster.pid").read_text().splitlines()[0])
    reads = {"archiver": 0, "walsender": 0, "other": 0}
    for pid in _tree(postmaster):
        reads[_role(pid)] += _rchar(pid)
    return reads


def restore_at(env: Env, *args: str) -> tuple[dict[str, Any], Path, int]:
    target = env.cli.home / f"restore-{len(list(env.cli.home.glob('restore*')))}"
    port = free_port()
    out = env.cli("--json", "restore", "postgres", "--target-dir", str(target), *args, "--start",
                  "--port", str(port), check=0).json()  # fmt: skip
    return out, target, port


def test_standby_backup_reads_on_the_standby_and_restores_past_its_end(env: Env) -> None:
    pg, standby, cli = env.pg, env.standby, env.cli
    pg.psql("insert into marks(note) values ('before_backup')")
    assert cli("config", "check", check=0).stdout.strip().endswith("valid")
    plan = cli("--json", "backup", "postgres", "--dry-run", check=0).json()
    assert plan["backup_from"] == "standby" and plan["data_dir"] == str(standby.data_dir)
    text = cli("backup", "postgres", "--dry-run", check=0).stdout
    assert f"would back up main from standby 127.0.0.1:{standby.port} ({standby.data_dir})" in text
    wait_until(env.caught_up, 60, what="the standby to catch up")
    primary0, standby0, own0 = server_reads(pg), server_reads(standby), _rchar("self")
    full = cli("--json", "backup", "postgres", "--type", "full", check=0).json()
    # recoverctl ran as our child: its reads were added to ours when it was reaped.
    recoverctl = _rchar("self") - own0
    primary1, standby1 = server_reads(pg), server_reads(standby)
    primary = {k: primary1[k] - primary0[k] for k in primary0}
    standby_servers = sum(standby1.values()) - sum(standby0.values())
    standby_side = standby_servers + recoverctl
    print(f"read bytes (rchar) across the backup: primary {primary}, standby's servers {standby_servers}, "
          f"recoverctl on the standby's host {recoverctl}, data {full['bytes_total']}")  # fmt: skip
    assert full["backup_from"] == "standby" and full["standby_host"] == f"127.0.0.1:{standby.port}"
    assert full["checksum_errors"] == [] and full["pages_checked"] > 0
    assert recoverctl >= full["bytes_total"] * 0.9, "the data files were not read through recoverctl"
    # The walsender streams the tails of the two segments the backup's start and stop switch
    # (at most two segments: constant, whatever the data size): the primary's whole share.
    assert primary["walsender"] + primary["other"] < 0.1 * standby_side, (primary, standby_side)
    assert primary["other"] < 0.01 * standby_side, (primary, standby_side)
    snap = next(s for s in env.snapshots() if s["id"] == full["snapshot_id"])
    assert snap["metadata"]["backup_from"] == "standby"
    assert snap["metadata"]["standby_host"] == f"127.0.0.1:{standby.port}"
    assert snap["metadata"]["data_dir"] == str(standby.data_dir)

    pg.psql("update pgbench_accounts set abalance = abalance + aid where aid % 7 = 0")
    pg.psql("insert into marks(note) values ('after_backup')")
    expected = pg.psql(ACCOUNTS_SUM)
    t1 = pg.psql("select clock_timestamp()")
    pg.psql("update pgbench_accounts set abalance = 0 where aid % 5 = 0")
    pg.psql("insert into marks(note) values ('too_late')")
    pg.archive_current_wal()

    out, target, port = restore_at(env, "--to-time", t1)
    try:
        assert out["snapshot_id"] == full["snapshot_id"]
        assert psql(port, "select note from marks order by id") == ["before_backup", "after_backup"]
        assert psql(port, ACCOUNTS_SUM) == [expected]
        # promoted on its own: not a standby of the old primary
        assert psql(port, "select pg_is_in_recovery()") == ["f"]
        assert psql(port, "select count(*) from pg_stat_wal_receiver") == ["0"]
        assert not (target / "standby.signal").exists()
        assert "primary_conninfo" not in (target / "postgresql.auto.conf").read_text()
        assert psql(port, "select count(*) from pg_replication_slots") == ["0"]
    finally:
        stop(target)


def test_a_second_standby_backup_is_incremental_and_restores(env: Env) -> None:
    pg, cli = env.pg, env.cli
    pg.psql("update pgbench_accounts set abalance = abalance - 1 where aid < 50")
    wait_until(env.caught_up, 60, what="the standby to catch up")
    inc = cli("--json", "backup", "postgres", "--type", "incremental", check=0).json()
    assert inc["type"] == "incremental" and inc["backup_from"] == "standby"
    assert inc["files_unmodified"] > 0 and inc["bytes_read"] < inc["bytes_total"]
    expected = pg.psql(ACCOUNTS_SUM)
    pg.archive_current_wal()
    out, target, port = restore_at(env, "--to-latest")
    try:
        assert out["snapshot_id"] == inc["snapshot_id"]
        assert psql(port, ACCOUNTS_SUM) == [expected]
    finally:
        stop(target)


def _no_backup_running(pg: PgCluster) -> bool:
    return pg.psql("select count(*) from pg_stat_activity where application_name = 'recoverctl'") == "0"


def test_a_primary_named_as_standby_is_refused_and_nothing_is_written(env: Env) -> None:
    before = env.snapshots()
    try:
        env.config(port=env.pg.port, data_dir=str(env.pg.data_dir))
        r = env.cli("--json", "backup", "postgres")
        check = env.cli("config", "check")
    finally:
        env.config()
    assert r.code == 2, r.stderr
    assert "is not in recovery" in r.stderr and "it is a primary" in r.stderr
    assert check.code == 2 and "backup_from: standby cannot work" in check.stderr
    assert f"standby 127.0.0.1:{env.pg.port} of source 'main' is not in recovery" in check.stderr
    assert env.snapshots() == before


def test_a_standby_of_another_cluster_is_refused(env: Env) -> None:
    # a cluster of its own in standby mode: in recovery, with another system identifier
    other = PgCluster(name="other").initdb("max_wal_senders = 10\n")
    (other.data_dir / "standby.signal").touch()
    before = env.snapshots()
    try:
        other.start()
        assert other.psql("select pg_is_in_recovery()") == "t"
        env.config(port=other.port, data_dir=str(other.data_dir))
        r = env.cli("--json", "backup", "postgres")
    finally:
        env.config()
        other.destroy()
    assert r.code == 2, r.stderr
    assert "standby of another cluster" in r.stderr and "system identifier" in r.stderr
    assert env.snapshots() == before


def test_a_standby_that_never_catches_up_times_out_and_aborts_the_backup(env: Env) -> None:
    pg, standby = env.pg, env.standby
    before = env.snapshots()
    standby.psql("select pg_wal_replay_pause()")
    try:
        env.config(replay_wait="2s")
        r = env.cli("--json", "backup", "postgres")
    finally:
        standby.psql("select pg_wal_replay_resume()")
        env.config()
    assert r.code == 1, r.stderr
    assert "timeout" in r.stderr and "has not replayed" in r.stderr and "where the backup starts" in r.stderr
    assert "pg_is_wal_replay_paused" in r.stderr
    assert env.snapshots() == before
    # the primary's backup was aborted with the session
    wait_until(lambda: _no_backup_running(pg), 30, what="the backup session to end")


def test_a_corrupted_page_on_the_standby_is_named_and_exits_3(env: Env) -> None:
    pg, standby = env.pg, env.standby
    pg.psql("create table victim as select g, md5(g::text) from generate_series(1, 5000) g; checkpoint")
    wait_until(env.caught_up, 60, what="the standby to catch up")
    standby.psql("checkpoint")
    rel = pg.psql("select pg_relation_filepath('victim')")
    with open(standby.data_dir / rel, "r+b") as f:
        f.seek(2 * 8192 + 3000)
        f.write(b"\xff\xfe\xfd\xfc")
    r = env.cli("--json", "backup", "postgres", "--type", "full", check=3)
    err = r.error_json()
    assert f"{rel} block 2" in err["message"]
    assert {"file": rel, "block": 2} in err["details"]["summary"]["checksum_errors"]
    assert err["details"]["summary"]["backup_from"] == "standby"
