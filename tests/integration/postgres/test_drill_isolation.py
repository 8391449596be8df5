"""A drill's scratch cluster is a copy of production and must not act like it.

Real clusters on loopback: a publisher and a subscriber ("production", backed up by recoverctl
and drilled through the CLI), and a primary whose standby copy is drilled. The production
subscriber / standby is stopped before the drill, so any connection the publisher or primary
sees during the drill can only come from the scratch cluster.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from recoverctl.catalog import Catalog
from recoverctl.config import parse_config
from recoverctl.drill import engine
from recoverctl.drill.playbook import parse_playbook
from recoverctl.drill.scratch import DrillError, ScratchCluster
from recoverctl.sources.postgres.isolation import effective_setting
from recoverctl.sources.postgres.recovery import RecoveryTarget, recovery_settings, write_recovery_config
from tests.fixtures.drill_sources import BaseBackup, BaseBackupRestorer, drill_leftovers, make_archived_source
from tests.fixtures.net import free_port, wait_until
from tests.fixtures.pgbackup import PgCli
from tests.fixtures.postgres import BIN_DIR, OS_USER, PgCluster, chown_to_pg
from tests.integration.postgres.test_pg_backup_restore import psql, stop

pytestmark = pytest.mark.integration

# What the copy runs with, whatever production's configuration said.
SEALED_SETTINGS = (
    "select current_setting('listen_addresses'), current_setting('archive_mode'), "
    "current_setting('max_logical_replication_workers'), current_setting('primary_conninfo'), "
    "current_setting('primary_slot_name'), current_setting('ssl'), current_setting('recovery_end_command'), "
    "current_setting('external_pid_file'), current_setting('data_directory') like '%/recoverctl-drill-%/data'"
)
SEALED_VALUES = ["127.0.0.1", "off", "0", "", "", "off", "", "", True]


def _log_lines(cluster: PgCluster, marker: str) -> list[str]:
    log = cluster.base / "server.log"
    return [ln for ln in log.read_text(errors="replace").splitlines() if marker in ln]


def _slots(cluster: PgCluster) -> dict[str, str]:
    rows = cluster.psql(
        "select slot_name, coalesce(confirmed_flush_lsn, restart_lsn)::text, active "
        "from pg_replication_slots order by 1"
    )
    return {ln.split("|")[0]: ln for ln in rows.splitlines()}


@dataclass
class Replicated:
    cli: PgCli
    publisher: PgCluster
    subscriber: PgCluster
    scratch: Path
    rows: int


@pytest.fixture(scope="module")
def replicated() -> Iterator[Replicated]:
    """A publisher with two publications; a subscriber (source 'main', archiving through
    recoverctl, one full backup) subscribing to them from two databases; then stopped."""
    home = Path(tempfile.mkdtemp(prefix="recoverctl-seal-"))
    os.chmod(home, 0o755)
    cli = PgCli(home)
    scratch = home / "scratch"
    scratch.mkdir()
    chown_to_pg(scratch)
    pub = PgCluster(name="publisher")
    sub = PgCluster(name="subscriber")
    try:
        pub.initdb("wal_level = logical\nlog_connections = on\nlog_replication_commands = on\n")
        pub.start()
        for table in ("items", "other"):
            pub.psql(f"create table {table} (id int primary key, note text)")
            pub.psql(f"create publication pub_{table} for table {table}")
            pub.psql(f"insert into {table} select g, 'before' from generate_series(1, 100) g")
        sub.initdb(f"archive_mode = on\narchive_command = '{cli.archive_command('main')}'\n")
        cli.write_config({"main": sub.source_config(count_tables=["public.items"])})
        cli("init", check=0)
        sub.start()
        sub.psql("create database app2")
        conn = f"host=127.0.0.1 port={pub.port} user=postgres dbname=postgres"
        for db, table in (("postgres", "items"), ("app2", "other")):
            sub.psql(f"create table {table} (id int primary key, note text)", dbname=db)
            sub.psql(
                f"create subscription sub_{table} connection '{conn}' publication pub_{table}", dbname=db
            )
        for db, table in (("postgres", "items"), ("app2", "other")):
            wait_until(
                lambda db=db, table=table: sub.psql(f"select count(*) from {table}", dbname=db) == "100",
                timeout=60,
                what=f"initial sync of {table}",
            )
        cli("--json", "backup", "postgres", "--type", "full", check=0)
        sub.stop()
        wait_until(
            lambda: all(ln.endswith("|f") for ln in _slots(pub).values()) and len(_slots(pub)) == 2,
            timeout=60,
            what="the publisher's slots to go inactive",
        )
        # Something for a connecting apply worker to consume (and confirm, moving the slot).
        pub.psql("insert into items select g, 'after' from generate_series(101, 150) g")
        yield Replicated(cli, pub, sub, scratch, 100)
    finally:
        sub.destroy()
        pub.destroy()
        shutil.rmtree(home, ignore_errors=True)


def test_drill_of_a_subscriber_never_reaches_the_publisher(replicated: Replicated) -> None:
    r = replicated
    slots_before = _slots(r.publisher)
    assert set(slots_before) == {"sub_items", "sub_other"}
    connections_before = _log_lines(r.publisher, "connection received")
    playbook = r.cli.home / "seal.yaml"
    playbook.write_text(
        yaml.safe_dump(
            {
                "drill": {
                    "name": "seal",
                    "source": "main",
                    "recovery_point": "latest",
                    "amcheck": False,
                    "checks": [
                        {"name": "sealed settings", "sql": SEALED_SETTINGS, "expect": SEALED_VALUES},
                        {
                            "name": "subscriptions disabled and detached",
                            "sql": "select count(*), count(*) filter (where subenabled or subslotname "
                            "is not null) from pg_subscription",
                            "expect": [2, 0],
                        },
                        {
                            "name": "no apply worker",
                            "sql": "select count(*) from pg_stat_subscription where pid is not null",
                            "expect": 0,
                        },
                        {"sql": "select count(*) from items", "expect": r.rows},
                    ],
                    "targets": {"rto": "2h", "rpo": "1h"},
                    "where": {"temp_dir": str(r.scratch)},
                }
            }
        )
    )
    chown_to_pg(playbook)
    d = r.cli("--json", "drill", "run", str(playbook)).json()
    # During and after the drill: no new connection at the publisher, its slots did not move.
    assert _log_lines(r.publisher, "connection received") == connections_before
    assert _slots(r.publisher) == slots_before
    assert r.publisher.psql("select count(*) from pg_stat_replication") == "0"
    assert d["verdict"] == "pass", (d["reason"], d["checks"])
    assert d["details"]["detached_subscriptions"] == [
        {"database": "app2", "subscription": "sub_other", "slot_name": "sub_other"},
        {"database": "postgres", "subscription": "sub_items", "slot_name": "sub_items"},
    ]
    assert list(r.scratch.iterdir()) == [] and drill_leftovers(str(r.scratch)) == []


def test_restore_start_of_a_subscriber_never_reaches_the_publisher(replicated: Replicated) -> None:
    r = replicated
    slots_before = _slots(r.publisher)
    connections_before = _log_lines(r.publisher, "connection received")
    target, port = r.cli.home / "restored", free_port()
    r.cli(
        "--json", "restore", "postgres", "--target-dir", str(target), "--start", "--port", str(port), check=0
    )
    try:
        settings = psql(port, SEALED_SETTINGS.replace("'%/recoverctl-drill-%/data'", f"'{target}'"))
        workers = psql(port, "select count(*) from pg_stat_subscription where pid is not null")
    finally:
        stop(target)
    assert _log_lines(r.publisher, "connection received") == connections_before
    assert _slots(r.publisher) == slots_before
    assert settings == ["127.0.0.1|off|0|||off|||t"]
    assert workers == ["0"]


def _hostile_config(data_dir: Path, primary: PgCluster, marker: Path) -> None:
    """Make a restored copy's configuration as dangerous as production's can be: an `include`d file
    that streams from the primary, archives, runs commands at the end of recovery, points
    data_directory at production and writes production's external pid file."""
    (data_dir / "production.conf").write_text(
        f"primary_conninfo = 'host=127.0.0.1 port={primary.port} user=postgres application_name=copy'\n"
        "primary_slot_name = 'standby1'\n"
        "archive_mode = on\n"
        f"archive_command = 'touch {marker}.archive'\n"
        f"recovery_end_command = 'touch {marker}.recovery_end'\n"
        f"external_pid_file = '{primary.base}/external.pid'\n"
        f"data_directory = '{primary.data_dir}'\n"
        "recovery_target_name = 'left-from-an-earlier-pitr'\n"
        "ssl = on\n"
        "max_logical_replication_workers = 8\n"
    )
    with open(data_dir / "postgresql.conf", "a") as f:
        f.write("\ninclude 'production.conf'\n")


