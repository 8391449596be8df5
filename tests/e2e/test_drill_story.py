"""The drill story end to end: real cluster, real backups and WAL archive in a recoverctl
repository, `drill run` restoring into scratch clusters, faults, and `status` on a breached RPO.

One archiving cluster and one full backup serve the module (initdb and the backup are the slow
parts); the damaged-pack and status tests run last because they change the shared state.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml

from recoverctl.catalog import Catalog
from recoverctl.catalog import tables as t
from tests.fixtures.drill_sources import drill_leftovers
from tests.fixtures.net import wait_until
from tests.fixtures.pgbackup import PgCli
from tests.fixtures.postgres import PgCluster, chown_to_pg

pytestmark = pytest.mark.e2e


class Story:
    def __init__(self, cli: PgCli, pg: PgCluster, scratch: Path):
        self.cli = cli
        self.pg = pg
        # Parent of every drill's temp dir: asserted empty after each drill.
        self.scratch = scratch
        self.n = 0

    def playbook(self, **drill: Any) -> Path:
        self.n += 1
        body: dict[str, Any] = {
            "name": f"main-{self.n}",
            "source": "main",
            "recovery_point": "latest",
            "checks": [{"sql": "select count(*) from marks", "expect": ">= 1"}],
            "targets": {"rto": "2h", "rpo": "1h"},
            "where": {"temp_dir": str(self.scratch)},
        }
        body.update(drill)
        path = self.cli.home / f"drill{self.n}.yaml"
        path.write_text(yaml.safe_dump({"drill": body}))
        chown_to_pg(path)
        return path

    def archive_current(self) -> None:
        seg = self.pg.psql("select pg_walfile_name(pg_current_wal_lsn())")
        self.pg.psql("select pg_switch_wal()")
        wait_until(
            lambda: self.pg.psql("select coalesce(last_archived_wal, '') from pg_stat_archiver") >= seg,
            timeout=60,
            what=f"segment {seg} archived",
        )

    def assert_clean(self) -> None:
        left = sorted(str(p.relative_to(self.scratch)) for p in self.scratch.rglob("*"))
        assert left == [], (left[:40], drill_leftovers(str(self.scratch)))
        assert drill_leftovers(str(self.scratch)) == []


@pytest.fixture(scope="module")
def story() -> Iterator[Story]:
    home = Path(tempfile.mkdtemp(prefix="recoverctl-drillstory-"))
    os.chmod(home, 0o755)
    cli = PgCli(home)
    scratch = home / "scratch"
    scratch.mkdir()
    pg = PgCluster()
    try:
        pg.initdb(f"archive_mode = on\narchive_command = '{cli.archive_command('main')}'\n")
        cli.write_config({"main": pg.source_config(count_tables=["public.marks"])})
        cli("init", check=0)
        pg.start()
        pg.psql(
            "create table marks(id serial primary key, note text, at timestamptz default clock_timestamp())"
        )
        pg.psql("insert into marks(note) select 'before backup' from generate_series(1, 100)")
        cli("--json", "backup", "postgres", "--type", "full", check=0)
        yield Story(cli, pg, scratch)
    finally:
        pg.destroy()
        shutil.rmtree(home, ignore_errors=True)


def test_drill_passes_with_measured_rto_rpo_and_report(story: Story) -> None:
    story.pg.psql("insert into marks(note) select 'after backup' from generate_series(1, 20)")
    last_commit = float(story.pg.psql("select extract(epoch from max(at)) from marks"))
    story.archive_current()
    pb = story.playbook(
        checks=[
            {"sql": "select count(*) from marks", "expect": "== 120"},
            {"freshness": {"table": "marks", "column": "at", "tolerance": "1m"}},
            {"row_counts": {"tables": ["public.marks"], "tolerance": "25%"}},
        ]
    )
    r = story.cli("drill", "run", str(pb), "--json", check=0)
    d = r.json()
    assert d["verdict"] == "pass", d["reason"]
    assert set(d["phases"]) == {"select", "fetch", "recovery", "startup", "checks"}
    assert d["rto_s"] >= sum(d["phases"].values()) - 0.01
    assert (d["rto_target_s"], d["rpo_target_s"]) == (7200, 3600)
    # Recovered to the last commit before the drill: the post-backup writes came from WAL.
    assert d["recovered_commit_ts"] == pytest.approx(last_commit, abs=1)
    assert d["rpo_s"] == pytest.approx(d["started_at"] - d["recovered_commit_ts"], abs=0.01)
    assert [c["kind"] for c in d["checks"]] == ["amcheck", "sql", "freshness", "row_counts"]
    assert "public.marks: 120 rows, 100 at backup" in d["checks"][-1]["output"]
    assert d["bytes"] > 0
    story.assert_clean()
    html = story.cli("drill", "report", str(d["id"]), "--format", "html", check=0).stdout
    assert 'class="rc-trend"' in html and "PASS" in html
    hist = story.cli("drill", "history", "--json", check=0).json()
    assert hist[-1]["id"] == d["id"] and hist[-1]["rto_margin_s"] > 0


def test_failing_assertion_and_tight_rpo_fail_with_exit_13(story: Story) -> None:
    # `immediate` stops at the backup's consistent point: little WAL to replay, and RPO is then
    # the current archive exposure, which no real archive keeps under a millisecond.
    pb = story.playbook(
        amcheck=False,
        recovery_point="immediate",
        checks=[{"sql": "select count(*) from marks where note = 'never'", "expect": ">= 1"}],
        targets={"rto": "2h", "rpo": "1ms"},
    )
    r = story.cli("drill", "run", str(pb), "--json", check=13)
    d = r.json()
    assert d["verdict"] == "fail"
    assert d["checks"][0]["expected"] == ">= 1" and d["checks"][0]["actual"] == 0
    assert "got 0, expected >= 1" in d["reason"]
    assert f"RPO {d['rpo_s']:.1f}s" in d["reason"] and "exceeds the target 0s" in d["reason"]
    assert d["rpo_basis"] == "archive exposure (last archived WAL)"
    assert "drill(s) failed" in r.error_json()["message"]
    story.assert_clean()


def test_port_in_use_and_no_space_fail_clearly_and_clean_up(story: Story) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        pb = story.playbook(where={"temp_dir": str(story.scratch), "port": port})
        d = story.cli("drill", "run", str(pb), "--json", check=13).json()
    assert d["failed_phase"] == "fetch" and f"drill port {port} on 127.0.0.1 is in use" in d["reason"]
    story.assert_clean()

    mnt = story.cli.home / "tiny"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0777", "tmpfs", str(mnt)], check=True)
    try:
        pb = story.playbook(where={"temp_dir": str(mnt)})
        d = story.cli("drill", "run", str(pb), "--json", check=13).json()
        assert d["failed_phase"] == "fetch"
        assert "not enough free space for the scratch restore" in d["reason"]
        assert list(mnt.iterdir()) == []
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _children(pid: int) -> list[int]:
    out = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                stat = (Path("/proc") / p / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(p))
    return out


def test_sigint_mid_recovery_leaves_nothing_behind(story: Story) -> None:
    # The signal lands as soon as the scratch server runs: during recovery (restore_command
    # fetching WAL from the repository); the integration test pins the phase with a slow fetch.
    pb = story.playbook(amcheck=False)
    proc = subprocess.Popen(
        story.cli.argv("drill", "run", str(pb), "--json"),
        env=story.cli.env,
        cwd=story.cli.home,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        # Mid-recovery: the scratch server (postgres -D <scratch>/...) is up and replaying WAL.
        wait_until(
            lambda: [c for c in drill_leftovers(str(story.scratch)) if "postgres" in c],
            timeout=120,
            interval=0.02,
            what="the scratch server to start recovery",
        )
        # The snapshot is pinned while the drill runs, so forget/prune cannot remove it.
        catalog = Catalog(story.cli.env["RECOVERCTL_CATALOG"], migrate=False)
        with catalog.begin() as conn:
            pins = conn.execute(sa.select(t.pins.c.reason)).scalars().all()
        catalog.close()
        assert len(pins) == 1 and pins[0].startswith("drill main-")
        target = _children(proc.pid) if os.geteuid() == 0 else [proc.pid]
        for pid in target or [proc.pid]:
            os.kill(pid, signal.SIGINT)
        _out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err.decode()
    assert "cancelled by SIGINT" in err.decode()
    story.assert_clean()
    hist = story.cli("drill", "history", "--json", check=0).json()
    assert hist[-1]["verdict"] == "cancelled"
    with catalog.begin() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(t.pins)).scalar_one() == 0
    catalog.close()


def test_damaged_pack_fails_at_fetch_naming_the_pack(story: Story) -> None:
    packs = sorted(
        (story.cli.repository / "data").rglob("*"), key=lambda p: p.stat().st_size if p.is_file() else 0
    )
    pack = packs[-1]
    original = pack.read_bytes()
    damaged = bytearray(original)
    damaged[len(damaged) // 2] ^= 0xFF
    pack.write_bytes(bytes(damaged))
    try:
        pb = story.playbook()
        d = story.cli("drill", "run", str(pb), "--json", check=13).json()
    finally:
        pack.write_bytes(original)
    assert d["failed_phase"] == "fetch"
    assert pack.name in d["reason"], d["reason"]
    story.assert_clean()


def test_status_reflects_a_breached_rpo_and_exits_13(story: Story) -> None:
    cfg = yaml.safe_load(story.cli.config_path.read_text())
    cfg["targets"] = {"critical": {"rto": "2h", "rpo": "3s"}}
    story.cli.config_path.write_text(yaml.safe_dump(cfg))
    # Stop archiving: nothing new reaches the repository, the exposure grows past the target.
    story.pg.psql("alter system set archive_command = 'false'")
    story.pg.psql("select pg_reload_conf()")
    story.pg.psql("insert into marks(note) values ('not archived')")

    def breached() -> Any:
        r = story.cli("status", "--json")
        rpo = next(s for s in r.json()["sources"] if s["source"] == "main")["items"]["rpo"]
        return r if r.code == 13 and rpo["status"] == "red" else None

    r = wait_until(breached, timeout=120, interval=0.5, what="status to report the breached RPO")
    data = r.json()
    main = next(s for s in data["sources"] if s["source"] == "main")
    assert main["status"] == "red" and main["items"]["rpo"]["status"] == "red"
    assert (
        "RPO exposure" in main["items"]["rpo"]["reason"]
        and "exceeds the target 3.0s" in main["items"]["rpo"]["reason"]
    )
    assert main["items"]["rpo"]["basis"] == "last archived WAL segment"
    assert "targets breached" in r.error_json()["message"]
