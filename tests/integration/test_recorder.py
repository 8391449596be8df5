"""ForkedRecorder: catalog writes made from a child process, failures reported, kill -9 survived."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import sqlalchemy as sa

from recoverctl.catalog import Catalog
from recoverctl.catalog import tables as t
from recoverctl.errors import CatalogError
from recoverctl.recorder import ForkedRecorder
from recoverctl.repo import Snapshot
from tests.conftest import Cli
from tests.fixtures.net import wait_until


def _rows(url: str) -> tuple[list[sa.Row], list[sa.Row]]:
    catalog = Catalog(url)
    try:
        with catalog.begin() as conn:
            runs = list(conn.execute(sa.select(t.runs).order_by(t.runs.c.id)))
            snaps = list(conn.execute(sa.select(t.snapshots)))
    finally:
        catalog.close()
    return runs, snaps


def test_writes_arrive_in_order_and_close_waits_for_them(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    snap = Snapshot(time=1.0, kind="files", tree="ab" * 32, paths=["/srv"], id="cd" * 32)
    with ForkedRecorder(lambda: Catalog(url)) as rec:
        first = rec.start_run("backup", "files", "file:///r")
        second = rec.start_run("restore", None, "file:///r")
        rec.record_snapshot("file:///r", snap)
        rec.finish_run(first, "succeeded", bytes_read=5, snapshot_id=snap.id)
        rec.finish_run(second, "failed", error="boom")
    runs, snaps = _rows(url)
    assert [(r.kind, r.status, r.bytes_read, r.error) for r in runs] == [
        ("backup", "succeeded", 5, None),
        ("restore", "failed", None, "boom"),
    ]
    assert all(r.finished_at is not None for r in runs)
    assert [(s.id, s.repository, s.paths) for s in snaps] == [(snap.id, "file:///r", ["/srv"])]


def test_unreachable_catalog_is_reported_on_close(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    rec = ForkedRecorder(lambda: Catalog(f"sqlite:///{blocker}/c.db"))
    rec.finish_run(rec.start_run("backup"), "succeeded")
    with pytest.raises(CatalogError) as err:
        rec.close()
    assert "could not record the run in the catalog" in err.value.message
    assert "not-a-dir" in err.value.message
    assert "catalog sync" in (err.value.hint or "")


def test_command_error_wins_over_catalog_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    with (
        pytest.raises(ValueError, match="the command's own"),
        ForkedRecorder(lambda: Catalog(f"sqlite:///{blocker}/c.db")),
    ):
        raise ValueError("the command's own failure")


def test_killed_parent_leaves_its_run_failed_not_running(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    Catalog(url).close()  # migrated up front, so the child's open is quick
    script = textwrap.dedent(
        f"""
        import sys, time
        from recoverctl.catalog import Catalog
        from recoverctl.recorder import ForkedRecorder
        rec = ForkedRecorder(lambda: Catalog({url!r}))
        rec.start_run("backup", "files", "file:///r")
        print("started", flush=True)
        time.sleep(120)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2]
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "started"
        runs = wait_until(lambda: _rows(url)[0], timeout=30, what="the run row")
        assert [r.status for r in runs] == ["running"]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        (run,) = wait_until(
            lambda: [r for r in _rows(url)[0] if r.status != "running"],
            timeout=30,
            what="the run to leave 'running'",
        )
        assert run.status == "failed"
        assert f"recoverctl process {proc.pid} ended before the run did" in run.error
    finally:
        proc.kill()
        proc.wait()


def test_backup_saved_but_not_recorded_exits_with_catalog_error(cli: Cli, tmp_path: Path) -> None:
    cli.env.update(RECOVERCTL_REPOSITORY=str(tmp_path / "repo"), RECOVERCTL_PASSWORD="pw")
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_text("a")
    cli("init", check=0)
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    r = cli("backup", "files", str(src), env={"RECOVERCTL_CATALOG": f"sqlite:///{blocker}/c.db"})
    assert r.code == 1, r.stderr
    assert "could not record the run in the catalog" in r.stderr and "catalog sync" in r.stderr
    # The repository is the source of truth: the snapshot is there and a sync brings its row back.
    snaps = cli("snapshots", "--json", check=0).json()
    assert len(snaps) == 1 and snaps[0]["paths"] == [str(src)]
    cli("catalog", "sync", check=0)
    assert [s.id for s in _rows(cli.env["RECOVERCTL_CATALOG"])[1]] == [snaps[0]["id"]]


def test_backup_and_restore_processes_never_import_sqlalchemy(cli: Cli, tmp_path: Path) -> None:
    # The point of the forked recorder: the command's own process starts without the catalog.
    cli.env.update(RECOVERCTL_REPOSITORY=str(tmp_path / "repo"), RECOVERCTL_PASSWORD="pw")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a").write_text("a")
    cli("init", check=0)
    probe = (
        "import atexit, os, sys; pid = os.getpid(); "
        "atexit.register(lambda: os.getpid() == pid and print('SQLALCHEMY', 'sqlalchemy' in sys.modules)); "
        "from recoverctl.cli.main import main; main(sys.argv[1:])"
    )
    for args in (
        ["backup", "files", str(tmp_path / "src")],
        ["restore", "latest", "--target", str(tmp_path / "out")],
    ):
        r = subprocess.run(
            [sys.executable, "-c", probe, *args], env=cli.env, cwd=cli.home, capture_output=True, text=True
        )
        assert r.returncode == 0, r.stderr
        assert "SQLALCHEMY False" in r.stdout
    assert (tmp_path / "out" / str(tmp_path / "src").lstrip("/") / "a").read_text() == "a"
    runs, _ = _rows(cli.env["RECOVERCTL_CATALOG"])
    assert [(r.kind, r.status) for r in runs] == [("backup", "succeeded"), ("restore", "succeeded")]