def test_drill_of_a_standby_copy_never_connects_to_the_primary(tmp_path: Path) -> None:
    marker = Path(tempfile.mkdtemp(prefix="recoverctl-seal-marker-"))
    chown_to_pg(marker)
    parent = Path(tempfile.mkdtemp(prefix="recoverctl-seal-drill-"))
    os.chmod(parent, 0o755)
    src = make_archived_source(tmp_path / "standby-copy")
    primary = src.cluster
    try:
        primary.psql("alter system set log_connections = on")
        primary.psql("select pg_reload_conf()")
        primary.psql("select pg_create_physical_replication_slot('standby1', true)")
        # A standby's data dir: standby.signal, primary_conninfo and primary_slot_name (-R -S).
        backup = BaseBackup(src.backup_dir, time.time(), {"t": 100})
        subprocess.run(
            [str(BIN_DIR / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(primary.port), "-U", "postgres",
             "-D", str(backup.path), "-X", "stream", "--checkpoint=fast", "--no-sync",
             "-R", "-S", "standby1"],
            check=True, capture_output=True,
        )  # fmt: skip
        assert (backup.path / "standby.signal").exists()
        assert "primary_conninfo" in (backup.path / "postgresql.auto.conf").read_text()
        _hostile_config(backup.path, primary, marker / "ran")
        primary.psql("insert into t (created_at) select now() from generate_series(1, 50)")
        src.archive_now()
        slot_before = _slots(primary)["standby1"]
        connections_before = _log_lines(primary, "connection received")
        cfg = parse_config(src.config())
        catalog = Catalog(f"sqlite:///{tmp_path / 'catalog.db'}")
        pb = parse_playbook(
            {
                "drill": {
                    "name": "standby-copy",
                    "source": "main",
                    "recovery_point": "latest",
                    "amcheck": False,
                    "checks": [
                        {"name": "sealed settings", "sql": SEALED_SETTINGS, "expect": SEALED_VALUES},
                        {"sql": "select count(*) from t", "expect": 150},
                    ],
                    "targets": {"rto": "2h", "rpo": "1h"},
                    "where": {"temp_dir": str(parent), "timeout": "2m"},
                }
            }
        )
        result = engine.execute(cfg, catalog, pb, BaseBackupRestorer(backup, src.archive))
        assert _log_lines(primary, "connection received") == connections_before
        assert _slots(primary)["standby1"] == slot_before
        assert result["verdict"] == "pass", (result["reason"], result["checks"])
        assert sorted(p.name for p in marker.iterdir()) == []  # no production command ran
        assert not (primary.base / "external.pid").exists()
        assert list(parent.iterdir()) == []
    finally:
        primary.destroy()
        shutil.rmtree(src.archive, ignore_errors=True)
        shutil.rmtree(marker, ignore_errors=True)
        shutil.rmtree(parent, ignore_errors=True)


@pytest.fixture
def scratch() -> Iterator[ScratchCluster]:
    parent = Path(tempfile.mkdtemp(prefix="recoverctl-seal-cfg-"))
    os.chmod(parent, 0o755)
    cluster = ScratchCluster.create(BIN_DIR, os_user=OS_USER, parent=parent)
    try:
        subprocess.run(
            (["runuser", "-u", OS_USER, "--"] if os.geteuid() == 0 else [])
            + [str(BIN_DIR / "initdb"), "-D", str(cluster.data_dir), "-U", "postgres", "-A", "trust"],
            check=True,
            capture_output=True,
        )
        yield cluster
    finally:
        cluster.cleanup(force=True)
        shutil.rmtree(parent, ignore_errors=True)


def _effective(cluster: ScratchCluster, name: str) -> str:
    cluster.chown()
    return effective_setting(cluster.bin_dir, cluster.data_dir, cluster.settings(), name, cluster._as_user)


def test_command_line_beats_every_config_file_and_include(scratch: ScratchCluster) -> None:
    primary = PgCluster(name="not-started")
    try:
        _hostile_config(scratch.data_dir, primary, scratch.workspace / "ran")
        write_recovery_config(
            scratch.data_dir, recovery_settings("cp /ours/%f %p", RecoveryTarget("xid", "1234"), "promote")
        )
        (scratch.data_dir / "standby.signal").write_text("")
        with open(scratch.data_dir / "postgresql.auto.conf", "a") as f:
            f.write("primary_conninfo = 'host=127.0.0.1 port=1'\n")  # after ours: still loses
        scratch.seal()
        assert not (scratch.data_dir / "standby.signal").exists()
        sealed: dict[str, Any] = {
            "primary_conninfo": "",
            "primary_slot_name": "",
            "archive_mode": "off",
            "archive_command": "",
            "recovery_end_command": "",
            "external_pid_file": "",
            "data_directory": str(scratch.data_dir),
            "max_logical_replication_workers": "0",
            "ssl": "off",
            "listen_addresses": "127.0.0.1",
            "restore_command": "cp /ours/%f %p",
            "recovery_target_xid": "1234",
            "recovery_target_name": "",
        }
        assert {k: _effective(scratch, k) for k in sealed} == sealed
    finally:
        primary.destroy()


def test_a_restore_command_other_than_ours_refuses_the_start(scratch: ScratchCluster) -> None:
    write_recovery_config(scratch.data_dir, recovery_settings("cp /ours/%f %p", RecoveryTarget(), "promote"))
    (scratch.data_dir / "production.conf").write_text("restore_command = 'cp /production-archive/%f %p'\n")
    with open(scratch.data_dir / "postgresql.auto.conf", "a") as f:
        f.write("include 'production.conf'\n")
    scratch.chown()
    with pytest.raises(DrillError) as e:
        scratch.start()
    assert "replaces recoverctl's restore_command" in e.value.message
    assert "production-archive" not in e.value.message  # production's command may hold credentials
    assert scratch.postmaster_pid() is None


def test_a_data_dir_without_recoverctls_recovery_config_refuses_the_start(scratch: ScratchCluster) -> None:
    (scratch.data_dir / "recovery.signal").write_text("")
    with open(scratch.data_dir / "postgresql.conf", "a") as f:
        f.write("restore_command = 'cp /production-archive/%f %p'\n")
    with pytest.raises(DrillError, match="no recovery configuration from recoverctl"):
        scratch.start()
    assert scratch.postmaster_pid() is None


def test_a_stop_before_postmaster_pid_exists_leaves_no_server(scratch: ScratchCluster) -> None:
    # pg_ctl -W returns before the postmaster writes postmaster.pid; a Ctrl-C in that window used
    # to find no pid file and leave the launched server running. Stand in for that postmaster: a
    # process in its own session with the data dir on its command line, and no postmaster.pid.
    launched = subprocess.Popen(
        ["bash", "-c", f'exec -a "postgres -D {scratch.data_dir}" sleep 600'], start_new_session=True
    )
    try:
        wait_until(
            # The data dir is in bash's own argv too: wait for the exec'd name, not just the path.
            lambda: Path(f"/proc/{launched.pid}/cmdline").read_bytes().startswith(b"postgres -D "),
            timeout=10,
            what="the stand-in postmaster to exec",
        )
        scratch.state.started_at = time.monotonic()
        scratch.state.launching = True
        assert not (scratch.data_dir / "postmaster.pid").exists()
        scratch.stop()
        assert launched.wait(timeout=10) == -signal.SIGKILL
    finally:
        if launched.poll() is None:
            launched.kill()
            launched.wait()


def test_a_launch_that_never_returned_still_stops_what_pg_ctl_forked(scratch: ScratchCluster) -> None:
    # A Ctrl-C (or a pg_ctl failure) can end start() after pg_ctl forked the postmaster but before
    # start() returned; the stop used to skip its scan then and leave that server running.
    fake_bin = scratch.workspace.parent / "bin"
    fake_bin.mkdir()
    for real in BIN_DIR.iterdir():
        (fake_bin / real.name).symlink_to(real)
    (fake_bin / "pg_ctl").unlink()
    (fake_bin / "pg_ctl").write_text(
        "#!/bin/bash\n"
        f"setsid bash -c 'exec -a \"postgres -D {scratch.data_dir}\" sleep 600' "
        "</dev/null >/dev/null 2>&1 &\n"
        'until grep -q "^postgres -D" "/proc/$!/cmdline" 2>/dev/null; do :; done\n'
        "exit 1\n"
    )
    (fake_bin / "pg_ctl").chmod(0o755)
    scratch.bin_dir = fake_bin
    write_recovery_config(scratch.data_dir, recovery_settings("cp /ours/%f %p", RecoveryTarget(), "promote"))
    with pytest.raises(DrillError, match="cannot start the scratch server"):
        scratch.start()
    assert [c for c in drill_leftovers(str(scratch.data_dir)) if "postgres -D" in c]
    scratch.stop()
    assert drill_leftovers(str(scratch.data_dir)) == []
