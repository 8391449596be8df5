"""Streaming mode against real clusters: the repository stays seconds behind the primary, and
survives primary restarts and receiver kills without a gap."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from recoverctl.sources.postgres.walnames import SEGMENT_RE, segment_number
from tests.fixtures.net import free_port, wait_until
from tests.fixtures.pgbackup import PgCli
from tests.fixtures.postgres import PgCluster, _as_pg_user, make_standby
from tests.integration.postgres.test_pg_backup_restore import psql, stop

# The data-loss bound streaming promises with the default 2 s flush interval.
LOSS_BOUND_S = 5.0


class Writer(threading.Thread):
    """Commits a timestamped row every 100 ms, reconnecting through restarts; remembers the
    server timestamp of its last committed row."""

    def __init__(self, conninfo: str):
        super().__init__(daemon=True)
        self.conninfo = conninfo
        self.done = threading.Event()
        self.last: datetime | None = None
        self.commits = 0

    def run(self) -> None:
        conn: psycopg.Connection | None = None
        while not self.done.is_set():
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(self.conninfo, autocommit=True, connect_timeout=2)
                row = conn.execute("insert into ticks(at) values (clock_timestamp()) returning at").fetchone()
                assert row is not None
                self.last, self.commits = row[0], self.commits + 1
            except psycopg.Error:
                conn = None
            self.done.wait(0.1)


class Receiver:
    """`recoverctl wal stream` as the postgres OS user."""

    def __init__(self, cli: PgCli):
        self.cli = cli
        self.proc = subprocess.Popen(
            cli.argv("-v", "wal", "stream", "--source", "main"),
            env=cli.env,
            cwd=cli.home,
            stdout=subprocess.DEVNULL,
            stderr=open(cli.home / "receiver.log", "ab"),  # noqa: SIM115 - the child holds it
        )

    def pid(self) -> int:
        """The recoverctl process itself (under runuser when the tests run as root)."""
        if os.geteuid() != 0:
            return self.proc.pid
        children: list[str] = []
        wait_until(lambda: bool(children.extend(_children(self.proc.pid)) or children), 10, what="receiver")
        return int(children[0])

    def kill9(self) -> None:
        os.kill(self.pid(), signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.pid(), signal.SIGTERM)
            self.proc.wait(30)


def _children(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []


def heartbeat(cli: PgCli) -> dict[str, Any]:
    db = sqlite3.connect(cli.home / "catalog.db")
    try:
        row = db.execute("select details from heartbeats where name = 'wal-stream:main'").fetchone()
    finally:
        db.close()
    return json.loads(row[0]) if row else {}


def stored_segments(cli: PgCli) -> list[str]:
    folder = cli.repository / "wal" / "main" / "00000001"
    return sorted(p.name for p in folder.iterdir() if SEGMENT_RE.match(p.name)) if folder.is_dir() else []


def assert_contiguous(names: list[str]) -> None:
    numbers = [segment_number(n) for n in names]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers))), f"gap in {names}"


def restored_loss(cli: PgCli, writer: Writer) -> float:
    """Restore --to-latest from the repository alone; return the writer's last committed
    timestamp minus the newest restored one (the data lost)."""
    target, port = cli.home / "restore", free_port()
    cli("restore", "postgres", "--target-dir", str(target), "--to-latest", "--start", "--port", str(port),
        check=0, timeout=1800)  # fmt: skip
    try:
        newest = float(psql(port, "select extract(epoch from max(at)) from ticks")[0])
    finally:
        stop(target)
    assert writer.last is not None
    return writer.last.timestamp() - newest


@pytest.fixture
def streaming() -> Iterator[tuple[PgCli, PgCluster]]:
    home = Path(tempfile.mkdtemp(prefix="recoverctl-stream-"))
    os.chmod(home, 0o755)
    cli = PgCli(home)
    pg = PgCluster()
    # archive_command stays on beside the receiver: both write the same segments
    pg.initdb(f"archive_mode = on\narchive_command = '{cli.archive_command('main')}'\n")
    cli.write_config({"main": pg.source_config(wal={"mode": "stream", "flush_interval": "2s"})})
    cli("init", check=0)
    pg.start()
    pg.psql("create table ticks(id bigserial primary key, at timestamptz not null)")
    yield cli, pg
    pg.destroy()
    stop(home / "restore")
    shutil.rmtree(home, ignore_errors=True)


def test_stream_survives_restart_and_kill_and_restore_loses_seconds(
    streaming: tuple[PgCli, PgCluster],
) -> None:
    cli, pg = streaming
    receiver = Receiver(cli)
    writer = Writer(pg.conninfo)
    try:
        wait_until(lambda: heartbeat(cli).get("uploaded_lsn") is not None, 60, what="first upload")
        cli("--json", "backup", "postgres", "--type", "full", check=0)
        writer.start()
        pg.psql("select pg_switch_wal()")

        # a primary restart: the receiver reconnects
        pg.stop("fast")
        pg.start()
        wait_until(lambda: heartbeat(cli).get("restarts", 0) >= 1 and heartbeat(cli).get("receiver_pid"), 90,
                   what="receiver reconnected")  # fmt: skip
        pg.psql("select pg_switch_wal()")
        # pg_receivewal killed: the supervisor starts it again
        os.kill(heartbeat(cli)["receiver_pid"], signal.SIGKILL)
        wait_until(lambda: heartbeat(cli).get("restarts", 0) >= 2 and heartbeat(cli).get("receiver_pid"), 90,
                   what="pg_receivewal restarted")  # fmt: skip
        pg.psql("select pg_switch_wal()")
        # the receiver itself killed: a new one resumes from its spool and slot
        receiver.kill9()
        pg.psql("select pg_switch_wal()")
        receiver = Receiver(cli)
        before = writer.commits
        wait_until(lambda: writer.commits > before + 30, 60, what="writes after the receiver restart")
        pg.psql("select pg_switch_wal()")
        wait_until(lambda: (heartbeat(cli).get("lag_bytes") or 1) == 0 or writer.commits > before + 100, 60,
                   what="receiver caught up")  # fmt: skip

        def within_bound() -> bool:
            stream = cli("--json", "postgres", "status", check=0).json()["sources"][0]["stream"]
            return (
                bool(stream["alive"])
                and stream["lag_seconds"] is not None
                and stream["lag_seconds"] < LOSS_BOUND_S
            )

        # A lag is a moment's reading: on a loaded machine the receiver may be seconds behind when
        # the writer's 100 commits are in, and must be back within the bound soon after.
        wait_until(within_bound, 60, what=f"postgres status to show the stream alive within {LOSS_BOUND_S}s")
        item = cli("--json", "status").json()["sources"][0]["items"]["wal_stream"]
        assert item["status"] == "green" and item["alive"] and item["receiver_pid"], item

        # the primary is lost, and the receiver with it (worst case: the same host)
        time.sleep(3)  # writes that only the partial segment holds
        pg.stop("immediate")
        receiver.kill9()
        writer.done.set()
        writer.join(5)
        shutil.rmtree(pg.data_dir)
    finally:
        writer.done.set()
        receiver.terminate()

    segments = stored_segments(cli)
    assert_contiguous(segments)
    log = (cli.home / "receiver.log").read_text()
    assert "different content" not in log and "upload failed" not in log, log
    # the last writes are only in the receiver's partial copy of the next segment
    partials = sorted((cli.repository / "wal" / "main" / "00000001").glob("partial-*"))
    assert [p.name for p in partials] == [f"partial-{segments[-1][:16]}{int(segments[-1][16:], 16) + 1:08X}"]
    loss = restored_loss(cli, writer)
    print(f"loss window {loss:.3f}s over {writer.commits} commits, segments {segments[0]}..{segments[-1]}")
    assert 0 <= loss <= LOSS_BOUND_S
    # a drill replays through the same WAL, partial segment included
    assert writer.last is not None
    recent = f"select count(*) from ticks where at >= to_timestamp({writer.last.timestamp() - LOSS_BOUND_S})"
    drill = cli.sql_drill("stream", recent, ">= 1")
    assert drill["verdict"] == "pass", drill


def events(cli: PgCli, kind: str) -> list[str]:
    db = sqlite3.connect(cli.home / "catalog.db")
    try:
        return [r[0] for r in db.execute("select summary from events where kind = ?", (kind,))]
    finally:
        db.close()


def test_slot_nearing_max_slot_wal_keep_size_raises_an_alert(streaming: tuple[PgCli, PgCluster]) -> None:
    cli, pg = streaming
    pg.psql("alter system set max_slot_wal_keep_size = '48MB'")
    pg.psql("select pg_reload_conf()")
    receiver = Receiver(cli)
    try:
        wait_until(lambda: heartbeat(cli).get("receiver_pid") is not None, 60, what="receiver streaming")
        slot = heartbeat(cli)["slot"]
        receiver.kill9()

        def retained() -> int:
            sql = "select pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn) from pg_replication_slots"
            sql += f" where slot_name = '{slot}'"
            return int(float(pg.psql(sql)))

        while retained() < 0.85 * 48 * 1024 * 1024:  # the receiver is down: WAL piles up
            pg.psql("insert into ticks(at) select clock_timestamp() from generate_series(1, 20000)")
            pg.psql("select pg_switch_wal()")
        receiver = Receiver(cli)
        wait_until(lambda: bool(events(cli, "wal.slot_retention")), 60, what="slot retention alert")
        assert f"replication slot '{slot}'" in events(cli, "wal.slot_retention")[0]
        # streaming again, it catches up and releases the WAL
        wait_until(lambda: retained() < 16 * 1024 * 1024, 60, what="slot released")
        assert_contiguous(stored_segments(cli))
    finally:
        receiver.terminate()


def test_stream_follows_a_failover_to_a_promoted_standby(streaming: tuple[PgCli, PgCluster]) -> None:
    cli, pg = streaming
    standby = make_standby(pg)
    receiver = Receiver(cli)
    writer = Writer(pg.conninfo)
    try:
        wait_until(lambda: heartbeat(cli).get("receiver_pid") is not None, 60, what="receiver streaming")
        cli("--json", "backup", "postgres", "--type", "full", check=0)
        writer.start()
        wait_until(lambda: writer.commits > 20, 30, what="writes on the primary")
        pg.psql("select pg_switch_wal()")
        # failover to a standby that missed the primary's last WAL (asynchronous replication):
        # the receiver has more than the new primary, and must resume at the fork
        standby.stop("fast")
        pg.psql("insert into ticks(at) select clock_timestamp() from generate_series(1, 1000)")
        seg = pg.psql("select pg_walfile_name(pg_switch_wal())")
        wait_until(lambda: seg in stored_segments(cli), 60, what="the receiver storing the lost segment")
        writer.done.set()
        writer.join(5)
        pg.stop("immediate")
        writer = Writer(pg.conninfo)  # the writes from here on are on the new primary
        writer.start()
        standby.append_conf(f"port = {pg.port}\n")
        standby.port = pg.port
        standby.start()
        promote = [str(pg.bin_dir / "pg_ctl"), "-D", str(standby.data_dir), "-w", "promote"]
        subprocess.run(_as_pg_user(promote), check=True, capture_output=True)
        before = writer.commits
        wait_until(lambda: writer.commits > before + 30, 60, what="writes on the promoted standby")
        tl2 = cli.repository / "wal" / "main" / "00000002"
        wait_until(lambda: tl2.is_dir() and any(p.name.startswith("partial-") for p in tl2.iterdir()), 60,
                   what="the new timeline streamed")  # fmt: skip
        assert (cli.repository / "wal" / "main" / "00000001" / "00000002.history").exists() or (
            tl2 / "00000002.history"
        ).exists()
        assert any(p.name.endswith(".diverged") for p in Path(heartbeat(cli)["spool"]).iterdir())
        time.sleep(3)  # writes that only the partial segment of the new timeline holds
        standby.stop("immediate")
        receiver.kill9()
        writer.done.set()
        writer.join(5)
    except BaseException:
        print("receiver log:", (cli.home / "receiver.log").read_text()[-8000:], "heartbeat:", heartbeat(cli))
        raise
    finally:
        writer.done.set()
        receiver.terminate()
        standby.destroy()

    loss = restored_loss(cli, writer)
    print(f"loss window after failover {loss:.3f}s")
    assert 0 <= loss <= LOSS_BOUND_S


def _outages(cli: PgCli) -> list[tuple[float, float | None, int, str | None]]:
    db = sqlite3.connect(cli.home / "catalog.db")
    try:
        return db.execute(
            "select started_at, ended_at, failures, error from wal_outages order by id"
        ).fetchall()
    finally:
        db.close()


def test_failed_uploads_open_a_wal_gap_the_next_upload_ends_it(streaming: tuple[PgCli, PgCluster]) -> None:
    cli, pg = streaming
    receiver = Receiver(cli)
    folder = cli.repository / "wal" / "main" / "00000001"
    try:
        wait_until(lambda: heartbeat(cli).get("uploaded_lsn") is not None and folder.is_dir(), 60,
                   what="first upload")  # fmt: skip
        item = cli("--json", "status", check=None).json()["sources"][0]["items"]["wal_stream"]
        assert item["alive"] is True and item["lag_bytes"] is not None and "WAL streaming" in item["reason"]
        # The repository refuses writes. No segment completes (no switch), so archive_command
        # is not called: only the receiver's partial-segment uploads fail.
        os.chmod(folder, 0o555)
        try:
            pg.psql("insert into ticks(at) values (clock_timestamp())")
            gaps = wait_until(
                lambda: [g for g in _outages(cli) if g[2] >= 2], 60, what="failed uploads recorded"
            )
            assert gaps[0][1] is None and "Permission denied" in (gaps[0][3] or ""), gaps
            assert "upload failed" in (cli.home / "receiver.log").read_text()
        finally:
            os.chmod(folder, 0o755)
        pg.psql("insert into ticks(at) values (clock_timestamp())")
        ((started, ended, failures, _),) = wait_until(
            lambda: [g for g in _outages(cli) if g[1] is not None], 60, what="the gap to end"
        )
        assert ended > started and failures >= 2
        rpo = cli("--json", "status", check=None).json()["sources"][0]["items"]["rpo"]
        assert "wal_gap" not in rpo and "failing" not in rpo["reason"]
    finally:
        receiver.terminate()
